"""What survives a trainer restart, without Ray: a TrainerCore over a RowLog, "restarted" (a new core over
the same storage and registry), has the window, the policy state and the counters of one that never
stopped, and makes the same refits on the same rows; the log stays bounded by the window; a damaged
segment is reported and skipped; a failed write is counted and the trainer goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from streamfit.config import TrainerConfig
from streamfit.registry import Registry
from streamfit.actors.training.row_log import RowLog, RowLogError
from streamfit.actors.training.trainer import TrainerCore, window_rows_kept
from test_trainer_policy import FEATURES, OFF, rows

# Volume refits, a drift detector, follow-ups after the drift refit: every part of the policy's state is used.
CFG = dict(OFF, refit_every_rows=700, min_rows_between=300, window_rows=1500, drift_window_rows=400,
           num_boost_round=8)


def stream() -> list[pd.DataFrame]:
    """Chunks of labelled rows of uneven size; the concept flips at row 3,000."""
    frame = pd.concat([rows(3000, seed=1), rows(2500, 3000, flip=True, seed=2)], ignore_index=True)
    frame.insert(0, "event_id", [f"e{i}" for i in range(len(frame))])
    cuts = [0, *np.cumsum(np.random.default_rng(3).integers(40, 260, size=60)).tolist()]
    return [frame.iloc[a:b] for a, b in zip(cuts, cuts[1:]) if a < len(frame)]


def core(tmp: Path, name: str, cfg: dict[str, Any], **log: Any) -> TrainerCore:
    """A trainer over its own registry and row log under ``tmp/name`` (a second call is the restart)."""
    config = TrainerConfig(**cfg)
    return TrainerCore(config, FEATURES, Registry(str(tmp / name / "registry")),
                       row_log=RowLog(str(tmp / name / "state"), window_rows_kept(config), **log))


def view(c: TrainerCore) -> dict[str, Any]:
    """What decides the next refit, and the refits so far (their timings aside)."""
    snap = c.snapshot()
    history = [{k: v for k, v in r.items() if k != "fit_seconds"} for r in snap["history"]]
    return {"window": c.window(), "policy": snap["policy"], "counters": (snap["rows_seen"], snap["rows_since_psi"],
            snap["latest_time"]), "champion": c.champion_version, "history": history}


def assert_same_view(a: TrainerCore, b: TrainerCore) -> None:
    va, vb = view(a), view(b)
    pd.testing.assert_frame_equal(va.pop("window"), vb.pop("window"))
    pa_, pb_ = va.pop("policy"), vb.pop("policy")
    np.testing.assert_array_equal(pa_.pop("recent_errors"), pb_.pop("recent_errors"))
    da, db = pa_.pop("detector"), pb_.pop("detector")
    assert (da is None) == (db is None)
    if da is not None:
        assert da["kind"] == db["kind"] and da["detected"] == db["detected"]
        for k in set(da) - {"kind", "detected"}:
            np.testing.assert_array_equal(np.asarray(da[k]), np.asarray(db[k]), err_msg=k)
    assert pa_ == pb_
    assert va == vb


@pytest.mark.parametrize("detector", ["page_hinkley", "adwin"])
@pytest.mark.parametrize("cut", [7, 25, 41])
def test_a_restarted_trainer_refits_on_the_same_rows_as_one_that_never_stopped(tmp_path, detector, cut):
    cfg = {**CFG, "drift_detector": detector}
    chunks = stream()
    never, first = core(tmp_path, "never", cfg), core(tmp_path, "restarted", cfg)
    for chunk in chunks[:cut]:
        never.add_rows(chunk)
        first.add_rows(chunk)
    again = core(tmp_path, "restarted", cfg)  # the actor restarted: a new core over the same storage
    assert again.resumed == {"rows": len(never.buffer), "state": True}
    assert_same_view(again, never)
    out_never = [never.add_rows(c) for c in chunks[cut:]]
    assert [again.add_rows(c) for c in chunks[cut:]] == out_never
    assert_same_view(again, never)
    reasons = [r["reason"] for r in never.history]
    assert "drift" in reasons and "volume" in reasons and "drift_followup" in reasons, reasons


def test_rows_a_resumed_coordinator_sends_again_are_skipped_by_event_id(tmp_path):
    """A restarted run: the coordinator resumes from its checkpoint and sends again the rows emitted after it,
    which the trainer's log already holds; the trainer takes each row once, as an uninterrupted run does."""
    chunks = stream()
    never, first = core(tmp_path, "never", CFG), core(tmp_path, "restarted", CFG)
    for chunk in chunks[:30]:
        never.add_rows(chunk)
        first.add_rows(chunk)
    again = core(tmp_path, "restarted", CFG)
    resent = [again.add_rows(c) for c in chunks[26:30]]  # after the checkpoint, before the crash
    assert resent == [None] * 4 and again.stats()["duplicate_rows"] == sum(len(c) for c in chunks[26:30])
    mixed = pd.concat([chunks[29], chunks[30]], ignore_index=True)  # a batch half old, half new
    assert again.add_rows(mixed) == never.add_rows(chunks[30])
    for chunk in chunks[31:]:
        assert again.add_rows(chunk) == never.add_rows(chunk)
    assert_same_view(again, never)


def test_todays_trainer_without_a_log_starts_empty(tmp_path):
    """The failure this fixes: a trainer built again after a restart had no window and no policy state."""
    cfg = TrainerConfig(**CFG)
    first = TrainerCore(cfg, FEATURES, Registry(str(tmp_path / "reg")))
    for chunk in stream()[:10]:
        first.add_rows(chunk)
    again = TrainerCore(cfg, FEATURES, Registry(str(tmp_path / "reg")))
    assert len(first.buffer) > 0 and len(again.buffer) == 0 and again.policy.rows_since == 0


def test_a_requested_refit_survives_and_the_next_decision_is_the_same(tmp_path):
    never, first = core(tmp_path, "never", CFG), core(tmp_path, "restarted", CFG)
    for c in (never, first):
        c.add_rows(rows(600, seed=5))
        assert c.request_refit("by hand") == 1
        c.add_rows(rows(650, 1000, seed=6))  # 50 rows short of a volume refit
    again = core(tmp_path, "restarted", CFG)
    assert_same_view(again, never)
    assert again.policy.rows_since == 650 and again.history[-1]["reason"] == "manual"
    assert again.add_rows(rows(50, 1650, seed=7)) == never.add_rows(rows(50, 1650, seed=7)) == 2
    assert_same_view(again, never)


def test_the_log_is_bounded_by_the_window_and_compacts_small_batches(tmp_path):
    cfg = {**CFG, "drift_detector": None, "refit_every_rows": None}
    keep = window_rows_kept(TrainerConfig(**cfg))
    never, first = core(tmp_path, "never", cfg), core(tmp_path, "restarted", cfg, max_segments=8)
    frame = rows(4000, seed=8)
    for i in range(0, 4000, 100):
        never.add_rows(frame.iloc[i:i + 100])
        first.add_rows(frame.iloc[i:i + 100])
        held = first.row_log.stats()
        assert held["segments"] <= 8 and held["rows"] < keep + 100 * 8
    files = sorted(p.name for p in (tmp_path / "restarted" / "state" / "segments").iterdir())
    assert len(files) == first.row_log.stats()["segments"] and any(f.endswith("-base.parquet") for f in files)
    again = core(tmp_path, "restarted", cfg, max_segments=8)
    assert len(again.buffer) == keep
    assert_same_view(again, never)


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_damaged_segment_is_reported_and_skipped(tmp_path, damage):
    first = core(tmp_path, "t", CFG)
    first.add_rows(rows(200, seed=9))
    first.add_rows(rows(100, 200, seed=10))
    first.add_rows(rows(100, 300, seed=11))
    segments = sorted((tmp_path / "t" / "state" / "segments").iterdir())
    bad = segments[1]
    bad.write_bytes(bad.read_bytes()[:40] if damage == "truncate" else b"")
    again = core(tmp_path, "t", CFG)  # no exception: the trainer starts
    report = again.stats()["row_log"]
    assert len(report["damaged"]) == 1 and str(bad) in report["damaged"][0]
    kept = pd.concat([rows(200, seed=9), rows(100, 300, seed=11)], ignore_index=True)
    pd.testing.assert_frame_equal(again.window(), kept[again.window().columns].astype(float))
    assert again.rows_seen == 400  # the newest segment's state
    again.add_rows(rows(50, 400, seed=12))  # and it goes on writing after the damaged one
    assert core(tmp_path, "t", CFG).rows_seen == 450


def test_a_failed_write_is_counted_and_the_trainer_goes_on(tmp_path):
    first = core(tmp_path, "t", CFG)
    first.add_rows(rows(100, seed=13))

    def down(path: str, data: bytes) -> None:
        raise RowLogError("storage down")

    put, first.row_log.store.put = first.row_log.store.put, down
    first.add_rows(rows(100, 100, seed=14))
    assert first.stats()["row_log"]["write_failures"] == 1 and len(first.buffer) == 200
    first.row_log.store.put = put
    first.add_rows(rows(100, 200, seed=15))
    again = core(tmp_path, "t", CFG)
    assert again.rows_seen == 300 and len(again.buffer) == 200  # the rows of the failed write are the gap


def test_a_log_written_with_other_features_is_reported_not_loaded(tmp_path):
    first = core(tmp_path, "t", CFG)
    first.add_rows(rows(100, seed=16))
    other = TrainerCore(TrainerConfig(**CFG), ["a"], None, row_log=RowLog(str(tmp_path / "t" / "state"), 1500))
    assert len(other.buffer) == 0 and "not the trainer's" in other.stats()["row_log"]["damaged"][0]
