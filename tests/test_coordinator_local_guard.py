"""``LocalRunner(event_time=...)`` hands its event-time guard to the ``Coordinator`` (default: StreamConfig's limits)."""

from __future__ import annotations

import pandas as pd

from streamfit.actors.stream.local_runner import LocalRunner
from streamfit.actors.stream.partition import EventTimeGuard
from streamfit.actors.stream.sources import FramesSource, SyntheticSource
from streamfit.config import FeaturesConfig, StreamConfig

FEATURES = FeaturesConfig()


def _frames() -> list[pd.DataFrame]:
    src = SyntheticSource(StreamConfig(batch_size=100, bad_row_rate=0.0, seed=5), FEATURES)
    frames = [src.read(k)[0] for k in range(3)]
    frames[1] = frames[1].copy()
    frames[1].loc[frames[1].index[0], "event_time"] = 4_102_444_800.0  # the year 2100
    return frames


def test_the_default_guard_rejects_an_event_from_the_future():
    stats = LocalRunner(FEATURES, FramesSource(_frames()), num_shards=2).run()
    assert stats["reasons"].get("event_time_future") == 1


def test_a_given_guard_is_used():
    guard = EventTimeGuard(max_skew_s=None, max_age_s=None)  # both rules off: nothing rejected for its time
    runner = LocalRunner(FEATURES, FramesSource(_frames()), num_shards=2, event_time=guard)
    assert runner.coordinator.guard is guard
    assert "event_time_future" not in runner.run()["reasons"]
