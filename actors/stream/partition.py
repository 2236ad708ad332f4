"""How the coordinator splits and judges a batch: the entity-hash ``Partitioner`` and the stream-wide ``Watermark``.

Both are plain objects shared by the Ray coordinator and the in-process ``LocalRunner``.

Example:
    >>> import pandas as pd
    >>> parts = Partitioner(2).split(pd.DataFrame({"entity": ["a", "b", "c", "a"], "v": [1, 2, 3, 4]}))
    >>> sorted(len(p) for p in parts), sum(len(p) for p in parts)
    ([1, 3], 4)
    >>> wm = Watermark(lateness_s=5.0)
    >>> wm.observe(pd.DataFrame({"event_time": [100.0, 90.0]})), wm.value, wm.clock
    (-inf, 95.0, 100.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from streamfit.schema import ENTITY, EVENT_TIME, PARTITION, shard_of


class Partitioner:
    """Splits a batch into one frame per shard by the stable hash of the entity key."""

    def __init__(self, num_shards: int) -> None:
        self.num_shards = num_shards

    def split(self, df: pd.DataFrame) -> list[pd.DataFrame]:
        """Rows of ``df`` for each shard, each part in its original order."""
        if self.num_shards == 1 and isinstance(df.index, pd.RangeIndex) and df.index.start == 0 \
                and df.index.step == 1:
            return [df]  # one shard owns every row: skip hashing the keys (the in-process runner's case)
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

    def snapshot(self) -> dict[str, Any]:
        """The latest event time per partition (what a checkpoint manifest records)."""
        return {"max_times": dict(self.max_times)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Resume from ``snapshot()`` output."""
        self.max_times = {str(p): float(t) for p, t in (snap.get("max_times") or {}).items()}
