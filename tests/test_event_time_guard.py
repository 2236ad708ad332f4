"""Event times a client got wrong (issue 13, item 4): one event in the year 2100 must not move the
stream-wide watermark (everything later would be dropped as late, and the poisoned watermark saved
in the checkpoint). Where rows enter the coordinator — so for every source — an event further than
``stream.max_event_time_skew_s`` ahead of the wall clock is rejected as ``event_time_future``, and
with ``stream.max_event_age_s`` set, one further behind its partition's own clock (the stream's
event time, so a replay of an old file is judged against its own time) as ``event_time_past``."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.coordinator_core import Coordinator
from streamfit.actors.stream.local_runner import LocalRunner, LocalShard
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.partition import EventTimeGuard, Watermark
from streamfit.actors.stream.sources import FramesSource
from streamfit.config import FeaturesConfig, config_from_dict
from streamfit.errors import ConfigError

FEATURES = FeaturesConfig()
YEAR_2100 = 4_102_444_800.0


def batch(start: float, n: int, prefix: str, step: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"kind": "event", "event_id": [f"{prefix}{i}" for i in range(n)],
                         "entity": [f"u{i % 4}" for i in range(n)], "event_time": start + step * np.arange(n),
                         "x0": 1.0, "x1": 0.0, "x2": 0.0, "label": np.nan})


def test_an_event_from_the_year_2100_is_rejected_and_later_events_are_still_applied():
    now = time.time()
    poisoned = pd.concat([batch(now - 100, 10, "b"), batch(YEAR_2100, 1, "future")], ignore_index=True)
    frames = [batch(now - 200, 10, "a"), poisoned, batch(now - 50, 10, "c")]
    stats = LocalRunner(FEATURES, FramesSource(frames)).run()
    assert stats["reasons"].get("event_time_future") == 1, stats["reasons"]
    assert stats["reasons"].get("late", 0) == 0, stats["reasons"]
    assert stats["accepted"] == 30 and stats["rejected"] == 1 and stats["rows_read"] == 31
    assert stats["watermark_lag_s"] < 1000  # the watermark follows the real events


def test_a_poisoned_watermark_in_a_checkpoint_is_not_restored(tmp_path):
    now = time.time()
    store = CheckpointStore(str(tmp_path))
    store.write_shard(1, 0, FeatureShard(FEATURES).snapshot())
    store.write_manifest(1, batch_id=0, position=0, num_shards=1, extra={"max_event_times": {"": YEAR_2100}})
    coord = Coordinator(FramesSource([batch(now - 10, 10, "a")]), [LocalShard(FeatureShard(FEATURES), store)],
                        store=store, offload=False, replay=False, max_in_flight=0,
                        lateness_s=FEATURES.allowed_lateness_s)
    assert coord.watermark.clock < now + 3600
    stats = asyncio.run(coord.run())
    assert stats["accepted"] == 10 and stats["reasons"].get("late", 0) == 0


def test_a_replay_of_an_old_file_is_judged_by_its_own_clock():
    old = 1_546_300_800.0  # 2019-01-01
    guard = EventTimeGuard(max_skew_s=300.0, max_age_s=86_400.0, wall=lambda: 1_800_000_000.0)
    wm = Watermark(5.0)
    first = batch(old, 5, "a", step=3600.0)
    kept, reasons = guard.check(first, wm)
    assert len(kept) == 5 and not reasons  # 2019 is not 'too old' for a 2019 stream
    wm.observe(kept)
    stale = pd.concat([batch(old - 3 * 86_400, 2, "s"), batch(old + 5 * 3600, 3, "b")], ignore_index=True)
    kept, reasons = guard.check(stale, wm)
    assert reasons == {"event_time_past": 2} and kept["event_id"].tolist() == ["b0", "b1", "b2"]


def test_each_kafka_partition_is_judged_by_its_own_clock():
    guard = EventTimeGuard(max_skew_s=300.0, max_age_s=600.0, wall=lambda: 10_000.0)
    wm = Watermark(0.0)
    wm.observe(pd.DataFrame({"event_time": [9_000.0, 5_000.0], "_partition": ["0", "1"]}))
    rows = pd.DataFrame({"event_time": [5_100.0, 5_100.0, 20_000.0], "_partition": ["1", "0", "1"]})
    kept, reasons = guard.check(rows, wm)
    assert reasons == {"event_time_past": 1, "event_time_future": 1}
    assert kept["_partition"].tolist() == ["1"]  # a lagging partition is not behind itself


def test_the_limits_are_config_fields_and_a_bad_value_names_its_path():
    cfg = config_from_dict({"stream": {"max_event_time_skew_s": 60, "max_event_age_s": 86_400}})
    assert cfg.stream.max_event_time_skew_s == 60 and cfg.stream.max_event_age_s == 86_400
    guard = EventTimeGuard.from_config(cfg.stream)
    assert guard.max_skew_s == 60 and guard.max_age_s == 86_400
    with pytest.raises(ConfigError, match=r"stream\.max_event_time_skew_s"):
        config_from_dict({"stream": {"max_event_time_skew_s": -1}})
    with pytest.raises(ConfigError, match=r"stream\.max_event_age_s"):
        config_from_dict({"stream": {"max_event_age_s": 0}})
