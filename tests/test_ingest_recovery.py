"""The data plane on a real local Ray: sharded features equal an offline computation, and a shard
killed mid-stream recovers to exactly the state and training rows of a run without the kill."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import ray

from streamfit.config import config_from_dict
from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.sources import SyntheticSource
from streamfit.scripts.pipeline import NAMESPACE, start_data_plane, wait_until


@ray.remote(num_cpus=0)
class RowSink:
    """Stands in for the trainer: keeps every training row it is sent."""

    def __init__(self) -> None:
        self.rows: list[pd.DataFrame] = []

    def add_rows(self, rows: pd.DataFrame) -> None:
        self.rows.append(rows)

    def all_rows(self) -> pd.DataFrame:
        return pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame()


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    yield
    ray.shutdown()


def _cfg(tmp_path, **stream):
    return config_from_dict({
        "stream": {"entities": 300, "batch_size": 1000, "label_delay_events": 400, "max_events": 40_000,
                   "max_events_per_s": None, **stream},
        "checkpoints": {"uri": str(tmp_path / "ckpt"), "interval_s": 0.5},
        "shards": {"num_shards": 2, "num_cpus": 0},
    })


def _run(cfg, kill: bool = False):
    sink = RowSink.remote()
    shards, coord = start_data_plane(cfg, sink)
    ref = coord.run.remote(None)
    at_kill: dict = {}
    if kill:
        # Kill once the shard has applied batches past the last complete checkpoint: that state is only in
        # its memory, so the restarted shard must be brought back by a replay. Waiting on the event itself
        # (not on a delay) keeps this true on a loaded machine.
        store = CheckpointStore(cfg.checkpoints.uri)

        def past_checkpoint() -> bool:
            manifest = store.latest_manifest()
            applied = ray.get(shards[0].stats.remote())["last_batch_id"]
            at_kill.update(checkpoint_batch=manifest and manifest["batch_id"], shard_applied=applied)
            return manifest is not None and manifest["checkpoint_id"] >= 2 and applied - manifest["batch_id"] >= 2

        assert wait_until(past_checkpoint, timeout_s=120, interval_s=0.02), f"no batches past a checkpoint: {at_kill}"
        assert not ray.wait([ref], timeout=0)[0], "stream ended before the kill: slow it down"
        ray.kill(shards[0], no_restart=False)
    stats = ray.get(ref, timeout=300)
    snaps = ray.get([s.snapshot.remote() for s in shards])
    shard_stats = ray.get([s.stats.remote() for s in shards])
    rows = ray.get(sink.all_rows.remote())
    for a in (coord, sink, *shards):
        ray.kill(a)
    return stats, snaps, shard_stats, rows, at_kill


def _assert_same_state(a, b):
    for name in ("events", "labels"):
        for col in ("keys", "times", "values"):
            np.testing.assert_array_equal(a[name][col], b[name][col], err_msg=f"{name}.{col}")
    for col in ("ids", "times", "feats"):
        np.testing.assert_array_equal(np.sort(a["pending"][col], axis=0), np.sort(b["pending"][col], axis=0))
    assert a["meta"]["last_batch_id"] == b["meta"]["last_batch_id"]


def test_killed_shard_recovers_to_the_state_of_a_run_without_failure(tmp_path):
    base_stats, base_snaps, base_shard_stats, base_rows, _ = _run(_cfg(tmp_path / "a"))
    # The same stream, paced so the kill lands mid-stream.
    stats, snaps, shard_stats, rows, at_kill = _run(_cfg(tmp_path / "b", max_events_per_s=8000), kill=True)
    restored = shard_stats[0]["restored_from"]
    assert restored is not None, (stats, shard_stats)
    if restored < at_kill["shard_applied"]:  # a checkpoint can still land between the check and the kill
        assert stats["shard_recoveries"] >= 1 and stats["replayed_batches"] >= 1, (stats, at_kill)
    assert stats["events"] == base_stats["events"]
    for a, b in zip(snaps, base_snaps):
        _assert_same_state(a, b)
    # Nothing lost, nothing emitted twice.
    assert rows["event_id"].is_unique
    assert len(rows) == len(base_rows) > 10_000
    key = ["event_id"]
    pd.testing.assert_frame_equal(rows.sort_values(key).reset_index(drop=True),
                                  base_rows.sort_values(key).reset_index(drop=True))


def test_sharded_features_equal_the_single_process_computation(tmp_path):
    cfg = _cfg(tmp_path / "c", max_events=20_000)
    _, _, shard_stats, rows, _ = _run(cfg)
    # Offline: the same events through one in-process shard, no Ray, no partitioning.
    src = SyntheticSource(cfg.stream, cfg.features)
    one, pos, max_t, offline = FeatureShard(cfg.features), 0, float("-inf"), []
    while not src.at_end(pos):
        df, nxt = src.read(pos)
        offline.append(one.process(pos + 1, df, max_t - cfg.features.allowed_lateness_s).training_rows)
        max_t = max(max_t, float(df["event_time"].max()))
        pos = nxt
    offline = pd.concat(offline, ignore_index=True).sort_values("event_id").reset_index(drop=True)
    got = rows.sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, offline)
    assert all(s["events"] > 0 for s in shard_stats)
    # And a direct pandas check of one window aggregate: count over [t - 5 min, t) per entity.
    events = pd.concat([src.read(p)[0] for p in range(20)], ignore_index=True)
    events = events[(events["kind"] == "event")].copy()
    events = events[events["x1"].notna() & (events["x2"].abs() <= 50)]
    events["ts"] = pd.to_datetime(events["event_time"], unit="s")
    counts = {}
    for _, g in events.sort_values("event_time", kind="stable").groupby("entity"):
        s = pd.Series(1.0, index=pd.DatetimeIndex(g["ts"]))
        counts.update(zip(g["event_id"], s.rolling("300s", closed="left").count().fillna(0).values))
    sample = got[got["event_id"].isin(counts)]
    assert len(sample) > 1000
    np.testing.assert_array_equal(sample["count_5m"].values, sample["event_id"].map(counts).values)


def test_bad_late_and_duplicate_rows_are_counted_and_never_crash_a_shard(tmp_path):
    cfg = _cfg(tmp_path / "d", max_events=10_000, bad_row_rate=0.02)
    src = SyntheticSource(cfg.stream, cfg.features)
    frames = [src.read(p)[0] for p in range(10)]
    late = frames[4][frames[4]["kind"] == "event"].head(10)  # older than the watermark by now
    dups = frames[5][frames[5]["kind"] == "event"].tail(5)  # within the allowed lateness: duplicates
    frames[6] = pd.concat([frames[6], late, dups], ignore_index=True)
    junk = pd.DataFrame({"kind": ["event", "event", "label", "nonsense"], "event_id": ["j1", "j2", "j3", "j4"],
                         "entity": ["u1", None, "u1", "u2"], "event_time": [frames[7]["event_time"].max(), 1.0, 2.0, 3.0],
                         "x0": ["abc", 1.0, None, 0.0], "x1": [0.0, 0.0, None, 0.0], "x2": [0.0, 0.0, None, 0.0],
                         "label": [None, None, 7.0, None]})
    frames[7] = pd.concat([frames[7], junk], ignore_index=True)
    sink = RowSink.remote()
    shards, coord = start_data_plane(cfg, sink)
    from streamfit.actors.stream.sources import FramesSource

    ray.get(coord.set_source.remote(FramesSource(frames)))
    stats = ray.get(coord.run.remote(None), timeout=120)
    reasons = stats["reasons"]
    assert reasons.get("missing:x1", 0) > 0 and reasons.get("out_of_range:x2", 0) > 0
    assert reasons.get("non_numeric:x0") == 1
    assert reasons.get("missing:entity") == 1
    assert reasons.get("bad_label") == 1
    assert reasons.get("bad_kind") == 1
    assert reasons.get("late") == 10
    assert reasons.get("duplicate") == 5
    assert stats["accepted"] + stats["rejected"] == sum(len(f) for f in frames)
    assert all(ray.get([s.stats.remote() for s in shards]))  # every shard still answers
    for a in (coord, sink, *shards):
        ray.kill(a)


def test_changing_the_shard_count_between_runs_rebuilds_every_entity_state(tmp_path):
    def cfg(num_shards: int, events: int):
        c = _cfg(tmp_path / "reshard", max_events=events)
        c.shards.num_shards = num_shards
        return c

    first, second = cfg(2, 10_000), cfg(3, 20_000)  # the second run goes on where the first stopped
    rows = []
    for c in (first, second):
        sink = RowSink.remote()
        shards, coord = start_data_plane(c, sink)
        stats = ray.get(coord.run.remote(None), timeout=300)
        rows.append(ray.get(sink.all_rows.remote()))
        snaps = ray.get([s.snapshot.remote() for s in shards])
        for a in (coord, sink, *shards):
            ray.kill(a)
    assert stats["resumed_from_batch"] == 10 and len(snaps) == 3
    # Offline: one in-process shard over all 20 batches, as the coordinator sends them.
    src = SyntheticSource(second.stream, second.features)
    one, max_t, offline = FeatureShard(second.features), float("-inf"), []
    for pos in range(20):
        df, _ = src.read(pos)
        wm = max_t - second.features.allowed_lateness_s
        max_t = max(max_t, float(df["event_time"].max()))
        offline.append(one.process(pos + 1, df, wm, max_t).training_rows)
    ref = one.snapshot()
    for name in ("events", "labels"):
        keys = np.concatenate([s[name]["keys"] for s in snaps])
        times = np.concatenate([s[name]["times"] for s in snaps])
        values = np.concatenate([s[name]["values"] for s in snaps])
        order = np.lexsort((times, keys))
        np.testing.assert_array_equal(keys[order], ref[name]["keys"])
        np.testing.assert_array_equal(times[order], ref[name]["times"])
        np.testing.assert_allclose(values[order], ref[name]["values"])
    for i, s in enumerate(snaps):  # every entity lives on the shard the new count assigns it
        from streamfit.schema import shard_of_hash

        assert (shard_of_hash(s["events"]["keys"], 3) == i).all()
    got = pd.concat(rows, ignore_index=True).sort_values("event_id").reset_index(drop=True)
    want = pd.concat(offline, ignore_index=True).sort_values("event_id").reset_index(drop=True)
    assert got["event_id"].is_unique and len(got) == len(want) > 10_000
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9)
