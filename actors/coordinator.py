"""The coordinator: reads the source, hash-partitions each batch to the shards, forwards training rows.

``Partitioner`` is the plain, unit-tested piece; ``CoordinatorActor`` is an async Ray
actor whose ``run`` loop keeps a bounded number of batches in flight per shard
(backpressure) while ``stats`` and ``stop`` stay callable.

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
from typing import Any

import pandas as pd
import ray

from streamfit.config import Config
from streamfit.schema import ENTITY, EVENT_TIME, shard_of
from streamfit.actors.sources import SyntheticSource


class Partitioner:
    """Splits a batch into one frame per shard by the stable hash of the entity key."""

    def __init__(self, num_shards: int) -> None:
        self.num_shards = num_shards

    def split(self, df: pd.DataFrame) -> list[pd.DataFrame]:
        """Rows of ``df`` for each shard, in their original order."""
        owner = shard_of(df[ENTITY].fillna("").values, self.num_shards)
        return [df[owner == i].reset_index(drop=True) for i in range(self.num_shards)]


class Watermark:
    """Stream-wide watermark: max event time seen minus the allowed lateness."""

    def __init__(self, lateness_s: float) -> None:
        self.lateness_s = lateness_s
        self.max_time = float("-inf")

    @property
    def value(self) -> float:
        """Events older than this are late."""
        return self.max_time - self.lateness_s

    def observe(self, df: pd.DataFrame) -> float:
        """Return the watermark a batch is judged by (from earlier batches), then advance past it."""
        before = self.value
        times = pd.to_numeric(df[EVENT_TIME], errors="coerce")
        if times.notna().any():
            self.max_time = max(self.max_time, float(times.max()))
        return before


@ray.remote(num_cpus=0, max_restarts=0)
class CoordinatorActor:
    """Drives the data plane: source -> shards -> trainer."""

    def __init__(self, cfg: Config, shards: list[Any], trainer: Any) -> None:
        self.cfg = cfg
        self.source = SyntheticSource(cfg.stream, cfg.features)
        self.shards = shards
        self.trainer = trainer
        self.partitioner = Partitioner(len(shards))
        self.watermark = Watermark(cfg.features.allowed_lateness_s)
        self.position = 0
        self.batch_id = 0
        self.counters: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.per_shard_events = [0] * len(shards)
        self._stop = False
        self._running = False

    async def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Read and dispatch until stopped, the source ends, or ``duration_s`` passes."""
        self._running = True
        started = time.time()
        in_flight: list[deque] = [deque() for _ in self.shards]
        trainer_call = None
        end = self.source.end_position()
        pace = self.cfg.stream.max_events_per_s
        try:
            while not self._stop and (end is None or self.position < end):
                if duration_s is not None and time.time() - started > duration_s:
                    break
                df = await asyncio.to_thread(self.source.read, self.position)
                wm = self.watermark.observe(df)
                self.batch_id += 1
                rows = []
                for i, part in enumerate(self.partitioner.split(df)):
                    if len(in_flight[i]) >= self.cfg.shards.max_in_flight:
                        rows.append(await self._collect(i, in_flight[i].popleft()))
                    in_flight[i].append(self.shards[i].process.remote(self.batch_id, part, wm))
                self.position += 1
                self.counters["batches"] += 1
                self.counters["events"] += int((df["kind"] == "event").sum())
                trainer_call = await self._forward(rows, trainer_call)
                if pace:
                    ahead = self.counters["events"] / pace - (time.time() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            for i, q in enumerate(in_flight):
                rows = [await self._collect(i, q.popleft()) for _ in range(len(q))]
                trainer_call = await self._forward(rows, trainer_call)
            if trainer_call is not None:
                await trainer_call
        finally:
            self._running = False
        return self.stats()

    async def _collect(self, shard: int, ref: Any) -> pd.DataFrame:
        result = await ref
        self.counters["accepted"] += result.accepted
        self.counters["rejected"] += result.rejected
        self.reasons.update(result.reasons)
        self.per_shard_events[shard] += result.accepted
        return result.training_rows

    async def _forward(self, rows: list[pd.DataFrame], previous: Any) -> Any:
        rows = [r for r in rows if r is not None and len(r)]
        if not rows:
            return previous
        if previous is not None:
            await previous  # at most one trainer call in flight: the trainer paces the stream
        batch = pd.concat(rows, ignore_index=True)
        self.counters["training_rows"] += len(batch)
        return self.trainer.add_rows.remote(batch)

    def stop(self) -> None:
        """Ask the run loop to finish after the current batch."""
        self._stop = True

    def stats(self) -> dict[str, Any]:
        """Position, events read, accepted/rejected rows by reason, rows per shard."""
        return {
            "position": self.position,
            "running": self._running,
            **dict(self.counters),
            "reasons": dict(self.reasons),
            "per_shard_accepted": list(self.per_shard_events),
        }
