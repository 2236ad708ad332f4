"""The coordinator: reads the source, hash-partitions each batch to the shards, checkpoints, recovers.

``Partitioner``, ``Watermark`` and ``ReplayLog`` are plain, unit-tested pieces;
``CoordinatorActor`` is an async Ray actor whose ``run`` loop

- keeps at most ``shards.max_in_flight`` batches in flight per shard (a slow shard slows
  the source; memory stays bounded),
- every ``checkpoints.interval_s`` drains the shards, has each write its snapshot for the
  same batch id, then writes the manifest and commits the source position,
- keeps the batches since the last checkpoint, so that a shard restarted by Ray (which
  reloads the last checkpoint) is sent exactly the batches it lost; results of batches
  already collected are discarded, so nothing is counted or emitted twice.

Example:
    >>> import pandas as pd
    >>> parts = Partitioner(2).split(pd.DataFrame({"entity": ["a", "b", "c", "a"], "v": [1, 2, 3, 4]}))
    >>> sorted(len(p) for p in parts), sum(len(p) for p in parts)
    ([1, 3], 4)
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray

from streamfit.config import Config
from streamfit.schema import ENTITY, EVENT_TIME, KIND, PARTITION, shard_of
from streamfit.actors.stream.checkpoint import CheckpointError, CheckpointStore
from streamfit.actors.stream.feature_shard import ShardResult
from streamfit.actors.stream.sources import make_source


class Partitioner:
    """Splits a batch into one frame per shard by the stable hash of the entity key."""

    def __init__(self, num_shards: int) -> None:
        self.num_shards = num_shards

    def split(self, df: pd.DataFrame) -> list[pd.DataFrame]:
        """Rows of ``df`` for each shard, each part in its original order."""
        owner = shard_of(df[ENTITY].values, self.num_shards) if len(df) else np.zeros(0, np.int64)
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.num_shards + 1))
        taken = df.take(order).reset_index(drop=True)
        return [taken.iloc[bounds[i]:bounds[i + 1]].reset_index(drop=True) for i in range(self.num_shards)]


class Watermark:
    """Stream-wide watermark: the smallest per-partition max event time, minus the allowed lateness.

    A source whose rows carry a ``_partition`` column (Kafka) gets one clock per partition, so
    a partition read ahead of another does not make the other's events late (as in Flink and
    Kafka Streams); other sources are one partition.
    """

    def __init__(self, lateness_s: float, max_times: dict[str, float] | None = None) -> None:
        self.lateness_s = lateness_s
        self.max_times: dict[str, float] = dict(max_times or {})

    def expect(self, partitions: Any) -> None:
        """Partitions that will deliver data: the watermark waits until each has been seen."""
        for p in partitions:
            self.max_times.setdefault(str(p), float("-inf"))

    @property
    def clock(self) -> float:
        """The latest event time seen on any partition."""
        return max(self.max_times.values(), default=float("-inf"))

    @property
    def value(self) -> float:
        """Events older than this are late."""
        if not self.max_times:
            return float("-inf")
        return min(self.max_times.values()) - self.lateness_s

    def observe(self, df: pd.DataFrame) -> float:
        """Return the watermark a batch is judged by (from earlier batches), then advance past it."""
        before = self.value
        if len(df) and EVENT_TIME in df:
            times = pd.to_numeric(df[EVENT_TIME], errors="coerce").to_numpy(dtype=float)
            parts = df[PARTITION].astype(str).to_numpy() if PARTITION in df else np.full(len(df), "")
            ok = np.isfinite(times)
            if ok.any():
                frame = pd.DataFrame({"p": parts[ok], "t": times[ok]}).groupby("p")["t"].max()
                for p, t in frame.items():
                    self.max_times[p] = max(self.max_times.get(p, float("-inf")), float(t))
        return before


@dataclass
class _Batch:
    batch_id: int
    watermark: float
    clock: float
    parts: list[pd.DataFrame]


class ReplayLog:
    """Batches sent since the last complete checkpoint, for replay to a restarted shard."""

    def __init__(self) -> None:
        self.batches: deque[_Batch] = deque()

    def append(self, batch_id: int, watermark: float, clock: float, parts: list[pd.DataFrame]) -> None:
        """Remember a dispatched batch."""
        self.batches.append(_Batch(batch_id, watermark, clock, parts))

    def after(self, batch_id: int) -> list[_Batch]:
        """Batches with an id greater than ``batch_id``, in order."""
        return [b for b in self.batches if b.batch_id > batch_id]

    def truncate(self, upto: int) -> None:
        """Forget batches up to and including ``upto`` (they are in a checkpoint)."""
        while self.batches and self.batches[0].batch_id <= upto:
            self.batches.popleft()


@ray.remote(num_cpus=0, max_restarts=0)
class CoordinatorActor:
    """Drives the data plane: source -> shards -> trainer, with aligned checkpoints."""

    def __init__(self, cfg: Config, shards: list[Any], trainer: Any | None, monitor: Any | None = None) -> None:
        self.cfg = cfg
        self.monitor = monitor
        self.source = make_source(cfg)
        self.shards = shards
        self.trainer = trainer
        self.partitioner = Partitioner(len(shards))
        self.store = CheckpointStore(cfg.checkpoints.uri) if cfg.checkpoints.enabled else None
        manifest = self.store.latest_manifest() if self.store else None
        if manifest is not None:
            self.position = manifest["position"]
            self.batch_id = manifest["batch_id"]
            self.checkpoint_id = manifest["checkpoint_id"]
            self.watermark = Watermark(cfg.features.allowed_lateness_s, manifest.get("max_event_times"))
        else:
            self.position = self.source.initial_position()
            self.batch_id = 0
            self.checkpoint_id = 0
            self.watermark = Watermark(cfg.features.allowed_lateness_s)
        self.resumed_from = manifest
        if isinstance(self.position, dict):  # partitioned source (Kafka): one clock per partition
            self.watermark.expect(self.position)
        self.log = ReplayLog()
        self.collected = [self.batch_id] * len(shards)
        self.in_flight: list[deque[tuple[int, Any]]] = [deque() for _ in shards]
        self.rows_out: list[pd.DataFrame] = []
        self.trainer_call: Any = None
        self.counters: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.nulls: Counter[str] = Counter()
        self.per_shard_accepted = [0] * len(shards)
        self._stop = False
        self._running = False
        self._last_checkpoint = time.time()

    async def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Read and dispatch until stopped, the source ends, or ``duration_s`` passes."""
        self._running = True
        started = time.time()
        # Pacing is for the generator; a file source paces itself (speed) and Kafka is paced by producers.
        pace = self.cfg.stream.max_events_per_s if self.cfg.stream.source == "synthetic" else None
        sent_events = 0
        try:
            while not self._stop and not self.source.at_end(self.position):
                if duration_s is not None and time.time() - started > duration_s:
                    break
                df, next_position = await asyncio.to_thread(self.source.read, self.position)
                if len(df):
                    await self._dispatch(df)
                    sent_events += int((df[KIND] == "event").sum()) if KIND in df else len(df)
                else:
                    await asyncio.sleep(0.05)  # nothing there yet (unbounded source)
                self.position = next_position
                await self._forward_rows()
                if self.store and time.time() - self._last_checkpoint >= self.cfg.checkpoints.interval_s:
                    await self.checkpoint()
                if pace:
                    ahead = sent_events / pace - (time.time() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            await self._drain()
            if self.store:
                await self.checkpoint()
            await self._forward_rows(final=True)
        finally:
            self._running = False
            await asyncio.to_thread(self.source.close)
        return self.stats()

    async def _dispatch(self, df: pd.DataFrame) -> None:
        self.batch_id += 1
        wm = self.watermark.observe(df)
        clock = self.watermark.clock
        parts = self.partitioner.split(df)
        self.log.append(self.batch_id, wm, clock, parts)
        self.counters["batches"] += 1
        self.counters["rows_read"] += len(df)
        for i, part in enumerate(parts):
            while len(self.in_flight[i]) >= self.cfg.shards.max_in_flight:
                await self._collect_oldest(i)
            self.in_flight[i].append((self.batch_id, self.shards[i].process.remote(self.batch_id, part, wm, clock)))

    async def _collect_oldest(self, i: int) -> None:
        _, ref = self.in_flight[i].popleft()
        result: ShardResult = await ref
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
        if result.training_rows is not None and len(result.training_rows):
            self.rows_out.append(result.training_rows)

    async def _recover(self, i: int, applied_upto: int) -> None:
        """Shard ``i`` restarted from a checkpoint at ``applied_upto``: resend every later batch, in order."""
        self.counters["shard_recoveries"] += 1
        stale = list(self.in_flight[i])
        self.in_flight[i].clear()
        for _, ref in stale:  # sent past the gap; they answer replay_from and apply nothing
            await ref
        upto = applied_upto
        while True:
            missing = self.log.batches[0].batch_id - 1 if self.log.batches else self.batch_id
            if upto < missing:
                # The shard came back older than anything the replay log holds (its checkpoint is gone):
                # replaying cannot make it whole, so stop instead of looping.
                raise CheckpointError(f"shard {i} restarted at batch {upto}, but replay starts after {missing}: "
                                      "its checkpoint is missing or older than the last manifest")
            restarted = None
            for b in self.log.after(upto):
                result: ShardResult = await self.shards[i].process.remote(b.batch_id, b.parts[i], b.watermark,
                                                                          b.clock)
                if result.replay_from is not None:
                    restarted = result.replay_from  # it died again during the replay
                    break
                self._consume(i, result)
                self.counters["replayed_batches"] += 1
            if restarted is None:
                return
            upto = restarted

    async def _drain(self) -> None:
        for i in range(len(self.shards)):
            while self.in_flight[i]:
                await self._collect_oldest(i)

    async def checkpoint(self) -> dict[str, Any]:
        """Aligned checkpoint: every shard snapshots after the same batch, then the manifest and the commit."""
        await self._drain()
        self.checkpoint_id += 1
        cid, bid = self.checkpoint_id, self.batch_id
        for i, shard in enumerate(self.shards):
            while True:
                written = await shard.checkpoint.remote(cid, bid)
                if written is not None:
                    break
                # The shard restarted since we drained it: bring it back to ``bid`` first.
                applied = (await shard.stats.remote())["last_batch_id"]
                await self._recover(i, applied)
        self.store.write_manifest(cid, batch_id=bid, position=self.position, num_shards=len(self.shards),
                                  extra={"max_event_times": self.watermark.max_times})
        await asyncio.to_thread(self.source.commit, self.position)
        self.log.truncate(bid)
        self._last_checkpoint = time.time()
        self.counters["checkpoints"] += 1
        return {"checkpoint_id": cid, "batch_id": bid, "position": self.position}

    async def _forward_rows(self, final: bool = False) -> None:
        if self.monitor is not None and self.rows_out:
            # Labelled rows: the live-accuracy join with logged predictions, drift, stream accuracy.
            self.monitor.observe_rows.remote(pd.concat(self.rows_out, ignore_index=True))
        if self.trainer is None:
            self.counters["training_rows"] += sum(len(r) for r in self.rows_out)
            self.rows_out.clear()
            return
        if self.rows_out:
            if self.trainer_call is not None:
                await self.trainer_call  # at most one trainer call in flight: the trainer paces the stream
            batch = pd.concat(self.rows_out, ignore_index=True)
            self.rows_out.clear()
            self.counters["training_rows"] += len(batch)
            self.trainer_call = self.trainer.add_rows.remote(batch)
        if final and self.trainer_call is not None:
            await self.trainer_call

    def set_source(self, source: Any) -> None:
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
        }
