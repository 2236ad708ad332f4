"""The refit policy and the trainer's gate, without Ray: each trigger fires on a stream built to
fire it and only then; the gate refuses a worse candidate and says why; incremental continuation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamfit.config import TrainerConfig
from streamfit.registry import Registry
from streamfit.actors.training.policy import RefitPolicy
from streamfit.actors.training.trainer import TrainerCore, better_or_close
from streamfit.metrics import auc

FEATURES = ["a", "b"]
OFF = dict(refit_every_rows=None, refit_every_s=None, accuracy_below=None, drift_detector=None, psi_above=None,
           min_rows_between=0, num_boost_round=15, gate_margin=0.05)


def rows(n: int, start: float = 0.0, flip: bool = False, shift: float = 0.0, noise: bool = False, seed: int = 0):
    """Labelled rows: label = a > 0 (or its opposite with ``flip``; random with ``noise``)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n) + shift, rng.normal(size=n)
    y = (a > shift).astype(float)
    if flip:
        y = 1.0 - y
    if noise:
        y = rng.integers(0, 2, size=n).astype(float)
    return pd.DataFrame({"event_time": start + np.arange(n, dtype=float), "a": a, "b": b, "label": y})


def feed(core: TrainerCore, frame: pd.DataFrame, chunk: int = 100) -> list[str]:
    """Feed in chunks; return the reasons of the refits that happened."""
    before = len(core.history)
    for i in range(0, len(frame), chunk):
        core.add_rows(frame.iloc[i:i + chunk])
    return [r["reason"] for r in core.history[before:]]


def trained(tmp_path, **cfg) -> TrainerCore:
    """A trainer with a first model from 1,000 clean rows (manual refit)."""
    core = TrainerCore(TrainerConfig(**{**OFF, **cfg}), FEATURES, Registry(str(tmp_path / "reg")))
    core.add_rows(rows(1000))
    assert core.request_refit("first") == 1
    return core


def test_volume_trigger_fires_every_n_rows_and_not_before(tmp_path):
    core = TrainerCore(TrainerConfig(**{**OFF, "refit_every_rows": 500}), FEATURES, Registry(str(tmp_path)))
    assert feed(core, rows(400)) == []
    assert feed(core, rows(100, 400)) == ["volume"]
    assert feed(core, rows(499, 500, seed=1)) == []
    assert feed(core, rows(1, 999, seed=2), chunk=1) == ["volume"]


def test_time_trigger_fires_on_event_time_not_row_count(tmp_path):
    core = TrainerCore(TrainerConfig(**{**OFF, "refit_every_s": 1000.0}), FEATURES, Registry(str(tmp_path)))
    dense = rows(900)  # 900 rows within 900 s of event time
    assert feed(core, dense) == []
    sparse = rows(20, 1500.0, seed=3)  # few rows, but event time passes the interval
    assert feed(core, sparse) == ["time"]


def test_performance_trigger_fires_when_live_accuracy_drops(tmp_path):
    core = trained(tmp_path, accuracy_below=0.7, accuracy_window=300)
    assert feed(core, rows(600, 1000, seed=4)) == []  # the live model is right here
    assert core.policy.live_accuracy() > 0.9
    assert feed(core, rows(600, 1600, flip=True, seed=5))[:1] == ["performance"]


@pytest.mark.parametrize("detector", ["page_hinkley", "adwin"])
def test_drift_detector_fires_after_the_concept_changes_and_not_before(tmp_path, detector):
    core = trained(tmp_path, drift_detector=detector)
    assert feed(core, rows(2000, 1000, seed=6)) == []
    fired = feed(core, rows(1000, 3000, flip=True, seed=7))
    assert fired[:1] == ["drift"]
    drift_refit = [r for r in core.history if r["reason"] == "drift"][0]
    assert drift_refit["event_time"] >= 3000  # after the change
    assert drift_refit["accepted"] and drift_refit["rows"] <= core.cfg.drift_window_rows


def test_psi_trigger_fires_on_a_shifted_feature(tmp_path):
    core = trained(tmp_path, psi_above=0.3)
    assert feed(core, rows(1000, 1000, seed=8)) == []
    assert feed(core, rows(1000, 2000, shift=3.0, seed=9)) == ["psi"]


def test_manual_refit_runs_at_once_with_its_reason(tmp_path):
    core = trained(tmp_path)
    core.add_rows(rows(300, 1000, seed=10))
    version = core.request_refit("operator asked")
    assert version == 2 and core.history[-1]["reason"] == "manual"
    assert core.registry.meta(2)["trigger"] == "manual"


def test_gate_refuses_a_worse_candidate_and_records_both_scores(tmp_path):
    core = trained(tmp_path, window_rows=2000)
    # The window's older rows have random labels; the newest (held-out) slice is the truth,
    # so a candidate trained on the noise scores worse than the live version there.
    window = pd.concat([rows(1600, 1000, noise=True, seed=11), rows(400, 2600, seed=12)], ignore_index=True)
    core.add_rows(window)
    assert core.request_refit("test") is None
    attempt = core.history[-1]
    assert not attempt["accepted"] and attempt["why"].startswith("gate: candidate logloss")
    assert attempt["candidate"]["logloss"] > attempt["live"]["logloss"]
    assert core.registry.version_numbers() == [1]
    audit = [e for e in core.registry.audit_log() if e["event"] == "gate_rejected"]
    assert len(audit) == 1 and audit[0]["candidate"]["logloss"] > audit[0]["live"]["logloss"]
    assert audit[0]["live_version"] == 1


def test_incremental_adds_trees_to_the_live_booster_until_the_cap(tmp_path):
    core = trained(tmp_path, strategy="incremental", incremental_trees=5, max_trees=25)
    trees = [core.champion.num_boosted_rounds()]
    for i in range(3):
        core.add_rows(rows(400, 1000 + 400 * i, seed=20 + i))
        assert core.request_refit() is not None
        trees.append(core.champion.num_boosted_rounds())
    assert trees == [15, 20, 25, 15]  # the third update would pass 25 trees: a full refit instead
    assert [core.registry.meta(v)["strategy"] for v in (2, 3, 4)] == ["incremental", "incremental", "full"]
    assert core.registry.meta(3)["parent"] == 2


def test_registered_versions_carry_reference_quantiles_and_a_new_trainer_resumes_the_live_one(tmp_path):
    core = trained(tmp_path)
    meta = core.registry.meta(1)
    assert set(meta["reference"]) == set(FEATURES) and len(meta["reference"]["a"]) == 11
    core.registry.set_alias("live", 1)
    again = TrainerCore(core.cfg, FEATURES, Registry(str(tmp_path / "reg")))
    assert again.champion_version == 1
    x = rows(50, seed=30)[FEATURES].to_numpy()
    np.testing.assert_array_equal(again.champion.inplace_predict(x), core.champion.inplace_predict(x))


def test_gate_direction_and_auc():
    assert better_or_close("logloss", 0.30, 0.31, 0.0) and not better_or_close("logloss", 0.32, 0.31, 0.0)
    assert better_or_close("logloss", 0.32, 0.31, 0.02)
    assert better_or_close("auc", 0.80, 0.81, 0.02) and not better_or_close("accuracy", 0.7, 0.8, 0.05)
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


def test_policy_cooldown_blocks_automatic_but_not_manual_refits():
    p = RefitPolicy(TrainerConfig(**{**OFF, "refit_every_rows": 10, "min_rows_between": 100}))
    p.observe(50, 1.0)
    assert p.decide(1.0) is None
    p.request("now")
    assert p.decide(1.0).reason == "manual"
