"""The plain ``Coordinator`` under faults (no Ray): a trainer that raises or hangs does not stop ingestion
(training-row batches queue behind one call in flight, drops counted in the stats), and a transient storage
error during a checkpoint is retried with backoff until the checkpoint completes."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import pytest

import streamfit.storage as storage_mod
from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.coordinator_core import Coordinator
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.local_runner import LocalShard
from streamfit.actors.stream.sources import FramesSource, SyntheticSource
from streamfit.config import FeaturesConfig, StreamConfig

FEATURES = FeaturesConfig()
STREAM = StreamConfig(batch_size=200, entities=40, label_delay_events=300, bad_row_rate=0.0, seed=3)
N_BATCHES = 20


@pytest.fixture(scope="module")
def batches() -> list[pd.DataFrame]:
    src = SyntheticSource(STREAM, FEATURES)
    return [src.read(k)[0] for k in range(N_BATCHES)]


class FaultyTrainer:
    """Takes rows; each answer raises, never comes (hangs), or comes at once, as told."""

    def __init__(self, mode: str) -> None:
        self.mode, self.calls, self.rows = mode, 0, 0

    def add_rows(self, rows: pd.DataFrame) -> Any:
        self.calls += 1
        self.rows += len(rows)
        return self._answer()

    async def _answer(self) -> None:
        if self.mode == "raise":
            raise RuntimeError("trainer crashed")
        if self.mode == "hang":
            await asyncio.Event().wait()


def coordinator(batches, trainer=None, store=None, **kw: Any) -> Coordinator:
    shards = [LocalShard(FeatureShard(FEATURES, i), store) for i in range(2)]
    return Coordinator(FramesSource(batches), shards, trainer, lateness_s=FEATURES.allowed_lateness_s,
                       max_in_flight=0, store=store, **kw)


def run(coord: Coordinator, timeout_s: float = 120.0) -> dict[str, Any]:
    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(coord.run(), timeout_s)

    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def clean(batches) -> dict[str, Any]:
    return run(coordinator(batches, FaultyTrainer("ok")))


def test_a_trainer_that_raises_does_not_stop_ingestion(batches, clean):
    trainer = FaultyTrainer("raise")
    stats = run(coordinator(batches, trainer, trainer_queue=4))
    assert stats["batches"] == N_BATCHES and stats["events"] == clean["events"]
    assert stats["trainer_errors"] == trainer.calls > 1  # every call failed, and each was counted
    assert stats["training_rows_dropped"] + trainer.rows == stats["training_rows"] == clean["training_rows"]


def test_a_trainer_that_hangs_does_not_stop_ingestion_and_drops_are_counted(batches, clean):
    trainer = FaultyTrainer("hang")
    stats = run(coordinator(batches, trainer, trainer_queue=2, trainer_flush_s=0.5), timeout_s=120.0)
    assert stats["batches"] == N_BATCHES and stats["events"] == clean["events"]
    assert trainer.calls == 1  # the first call never answered: nothing else was sent
    assert stats["training_batches_dropped"] > 0 and stats["trainer_timeouts"] == 1
    # every row made is accounted for: sent (and unanswered) or dropped, never silently lost
    assert stats["training_rows_dropped"] + trainer.rows == stats["training_rows"] == clean["training_rows"]


def test_a_storage_error_during_a_checkpoint_is_retried_and_the_checkpoint_completes(batches, tmp_path,
                                                                                     monkeypatch):
    write, failed = storage_mod._write_synced, []

    def fail_once(path: str, data: bytes) -> None:
        if not failed:
            failed.append(path)
            raise OSError(5, "Input/output error (injected)")
        write(path, data)

    monkeypatch.setattr(storage_mod, "_write_synced", fail_once)
    store = CheckpointStore(str(tmp_path))
    stats = run(coordinator(batches, store=store))
    assert failed and stats["checkpoints"] == 1
    manifest = CheckpointStore(str(tmp_path)).latest_manifest()
    assert manifest is not None and manifest["batch_id"] == N_BATCHES


def test_a_periodic_checkpoint_that_fails_beyond_the_retries_is_counted_and_the_stream_goes_on(batches, tmp_path,
                                                                                              monkeypatch):
    from streamfit.actors.stream.checkpoint import WRITE_ATTEMPTS

    write, failures = storage_mod._write_synced, []

    def down_for_one_write(path: str, data: bytes) -> None:
        if len(failures) < WRITE_ATTEMPTS:  # every try of the first write fails: storage down for a while
            failures.append(path)
            raise OSError(5, "Input/output error (injected)")
        write(path, data)

    monkeypatch.setattr(storage_mod, "_write_synced", down_for_one_write)
    clock = iter(range(10_000))  # one second per call: a periodic checkpoint falls due every few batches
    coord = coordinator(batches, store=CheckpointStore(str(tmp_path)), checkpoint_every_s=5.0,
                        now=lambda: float(next(clock)))
    stats = run(coord)
    assert len(failures) == WRITE_ATTEMPTS and stats["checkpoint_failures"] == 1
    assert stats["batches"] == N_BATCHES and stats["checkpoints"] >= 2
    assert CheckpointStore(str(tmp_path)).latest_manifest()["batch_id"] == N_BATCHES


def test_a_trainer_slower_than_the_stream_gets_every_row_in_fewer_larger_calls():
    # An unpaced replay outruns a busy trainer: the queue merges batches instead of dropping rows.
    import collections

    import pandas as pd

    from streamfit.actors.stream.trainer_feed import TrainerFeed

    async def scenario() -> tuple[list[int], collections.Counter]:
        got: list[int] = []

        class SlowPort:
            def add_rows(self, rows):
                async def take():
                    await asyncio.sleep(0.01)
                    got.append(len(rows))
                return take()

        counters: collections.Counter = collections.Counter()
        feed = TrainerFeed(SlowPort(), counters, max_queued=3)
        for i in range(40):
            feed.offer(pd.DataFrame({"x": range(i * 10, i * 10 + 10)}))
        await feed.flush(60.0)
        return got, counters

    got, counters = asyncio.run(scenario())
    assert sum(got) == 400 and counters["training_rows_dropped"] == 0
    assert len(got) <= 4  # one call in flight, then the merged queue
