"""``LocalRunner``: the stream plane in one process, on the coordinator's own loop (no Ray).

- one shard: the same training rows, chunks, clocks and state as a FeatureShard fed by hand
  with the stream-wide watermark (the loop bench, quality and load used to write themselves);
- three shards: the same training rows as one;
- ``run_until`` stops at a source position and continues from it, keeping no batches for replay
  (an unbounded source does not grow its memory);
- stopped after a checkpoint and started again on the same checkpoint folder, it ends with
  the state and rows of a run that was never stopped.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.stream import FramesSource, LocalRunner, SyntheticSource
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.partition import Watermark
from streamfit.config import FeaturesConfig, StreamConfig

FEATURES = FeaturesConfig()
STREAM = StreamConfig(batch_size=300, entities=50, label_delay_events=400, bad_row_rate=0.02, seed=5)


@pytest.fixture(scope="module")
def batches() -> list[pd.DataFrame]:
    src = SyntheticSource(STREAM, FEATURES)
    return [src.read(k)[0] for k in range(20)]


def collect(chunks: list[tuple[pd.DataFrame, float]]):
    """An ``on_rows`` that keeps (rows, clock)."""
    return lambda rows, clock: chunks.append((rows, clock))


def by_event(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values("event_id").reset_index(drop=True)


def test_one_shard_equals_a_feature_shard_fed_by_hand(batches):
    shard = FeatureShard(FEATURES)
    wm = Watermark(FEATURES.allowed_lateness_s)
    want = []
    for bid, df in enumerate(batches, start=1):
        rows = shard.process(bid, df, wm.observe(df), wm.clock).training_rows
        if len(rows):
            want.append((rows, wm.clock))
    chunks: list[tuple[pd.DataFrame, float]] = []
    runner = LocalRunner(FEATURES, FramesSource(batches), on_rows=collect(chunks))
    stats = runner.run()
    assert [c for _, c in chunks] == [c for _, c in want]
    for (got, _), (exp, _) in zip(chunks, want):
        pd.testing.assert_frame_equal(got, exp)
    assert runner.shards[0].stats() == shard.stats()
    assert stats["events"] == shard.stats()["events"] and stats["rejected"] > 0
    assert stats["batches"] == len(batches) and stats["position"] == len(batches)


def test_three_shards_give_the_rows_of_one(batches):
    one: list[tuple[pd.DataFrame, float]] = []
    three: list[tuple[pd.DataFrame, float]] = []
    LocalRunner(FEATURES, FramesSource(batches), on_rows=collect(one)).run()
    runner = LocalRunner(FEATURES, FramesSource(batches), num_shards=3, on_rows=collect(three))
    runner.run()
    assert all(s.stats()["events"] > 0 for s in runner.shards)
    assert [c for _, c in one] == [c for _, c in three]  # one chunk per batch, at the same stream clock
    pd.testing.assert_frame_equal(by_event(pd.concat([r for r, _ in three])),
                                  by_event(pd.concat([r for r, _ in one])))


def test_run_until_stops_at_the_position_and_continues(batches):
    runner = LocalRunner(FEATURES, FramesSource(batches))
    assert runner.run_until(7)["position"] == 7
    assert runner.shards[0].last_batch_id == 7
    assert not runner.coordinator.log.batches  # in-process shards never restart: no batches kept for replay
    assert runner.run_until(3)["position"] == 7  # never backwards
    assert runner.run_until(len(batches) + 5)["position"] == len(batches)  # stops at the end of the source


def test_resumed_from_a_checkpoint_it_ends_like_an_uninterrupted_run(tmp_path, batches):
    whole: list[tuple[pd.DataFrame, float]] = []
    uninterrupted = LocalRunner(FEATURES, FramesSource(batches), on_rows=collect(whole))
    uninterrupted.run()

    first: list[tuple[pd.DataFrame, float]] = []
    before = LocalRunner(FEATURES, FramesSource(batches), on_rows=collect(first), checkpoint_uri=str(tmp_path))
    before.run_until(8)
    asyncio.run(before.coordinator.checkpoint())
    cut = before.coordinator.watermark.clock  # chunks up to here are in the checkpoint
    before.run_until(11)  # work after the checkpoint is lost with the process

    second: list[tuple[pd.DataFrame, float]] = []
    after = LocalRunner(FEATURES, FramesSource(batches), on_rows=collect(second), checkpoint_uri=str(tmp_path))
    assert after.position == 8 and after.shards[0].last_batch_id == 8
    stats = after.run()
    assert stats["resumed_from_batch"] == 8 and stats["batch_id"] == len(batches)
    rows = pd.concat([r for r, c in first if c <= cut] + [r for r, _ in second], ignore_index=True)
    assert rows["event_id"].is_unique
    pd.testing.assert_frame_equal(by_event(rows), by_event(pd.concat([r for r, _ in whole], ignore_index=True)))
    a, b = after.shards[0].snapshot(), uninterrupted.shards[0].snapshot()
    assert a["meta"] == b["meta"]
    np.testing.assert_array_equal(np.sort(a["pending"]["ids"]), np.sort(b["pending"]["ids"]))
