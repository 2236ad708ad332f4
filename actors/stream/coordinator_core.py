"""The coordinator's logic as a plain object: dispatch, backpressure, replay, aligned checkpoints, pacing.

``Coordinator`` reads a source, judges each batch by the stream-wide watermark, hash-partitions
it to the shards and forwards the training rows they complete to a trainer (and a monitor).
It talks to them through small ports whose methods return awaitables — an ``ObjectRef`` when
the port is a Ray actor (``CoordinatorActor``), an answer that is ready at once when it is a
shard in this process (``LocalRunner``) — so one loop serves both. It

- keeps at most ``max_in_flight`` batches unanswered per shard (a slow shard slows the source;
  memory stays bounded); ``0`` waits for every answer before reading on;
- every ``checkpoint_every_s`` drains the shards, has each write its snapshot for the same
  batch id, then writes the manifest and commits the source position;
- keeps the batches since the last checkpoint (``ReplayLog``), so that a shard restarted from its
  checkpoint (it answers ``replay_from``) is sent exactly the batches it lost; results of batches
  already collected are discarded, so nothing is counted or emitted twice; with checkpoints off
  the log is capped in bytes (``replay_max_bytes``) and a restarted shard skips what it dropped;
- hands training rows to the trainer through a ``TrainerFeed`` (one call in flight, at most
  ``trainer_queue`` batches behind it, drops and trainer errors counted in the stats; at the end
  it waits ``trainer_flush_s`` at most), so a slow, crashed or hung trainer never stops ingestion; a periodic checkpoint that fails (storage
  down after the store's retries) is counted in ``checkpoint_failures`` and tried again at the
  next interval, the replay log keeping every batch since the last good one.

A coordinator built over a checkpoint store resumes from its last manifest (position, batch id,
watermark): that is what a restarted ``CoordinatorActor`` does. Batches the shards applied after
that checkpoint are sent again; the shards answer them from their result cache (or with no rows)
without applying them twice, so their state ends as in an uninterrupted run.

Example:
    >>> import asyncio
    >>> async def ask() -> int:
    ...     return await Ready(7)  # what an in-process port answers: no waiting
    >>> asyncio.run(ask())
    7
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import Counter, deque
from typing import Any, Awaitable, Callable, Generator, Protocol, Sequence

import numpy as np
import pandas as pd

from streamfit.config import Config, StreamConfig
from streamfit.schema import KIND
from streamfit.actors.stream.checkpoint import CheckpointError, CheckpointStore
from streamfit.actors.stream.feature_shard import ShardResult
from streamfit.actors.stream.partition import EventTimeGuard, Partitioner, Watermark
from streamfit.actors.stream.replay_log import ReplayLog
from streamfit.actors.stream.served_log import add_skew, empty_skew
from streamfit.actors.stream.sources import Source, make_source
from streamfit.actors.stream.trainer_feed import TrainerFeed

log = logging.getLogger(__name__)


class ReplayGap(CheckpointError):
    """A restarted shard is older than anything the replay log holds: replaying cannot make it whole."""


class Ready:
    """An awaitable whose answer is already there: what an in-process port returns."""

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # a generator that never suspends


class ShardPort(Protocol):
    """What the coordinator needs of a shard; every call returns an awaitable answer."""

    def process(self, batch_id: int, df: pd.DataFrame, watermark: float, clock: float) -> Awaitable[ShardResult]:
        """Apply batch ``batch_id`` (or answer ``replay_from`` after a restart)."""

    def checkpoint(self, checkpoint_id: int, batch_id: int) -> Awaitable[str | None]:
        """Write a snapshot if exactly ``batch_id`` is applied; None otherwise."""

    def stats(self) -> Awaitable[dict[str, Any]]:
        """Counters, with ``last_batch_id``."""

    def rewind(self, batch_id: int) -> Awaitable[bool]:
        """Back to the latest checkpoint (at ``batch_id``) if batches after it were applied."""


class TrainerPort(Protocol):
    """Where training rows go; one call at a time is in flight (``TrainerFeed``)."""

    def add_rows(self, rows: pd.DataFrame) -> Awaitable[Any]:
        """Take a frame of labelled training rows."""


class MonitorPort(Protocol):
    """Sees every labelled row (fire and forget)."""

    def observe_rows(self, rows: pd.DataFrame) -> Any:
        """Take a frame of labelled training rows."""


class Coordinator:
    """Drives the data plane: source -> shards -> trainer, with aligned checkpoints and exactly-once replay."""

    def __init__(self, source: Source, shards: Sequence[ShardPort], trainer: TrainerPort | None = None,
                 monitor: MonitorPort | None = None, *, lateness_s: float = 0.0, max_in_flight: int = 2,
                 store: CheckpointStore | None = None, checkpoint_every_s: float = 60.0,
                 pace_events_per_s: float | None = None, offload: bool = True, replay: bool = True,
                 now: Callable[[], float] = time.time, feature_names: Sequence[str] = (),
                 event_time: EventTimeGuard | None = None, trainer_queue: int = 8,
                 trainer_flush_s: float = 120.0, replay_max_bytes: int | None = None) -> None:
        self.source, self.shards, self.trainer, self.monitor = source, list(shards), trainer, monitor
        self.replay = replay  # False for shards that never restart (in process): no replay log to keep
        self.max_in_flight, self.store, self.checkpoint_every_s = max_in_flight, store, checkpoint_every_s
        self.pace, self.offload, self.now = pace_events_per_s, offload, now
        self.partitioner = Partitioner(len(self.shards))
        self.watermark = Watermark(lateness_s)
        self.guard = event_time or EventTimeGuard.from_config(StreamConfig())
        manifest = store.latest_manifest() if store else None
        if manifest is not None:
            self.position = manifest["position"]
            self.batch_id = manifest["batch_id"]
            # After any newer checkpoint that was found damaged: its id is taken.
            self.checkpoint_id = max(manifest["checkpoint_id"], getattr(store, "last_id", lambda: 0)())
            self.watermark.restore({"max_times": manifest.get("max_event_times")})
            self.guard.heal(self.watermark)  # a clock poisoned before the guard existed is not resumed
        else:
            self.position = source.initial_position()
            self.batch_id = 0
            self.checkpoint_id = 0
        self.resumed_from = manifest
        self._rewind_due = manifest is not None  # shards may have applied batches after it: see _rewind
        if isinstance(self.position, dict):  # partitioned source (Kafka): one clock per partition
            self.watermark.expect(self.position)
        self.log = ReplayLog(replay_max_bytes if store is None else None)  # a checkpoint truncates it
        self.collected = [self.batch_id] * len(self.shards)
        self.in_flight: list[deque[tuple[int, Awaitable[ShardResult]]]] = [deque() for _ in self.shards]
        self.rows_out: list[pd.DataFrame] = []
        self.counters: Counter[str] = Counter()
        self.feed = TrainerFeed(trainer, self.counters, trainer_queue) if trainer is not None else None
        self.trainer_flush_s = trainer_flush_s
        self.reasons: Counter[str] = Counter()
        self.nulls: Counter[str] = Counter()
        self.per_shard_accepted = [0] * len(self.shards)
        self.skew = empty_skew(list(feature_names))  # served vs point-in-time vectors, summed over batches
        self._stop = False
        self._running = False
        self._last_checkpoint = now()

    @classmethod
    def from_config(cls, cfg: Config, shards: Sequence[ShardPort], trainer: TrainerPort | None = None,
                    monitor: MonitorPort | None = None) -> "Coordinator":
        """The configured source, checkpoint store, in-flight bound and pacing."""
        return cls(
            make_source(cfg), shards, trainer, monitor, lateness_s=cfg.features.allowed_lateness_s,
            max_in_flight=cfg.shards.max_in_flight,
            store=CheckpointStore(cfg.checkpoints.uri) if cfg.checkpoints.enabled else None,
            checkpoint_every_s=cfg.checkpoints.interval_s,
            # Pacing is for the generator; a file source paces itself (speed) and Kafka is paced by producers.
            pace_events_per_s=cfg.stream.max_events_per_s if cfg.stream.source == "synthetic" else None,
            feature_names=cfg.feature_names(), event_time=EventTimeGuard.from_config(cfg.stream),
            replay_max_bytes=cfg.stream.replay_max_bytes,
        )

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Source calls block (files, Kafka, an actor): off the event loop, unless everything runs in process.
        return await asyncio.to_thread(fn, *args) if self.offload else fn(*args)

    async def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Read and dispatch until stopped, the source ends, or ``duration_s`` passes."""
        self._running = True
        started = self.now()
        sent_events = 0
        try:
            while not self._stop and not self.source.at_end(self.position):
                if duration_s is not None and self.now() - started > duration_s:
                    break
                sent_events += await self.step()
                if self.pace:
                    ahead = sent_events / self.pace - (self.now() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            await self.finish()
        finally:
            self._running = False
            await self._io(self.source.close)
        return self.stats()

    async def step(self) -> int:
        """Read one batch, dispatch it, forward the rows collected, checkpoint when due; the events read
        (counted only when pacing needs them)."""
        if self._rewind_due:
            await self._rewind()
        df, next_position = await self._io(self.source.read, self.position)
        events = 0
        if len(df):
            await self._dispatch(df)
            if self.pace:
                events = int((df[KIND] == "event").sum()) if KIND in df else len(df)
        else:
            await asyncio.sleep(0.05)  # nothing there yet (unbounded source)
        self.position = next_position
        await self._forward_rows()
        if self.store and self.now() - self._last_checkpoint >= self.checkpoint_every_s:
            try:
                await self.checkpoint()
            except ReplayGap:
                raise
            except Exception:  # storage down beyond the retries: the stream goes on, the next interval tries again
                self.counters["checkpoint_failures"] += 1
                self._last_checkpoint = self.now()
                log.exception("checkpoint failed; retried at the next interval")
        return events

    async def finish(self) -> None:
        """Collect every answer, take the last checkpoint, hand over the last rows."""
        await self._drain()
        if self.store:
            await self.checkpoint()
        await self._forward_rows(final=True)

    async def _dispatch(self, df: pd.DataFrame) -> None:
        self.batch_id += 1
        self.counters["rows_read"] += len(df)
        df, rejected = self.guard.check(df, self.watermark)  # before the watermark sees a time from 2100
        if rejected:
            self.reasons.update(rejected)
            self.counters["rejected"] += sum(rejected.values())
        wm = self.watermark.observe(df)
        clock = self.watermark.clock
        parts = self.partitioner.split(df)
        if self.replay:
            self.log.append(self.batch_id, wm, clock, parts)
        self.counters["batches"] += 1
        for i, part in enumerate(parts):
            while len(self.in_flight[i]) >= max(self.max_in_flight, 1):
                await self._collect_oldest(i)
            self.in_flight[i].append((self.batch_id, self.shards[i].process(self.batch_id, part, wm, clock)))
        if self.max_in_flight == 0:
            await self._drain()

    async def _collect_oldest(self, i: int) -> None:
        _, pending = self.in_flight[i].popleft()
        result: ShardResult = await pending
        if result.replay_from is not None:
            await self._recover(i, result.replay_from)
        else:
            self._consume(i, result)

    def _consume(self, i: int, result: ShardResult) -> None:
        if result.batch_id <= self.collected[i]:
            return  # a replayed batch whose result was collected before the shard restarted
        self.collected[i] = result.batch_id
        self.counters["accepted"] += result.accepted
        self.counters["rejected"] += result.rejected
        self.counters["events"] += result.events
        self.reasons.update(result.reasons)
        self.nulls.update(result.nulls)
        self.counters["event_rows"] += result.event_rows
        self.per_shard_accepted[i] += result.accepted
        add_skew(self.skew, result.skew)
        if result.training_rows is not None and len(result.training_rows):
            self.rows_out.append(result.training_rows)

    async def _recover(self, i: int, applied_upto: int) -> None:
        """Shard ``i`` restarted from a checkpoint at ``applied_upto``: resend every later batch, in order."""
        self.counters["shard_recoveries"] += 1
        stale = list(self.in_flight[i])
        self.in_flight[i].clear()
        for _, pending in stale:  # sent past the gap; they answer replay_from and apply nothing
            await pending
        upto = applied_upto
        while True:
            # Checkpoints off: batches dropped past the log's cap are sent empty (the shard misses them).
            stand_ins = self.log.skipped(upto) if self.store is None else []
            self.counters["replay_skipped_batches"] += len(stand_ins)
            missing = self.log.batches[0].batch_id - 1 if self.log.batches else self.batch_id
            if (stand_ins[-1].batch_id if stand_ins else upto) < missing:
                # The shard came back older than anything the replay log holds (its checkpoint is gone):
                # replaying cannot make it whole, so stop instead of looping.
                raise ReplayGap(f"shard {i} restarted at batch {upto}, but replay starts after {missing}: "
                                      "its checkpoint is missing or older than the last manifest")
            restarted = None
            for b in stand_ins + self.log.after(upto):
                result: ShardResult = await self.shards[i].process(b.batch_id, b.parts[i], b.watermark, b.clock)
                if result.replay_from is not None:
                    restarted = result.replay_from  # it died again during the replay
                    break
                self._consume(i, result)
                self.counters["replayed_batches"] += 1
            if restarted is None:
                return
            upto = restarted

    async def _rewind(self) -> None:
        """Resumed from a checkpoint: shards that applied later batches go back to it before anything is sent,
        since the re-read source may cut those batches differently (a grown HTTP log or Kafka partition)."""
        for shard in self.shards:
            self.counters["shards_rewound"] += int(bool(await shard.rewind(self.batch_id)))
        self._rewind_due = False

    async def _drain(self) -> None:
        for i in range(len(self.shards)):
            while self.in_flight[i]:
                await self._collect_oldest(i)

    async def checkpoint(self) -> dict[str, Any]:
        """Aligned checkpoint: every shard snapshots after the same batch, then the manifest and the commit."""
        if self.store is None:
            raise CheckpointError("checkpoints are disabled: no checkpoint store")
        await self._drain()
        self.checkpoint_id += 1
        cid, bid = self.checkpoint_id, self.batch_id
        for i, shard in enumerate(self.shards):
            while True:
                written = await shard.checkpoint(cid, bid)
                if written is not None:
                    break
                # The shard restarted since we drained it: bring it back to ``bid`` first.
                applied = (await shard.stats())["last_batch_id"]
                if applied > bid:  # never true after _rewind; asking again would loop forever
                    raise CheckpointError(f"shard {i} is at batch {applied}, past the coordinator's {bid}")
                await self._recover(i, applied)
        self.store.write_manifest(cid, batch_id=bid, position=self.position, num_shards=len(self.shards),
                                  extra={"max_event_times": self.watermark.snapshot()["max_times"]})
        await self._io(self.source.commit, self.position)
        self.log.truncate(bid)
        self._last_checkpoint = self.now()
        self.counters["checkpoints"] += 1
        return {"checkpoint_id": cid, "batch_id": bid, "position": self.position}

    async def _forward_rows(self, final: bool = False) -> None:
        if self.monitor is not None and self.rows_out:
            # Labelled rows: the live-accuracy join with logged predictions, drift, stream accuracy.
            self.monitor.observe_rows(pd.concat(self.rows_out, ignore_index=True))
        if self.feed is None:
            self.counters["training_rows"] += sum(len(r) for r in self.rows_out)
            self.rows_out.clear()
            return
        if self.rows_out:
            self.feed.offer(pd.concat(self.rows_out, ignore_index=True))
            self.rows_out.clear()
        if final:
            await self.feed.flush(self.trainer_flush_s)

    def set_source(self, source: Source) -> None:
        """Read from ``source`` instead of the configured one (benchmarks, embedding); before ``run``."""
        self.source = source
        self.position = source.initial_position()

    def stop(self) -> None:
        """Ask the run loop to finish after the current batch (it drains and checkpoints)."""
        self._stop = True

    def stats(self) -> dict[str, Any]:
        """Position, events, accepted/rejected rows by reason, rows per shard, checkpoints, recoveries."""
        return {
            "position": self.position,
            "batch_id": self.batch_id,
            "running": self._running,
            "resumed_from_batch": self.resumed_from["batch_id"] if self.resumed_from else None,
            **dict(self.counters),
            "reasons": dict(self.reasons),
            "null_rate": {f: n / max(self.counters["event_rows"], 1) for f, n in self.nulls.items()},
            "watermark_lag_s": (self.watermark.clock - self.watermark.value)
            if np.isfinite(self.watermark.value) else None,
            "per_shard_accepted": list(self.per_shard_accepted),
            **{k: self.counters[k] for k in ("training_rows_dropped", "trainer_errors", "checkpoint_failures")},
            "trainer_queue": self.feed.queued if self.feed is not None else 0, **self.log.stats(),
            "damaged_checkpoints": list(getattr(self.store, "damaged", [])),  # skipped at start, by path
            "skew": copy.deepcopy(self.skew),
        }
