"""`streamfit bench quality`: the prequential replay of the refit policies (no Ray).

- the JSON the command prints: its shape, the six method names, accuracies in [0, 1];
- refit counts: the never-updated model has none after its first fit, the periodic one several;
- on a stream with one strong abrupt drift, the drift method refits after the drift and not before;
- no row is ever predicted by a model that has learnt it (XGBoost methods and River's ARF);
- the policy's follow-up refits after a drift alarm, on rows after the alarm;
- the replay is deterministic (two runs, identical accuracies and refit counts);
- a CSV in file order, with and without entity and time columns;
- the doctests of the bench and of the policy.
"""

from __future__ import annotations

import doctest
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from streamfit.actors.training import policy
from streamfit.config import TrainerConfig
from streamfit.scripts import quality
from streamfit.scripts.quality import (METHODS, START_TIME, DriftingStream, bench_quality, feature_pass,
                                       method_configs, replay_trainer)

ROWS = 6000


def run_cli(*args: str) -> tuple[int, str]:
    from streamfit.scripts.cli import app

    res = CliRunner().invoke(app, ["bench", "quality", *args])
    return res.exit_code, res.stdout


@pytest.fixture(scope="module")
def synthetic() -> dict:
    code, out = run_cli("--rows", str(ROWS), "--json")
    assert code == 0, out
    return json.loads(out)


def test_json_has_the_six_methods_with_accuracy_refits_seconds(synthetic):
    assert list(synthetic["methods"]) == list(METHODS)
    assert set(METHODS) == {"static", "periodic", "incremental", "drift", "default", "river_arf"}
    for name, m in synthetic["methods"].items():
        assert set(m) == {"accuracy", "refits", "seconds"}, name
        assert isinstance(m["accuracy"], float) and 0.0 <= m["accuracy"] <= 1.0, (name, m)
        assert isinstance(m["refits"], int) and m["refits"] >= 0, (name, m)
        assert isinstance(m["seconds"], float) and m["seconds"] >= 0.0, (name, m)
    assert synthetic["methods"]["river_arf"]["seconds"] > 0.0
    assert synthetic["rows"] == ROWS
    # Rows before the first model went live are scored by no method; the rest by all.
    assert 0 < synthetic["scored_rows"] < ROWS - synthetic["warmup_rows"] + 200


def test_static_never_refits_after_its_first_fit_while_periodic_does(synthetic):
    m = synthetic["methods"]
    assert m["static"]["refits"] == 0
    assert m["periodic"]["refits"] >= 3
    assert m["default"]["refits"] >= 3
    assert m["periodic"]["accuracy"] != m["static"]["accuracy"]  # its new versions did predict


def test_drift_method_refits_after_an_abrupt_drift_and_not_before():
    stream = DriftingStream(rows=ROWS, seed=7, changes=((0.5, 0.5),))
    replay = feature_pass(stream.batches(200), stream.features())
    drift_time = START_TIME + (ROWS // 2) / stream.events_per_second
    drift, live = replay_trainer(replay, method_configs(TrainerConfig())["drift"], warmup=1000)
    static, _ = replay_trainer(replay, method_configs(TrainerConfig())["static"], warmup=1000)
    assert live < drift_time - 100  # ~2,000 rows scored before the drift: time for false alarms
    attempts = drift.history
    assert attempts, "the drift was not detected"
    assert attempts[0]["reason"] == "drift"
    assert all(a["event_time"] >= drift_time for a in attempts), [(a["reason"], a["event_time"]) for a in attempts]
    assert drift.refits >= 1
    # The refits paid off: on the new concept the drift method beats the never-updated model.
    t = replay.rows["event_time"].to_numpy()
    late = t > drift_time + 1000 / stream.events_per_second
    assert drift.correct[late].mean() > static.correct[late].mean() + 0.1


class Memo:
    """A 'model' right exactly on the rows it was trained on: it remembers their labels (by the row-id
    feature) and answers every other row wrong (labels here are row id mod 2)."""

    def __init__(self, ids=(), labels=()) -> None:
        self.seen = dict(zip(np.asarray(ids, float).tolist(), np.asarray(labels, float).tolist()))

    def inplace_predict(self, x):
        return np.array([self.seen.get(float(i), 1.0 - float(i) % 2) for i in np.asarray(x, float)[:, 0]])

    def num_boosted_rounds(self) -> int:
        return 1

    # River's side
    def learn_one(self, x, y) -> None:
        self.seen[x["rid"]] = float(y)

    def predict_one(self, x):
        return int(self.seen.get(x["rid"], 1.0 - x["rid"] % 2))

    def n_drifts_detected(self) -> int:
        return 0


def test_every_row_is_predicted_before_any_model_learns_it(monkeypatch):
    # The models are right exactly on the rows they learnt: a row is predicted right only if its
    # prediction came after learning it. The replay must never allow that.
    n = 3000
    rows = pd.DataFrame({"event_id": [f"e{i}" for i in range(n)], "entity": "all", "event_time": np.arange(n, dtype=float),
                         "rid": np.arange(n, dtype=float), "label": np.arange(n) % 2.0})
    bounds = np.arange(0, n + 1, 100)
    replay = quality.Replay(rows, ["rid"], bounds, rows["event_time"].to_numpy()[bounds[1:] - 1], {})
    from streamfit.actors.training import trainer
    monkeypatch.setattr(trainer, "fit_in_process", lambda train, feats, params, rounds, base:
                        Memo(train["rid"], train["label"]))
    cfg = TrainerConfig(refit_every_rows=100, min_rows_between=0, drift_detector=None, gate_margin=10.0,
                        holdout_fraction=0.01)
    res, live = replay_trainer(replay, cfg, warmup=500)
    scored = rows["event_time"].to_numpy() > live
    assert res.refits >= 20 and scored.sum() > 2000
    assert not res.correct[scored].any()
    # The same rows again, one chunk later: now the memo has learnt them (the stub can score).
    learnt = Memo(rows["rid"][:1000], rows["label"][:1000])
    assert ((learnt.inplace_predict(rows[["rid"]].to_numpy()) >= 0.5) == (rows["label"] >= 0.5)).tolist() == \
        [True] * 1000 + [False] * (n - 1000)
    import river.forest
    monkeypatch.setattr(river.forest, "ARFClassifier", lambda seed=None: Memo())
    arf = quality.replay_arf(replay)
    assert not arf.correct.any()


def test_policy_follows_a_drift_refit_up_on_rows_after_the_alarm():
    cfg = TrainerConfig(refit_every_rows=None, drift_detector="page_hinkley", drift_window_rows=100,
                        drift_followups=3, min_rows_between=0, window_rows=1000)
    p = policy.RefitPolicy(cfg)
    p.observe(500, 1.0, np.zeros(500))
    assert p.decide(1.0) is None
    p.observe(200, 2.0, np.ones(200))  # the live version is suddenly always wrong
    assert p.decide(2.0) == policy.Decision("drift", "full", 100)
    p.refitted(2.0)
    seen = []
    for step in range(1, 41):  # 2,000 rows after the drift refit, 50 at a time
        p.observe(50, 2.0 + step, np.zeros(50))
        d = p.decide(2.0 + step)
        if d is not None:
            seen.append((50 * step, d.reason, d.window_rows))
            p.refitted(2.0 + step)
    # 1x, 2x, 4x the drift window after the alarm, each learning only from rows after it; then quiet.
    assert seen == [(100, "drift_followup", 100), (200, "drift_followup", 200), (400, "drift_followup", 400)]
    off = policy.RefitPolicy(cfg.model_copy(update={"drift_followups": 0, "refit_every_rows": 300}))
    off.observe(500, 1.0, np.zeros(500)); off.observe(200, 2.0, np.ones(200))
    assert off.decide(2.0).reason == "drift"
    off.refitted(2.0)
    off.observe(300, 3.0, np.zeros(300))
    assert off.decide(3.0) == policy.Decision("volume", "full", 300)  # the window still starts at the alarm


def test_the_replay_is_deterministic(synthetic):
    again = bench_quality(rows=ROWS, log=lambda _m: None)
    first = {k: (v["accuracy"], v["refits"]) for k, v in synthetic["methods"].items()}
    second = {k: (v["accuracy"], v["refits"]) for k, v in again["methods"].items()}
    assert first == second


def write_csv(path, n: int = 3000, seed: int = 0) -> None:
    """Entities with their own level, a label rule that flips half-way; a constant text column; time with gaps."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 20, size=n)
    level = rng.normal(size=20)[user]
    a, b = rng.normal(size=n), rng.normal(size=n)
    sign = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    y = (sign * (2 * a + level) + 0.3 * rng.normal(size=n) > 0).astype(int)
    ts = np.cumsum(rng.uniform(0.5, 1.5, size=n))
    pd.DataFrame({"ts": ts, "user": [f"c{u}" for u in user], "a": a, "b": b, "note": "x", "y": y}).to_csv(path, index=False)


def test_csv_mode_with_entity_and_time(tmp_path):
    path = tmp_path / "stream.csv"
    write_csv(path)
    code, out = run_cli("--dataset", str(path), "--target", "y", "--entity", "user", "--time", "ts",
                        "--warmup", "500", "--json")
    assert code == 0, out
    res = json.loads(out)
    assert list(res["methods"]) == list(METHODS) and res["rows"] == 3000 and res["rejected"] == 0
    m = res["methods"]
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in m.values())
    # The rule flips half-way: the never-updated model is wrong on the second half, refits are not.
    assert m["static"]["accuracy"] < 0.65
    assert m["default"]["accuracy"] > m["static"]["accuracy"] + 0.15


def test_csv_mode_without_entity_or_time_uses_one_entity_and_row_numbers(tmp_path):
    path = tmp_path / "plain.csv"
    write_csv(path, n=2000, seed=1)
    stream = quality.CsvStream(str(path), "y")
    assert stream.fields == ["ts", "a", "b"] and stream.categorical == ["user", "note"] and stream.dropped == []
    frame = stream.frame()
    assert set(frame["entity"]) == {"all"}
    assert frame["event_time"].tolist()[:4] == [0.0, 0.0, 1.0, 1.0]  # each label right after its event
    assert frame["kind"].tolist()[:4] == ["event", "label", "event", "label"]
    res = bench_quality(str(path), "y", warmup=300, methods=["static", "default"], log=lambda _m: None)
    assert set(res["methods"]) == {"static", "default"} and res["rows"] == 2000


def test_csv_mode_names_a_missing_column(tmp_path):
    path = tmp_path / "s.csv"
    write_csv(path, n=100)
    code, out = run_cli("--dataset", str(path), "--target", "label", "--json")
    assert code == 2 and "--target: no column 'label'" in out


def test_doctests_of_the_bench_and_the_policy():
    for module in (quality, policy):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
