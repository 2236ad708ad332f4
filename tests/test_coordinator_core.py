"""The plain ``Coordinator`` without Ray: fake shards, a driven clock, in-process answers.

- a shard that restarts from its last checkpoint (it answers ``replay_from``) — mid-stream,
  again during its own replay, and just before a checkpoint — ends in the state, and the
  trainer gets the training rows, of a run without the restart; nothing is counted twice;
- a shard older than the replay log stops the run with a clear error instead of looping;
- at most ``max_in_flight`` batches are unanswered per shard, and the bound is reached;
- a checkpoint writes every shard's part, then the manifest, then commits the source;
- training rows go to the trainer with at most one call in flight, and to the monitor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.stream.checkpoint import CheckpointError, CheckpointStore
from streamfit.actors.stream.coordinator_core import Coordinator, Ready
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.local_runner import LocalShard
from streamfit.actors.stream.partition import Watermark
from streamfit.actors.stream.sources import FramesSource, SyntheticSource
from streamfit.config import FeaturesConfig, StreamConfig

FEATURES = FeaturesConfig()
STREAM = StreamConfig(batch_size=200, entities=40, label_delay_events=300, bad_row_rate=0.0, seed=3)
N_BATCHES = 24
SHARDS = 2


def frames(n: int = N_BATCHES) -> list[pd.DataFrame]:
    src = SyntheticSource(STREAM, FEATURES)
    return [src.read(k)[0] for k in range(n)]


class Clock:
    """Stream-driven time: one second per batch read (checkpoints fall on fixed batches)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class TickingSource(FramesSource):
    """Frames whose every read advances the clock by a second; records commits."""

    def __init__(self, batches: list[pd.DataFrame], clock: Clock, events: list[Any] | None = None) -> None:
        super().__init__(batches)
        self.clock = clock
        self.events = events if events is not None else []

    def read(self, position: int) -> tuple[pd.DataFrame, int]:
        self.clock.t += 1.0
        return super().read(position)

    def commit(self, position: int) -> None:
        self.events.append(("commit", position))


class RestartingShard(LocalShard):
    """A LocalShard that 'restarts' (reloads its last checkpoint, as the Ray actor does) at chosen moments."""

    def __init__(self, shard_id: int, store: CheckpointStore, restart_at: tuple[int, ...] = (),
                 restart_before_checkpoint: tuple[int, ...] = (), keeps_checkpoint: bool = True) -> None:
        super().__init__(FeatureShard(FEATURES, shard_id), store)
        self.restart_at = list(restart_at)  # batch ids, in order: the next delivery of each finds it restarted
        self.restart_before_checkpoint = list(restart_before_checkpoint)  # checkpoint ids
        self.keeps_checkpoint = keeps_checkpoint
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1
        self.shard = FeatureShard(FEATURES, self.shard.shard_id)
        snap = self.store.load_shard_state(self.shard.shard_id, SHARDS, FEATURES) if self.keeps_checkpoint else None
        if snap is not None:
            self.shard.restore(snap)

    def process(self, batch_id: int, df: pd.DataFrame, watermark: float, clock: float) -> Ready:
        if self.restart_at and batch_id == self.restart_at[0]:
            self.restart_at.pop(0)
            self.restart()
        return super().process(batch_id, df, watermark, clock)

    def checkpoint(self, checkpoint_id: int, batch_id: int) -> Ready:
        if self.restart_before_checkpoint and checkpoint_id == self.restart_before_checkpoint[0]:
            self.restart_before_checkpoint.pop(0)
            self.restart()
        return super().checkpoint(checkpoint_id, batch_id)


class Trainer:
    """Keeps the rows; its answers arrive only when awaited, and it counts calls in flight."""

    def __init__(self) -> None:
        self.rows: list[pd.DataFrame] = []
        self.open = 0
        self.most_open = 0

    def all_rows(self) -> pd.DataFrame:
        return pd.concat(self.rows, ignore_index=True)

    def add_rows(self, rows: pd.DataFrame) -> Any:
        self.rows.append(rows)
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        return Answer(self)


class Answer:
    """The trainer's answer: the call counts as open until someone awaits it."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.closed = trainer, False

    def __await__(self) -> Any:
        if not self.closed:
            self.closed = True
            self.trainer.open -= 1
        return None
        yield

def run(coord: Coordinator) -> dict[str, Any]:
    return asyncio.run(coord.run())


def pipeline(tmp_path, batches: list[pd.DataFrame], restarts: dict[int, dict[str, Any]] | None = None,
             max_in_flight: int = 2):
    """Coordinator over RestartingShards; ``restarts[i]`` says when shard ``i`` restarts."""
    clock = Clock()
    store = CheckpointStore(str(tmp_path))
    shards = [RestartingShard(i, store, **(restarts or {}).get(i, {})) for i in range(SHARDS)]
    trainer = Trainer()
    coord = Coordinator(TickingSource(batches, clock), shards, trainer, lateness_s=FEATURES.allowed_lateness_s,
                        max_in_flight=max_in_flight, store=store, checkpoint_every_s=5.0, now=clock)
    return coord, shards, trainer


def by_event(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values("event_id").reset_index(drop=True)


def flat(snap: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in snap.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def assert_same_state(a: FeatureShard, b: FeatureShard) -> None:
    sa, sb = flat(a.snapshot()), flat(b.snapshot())
    assert sa.keys() == sb.keys()
    for key, x in sa.items():
        if isinstance(x, np.ndarray):  # row order may differ after a restore (pending rows are compacted)
            np.testing.assert_array_equal(np.sort(x, axis=0), np.sort(sb[key], axis=0), err_msg=key)
        else:
            assert x == sb[key], key


@pytest.fixture(scope="module")
def batches() -> list[pd.DataFrame]:
    return frames()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, batches):
    coord, shards, trainer = pipeline(tmp_path_factory.mktemp("base"), batches)
    return run(coord), shards, trainer


@pytest.mark.parametrize("restarts", [
    {0: {"restart_at": (9,)}},  # mid-stream, after a checkpoint
    {1: {"restart_at": (9, 7)}},  # again during its own replay (at the replay of batch 7)
    {0: {"restart_at": (8,)}, 1: {"restart_at": (15,)}},  # both shards, at different times
    {1: {"restart_before_checkpoint": (3,)}},  # between the drain and its snapshot
], ids=["mid-stream", "during-replay", "both-shards", "before-checkpoint"])
def test_a_restarted_shard_ends_equal_to_a_run_without_the_restart(tmp_path, batches, baseline, restarts):
    base_stats, base_shards, base_trainer = baseline
    coord, shards, trainer = pipeline(tmp_path, batches, restarts)
    stats = run(coord)
    planned = sum(len(when) for spec in restarts.values() for when in spec.values())
    assert sum(s.restarts for s in shards) == planned
    assert stats["shard_recoveries"] >= 1 and stats["replayed_batches"] >= 1, stats
    for got, want in zip(shards, base_shards):
        assert_same_state(got.shard, want.shard)
    for key in ("events", "accepted", "rejected", "training_rows", "batches", "per_shard_accepted"):
        assert stats[key] == base_stats[key], key
    rows = trainer.all_rows()
    assert rows["event_id"].is_unique  # nothing emitted twice
    pd.testing.assert_frame_equal(by_event(rows), by_event(base_trainer.all_rows()))


def test_a_shard_older_than_the_replay_log_stops_the_run(tmp_path, batches):
    coord, _, _ = pipeline(tmp_path, batches, {0: {"restart_at": (12,), "keeps_checkpoint": False}})
    with pytest.raises(CheckpointError, match="shard 0 restarted at batch 0"):
        run(coord)


class SlowShard(LocalShard):
    """Applies each batch when sent (actor tasks run in order) but answers only when awaited."""

    def __init__(self, shard_id: int) -> None:
        super().__init__(FeatureShard(FEATURES, shard_id))
        self.unanswered = 0
        self.most_unanswered = 0

    def process(self, batch_id: int, df: pd.DataFrame, watermark: float, clock: float) -> Any:
        result = self.shard.process(batch_id, df, watermark, clock)
        self.unanswered += 1
        self.most_unanswered = max(self.most_unanswered, self.unanswered)
        return self._answer(result)

    async def _answer(self, result: Any) -> Any:
        self.unanswered -= 1
        return result


@pytest.mark.parametrize("bound", [1, 3])
def test_at_most_max_in_flight_batches_are_unanswered_per_shard(batches, bound):
    shards = [SlowShard(i) for i in range(SHARDS)]
    stats = run(Coordinator(FramesSource(batches), shards, max_in_flight=bound))
    assert [s.most_unanswered for s in shards] == [bound] * SHARDS
    assert [s.unanswered for s in shards] == [0] * SHARDS  # drained at the end
    assert stats["batches"] == len(batches)


class RecordingStore:
    """Stands in for the CheckpointStore: records the manifest among the other steps."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.manifests: list[dict[str, Any]] = []

    def latest_manifest(self) -> None:
        return None

    def write_manifest(self, checkpoint_id: int, batch_id: int, position: Any, num_shards: int,
                       extra: dict[str, Any] | None = None) -> None:
        self.events.append(("manifest", checkpoint_id))
        self.manifests.append({"checkpoint_id": checkpoint_id, "batch_id": batch_id, "position": position,
                               "num_shards": num_shards, **(extra or {})})


class RecordingShard(SlowShard):
    def __init__(self, shard_id: int, events: list[Any]) -> None:
        super().__init__(shard_id)
        self.events = events

    def checkpoint(self, checkpoint_id: int, batch_id: int) -> Ready:
        # Every batch sent must have been answered (drained) before the snapshot.
        self.events.append(("shard", checkpoint_id, self.shard.shard_id, batch_id, self.unanswered))
        return Ready(f"part-{checkpoint_id}-{self.shard.shard_id}")


def test_checkpoint_writes_the_manifest_after_every_shard_then_commits_the_source(batches):
    events: list[Any] = []
    clock = Clock()
    store = RecordingStore(events)
    shards = [RecordingShard(i, events) for i in range(SHARDS)]
    coord = Coordinator(TickingSource(batches[:10], clock, events), shards, store=store, max_in_flight=2,
                        checkpoint_every_s=4.0, now=clock, lateness_s=FEATURES.allowed_lateness_s)
    stats = run(coord)
    assert stats["checkpoints"] == len(store.manifests) >= 3
    for m in store.manifests:
        cid, bid = m["checkpoint_id"], m["batch_id"]
        at = events.index(("manifest", cid))
        # Both shards drained (0 unanswered) and snapshotted at the same batch, then the manifest, then the commit.
        assert events[at - 2:at + 2] == [("shard", cid, 0, bid, 0), ("shard", cid, 1, bid, 0), ("manifest", cid),
                                         ("commit", m["position"])], events
        assert m["num_shards"] == SHARDS and m["position"] == m["batch_id"]  # one batch per frame
        assert set(m["max_event_times"]) == {""}
    assert store.manifests[-1]["batch_id"] == 10  # the final checkpoint covers every batch


def test_training_rows_reach_the_trainer_one_call_at_a_time_and_the_monitor(batches):
    shard = FeatureShard(FEATURES)
    wm = Watermark(FEATURES.allowed_lateness_s)
    expected = [shard.process(bid, df, wm.observe(df), wm.clock).training_rows
                for bid, df in enumerate(batches, start=1)]
    expected = [rows for rows in expected if len(rows)]
    seen: list[pd.DataFrame] = []

    class Monitor:
        def observe_rows(self, rows: pd.DataFrame) -> None:
            seen.append(rows)

    trainer = Trainer()
    stats = run(Coordinator(FramesSource(batches), [SlowShard(0)], trainer, Monitor(), max_in_flight=2,
                            lateness_s=FEATURES.allowed_lateness_s))
    want = pd.concat(expected, ignore_index=True)
    assert len(want) > 1000 and stats["training_rows"] == len(want)
    pd.testing.assert_frame_equal(trainer.all_rows(), want)
    pd.testing.assert_frame_equal(pd.concat(seen, ignore_index=True), want)
    assert trainer.most_open == 1 and trainer.open == 0
