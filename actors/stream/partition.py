"""How the coordinator splits and judges a batch: the entity-hash ``Partitioner``, the stream-wide
``Watermark`` and the ``EventTimeGuard`` that keeps event times a client got wrong out of it.

All are plain objects shared by the Ray coordinator and the in-process ``LocalRunner``.

Example:
    >>> import pandas as pd
    >>> parts = Partitioner(2).split(pd.DataFrame({"entity": ["a", "b", "c", "a"], "v": [1, 2, 3, 4]}))
    >>> sorted(len(p) for p in parts), sum(len(p) for p in parts)
    ([1, 3], 4)
    >>> wm = Watermark(lateness_s=5.0)
    >>> wm.observe(pd.DataFrame({"event_time": [100.0, 90.0]})), wm.value, wm.clock
    (-inf, 95.0, 100.0)
    >>> guard = EventTimeGuard(max_skew_s=300.0, max_age_s=50.0, wall=lambda: 1000.0)
    >>> kept, reasons = guard.check(pd.DataFrame({"event_time": [4e9, 99.0, 20.0]}), wm)
    >>> kept["event_time"].tolist(), reasons
    ([99.0], {'event_time_future': 1, 'event_time_past': 1})
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from streamfit.config import StreamConfig
from streamfit.schema import ENTITY, ENTITY_HASH, EVENT_TIME, PARTITION, hash_keys, shard_of_hash

log = logging.getLogger(__name__)


class Partitioner:
    """Splits a batch into one frame per shard by the stable hash of the entity key (carried in ``_entity_hash``)."""

    def __init__(self, num_shards: int) -> None:
        self.num_shards = num_shards

    def split(self, df: pd.DataFrame) -> list[pd.DataFrame]:
        """Rows of ``df`` for each shard, each part in its original order."""
        if self.num_shards == 1 and isinstance(df.index, pd.RangeIndex) and df.index.start == 0 \
                and df.index.step == 1:
            return [df]  # one shard owns every row: skip hashing the keys (the in-process runner's case)
        hashes = hash_keys(df[ENTITY].values) if len(df) else np.zeros(0, np.uint64)
        owner = shard_of_hash(hashes, self.num_shards)
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.num_shards + 1))
        taken = df.take(order).reset_index(drop=True)
        if len(df):
            taken[ENTITY_HASH] = hashes[order]  # the shard keys its state by this hash: computed once, here
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
        if len(df) and EVENT_TIME in df and PARTITION not in df:  # one partition: no grouping to do
            times = _times_and_partitions(df)[0]
            ok = np.isfinite(times)
            if ok.any():
                self.max_times[""] = max(self.max_times.get("", float("-inf")), float(times[ok].max()))
        elif len(df) and EVENT_TIME in df:
            times, parts = _times_and_partitions(df)
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


def _times_and_partitions(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    times = pd.to_numeric(df[EVENT_TIME], errors="coerce").to_numpy(dtype=float) if EVENT_TIME in df \
        else np.full(len(df), np.nan)
    parts = df[PARTITION].astype(str).to_numpy() if PARTITION in df else np.full(len(df), "")
    return times, parts


class EventTimeGuard:
    """Rejects rows whose event time cannot be right, before they reach the watermark: the same rule for every source.

    - further than ``max_skew_s`` ahead of the wall clock (``wall``, the processing clock):
      ``event_time_future``. A replay of old data is never ahead of it.
    - further than ``max_age_s`` behind the latest event time of the row's own partition
      (the stream's clock, counting this batch): ``event_time_past``. Measured against the
      stream, not the wall clock, so a replay of a 2019 file is judged against 2019 and a
      Kafka partition that lags judged against itself. ``None`` switches either rule off.
    """

    def __init__(self, max_skew_s: float | None = None, max_age_s: float | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.max_skew_s, self.max_age_s, self.wall = max_skew_s, max_age_s, wall

    @classmethod
    def from_config(cls, stream: StreamConfig) -> "EventTimeGuard":
        """The limits of ``stream.max_event_time_skew_s`` and ``stream.max_event_age_s``."""
        return cls(stream.max_event_time_skew_s, stream.max_event_age_s)

    def check(self, df: pd.DataFrame, watermark: Watermark) -> tuple[pd.DataFrame, dict[str, int]]:
        """(the rows kept, in order; rejected rows per reason); rows without a usable time are left to the shards."""
        if not len(df) or (self.max_skew_s is None and self.max_age_s is None):
            return df, {}
        times, parts = _times_and_partitions(df)
        future = times > self.wall() + self.max_skew_s if self.max_skew_s is not None else np.zeros(len(df), bool)
        past = np.zeros(len(df), bool)
        if self.max_age_s is not None:
            ok = np.isfinite(times) & ~future
            latest = pd.Series(times[ok]).groupby(parts[ok]).max().to_dict()
            names, which = np.unique(parts, return_inverse=True)
            clocks = np.array([max(watermark.max_times.get(p, float("-inf")), latest.get(p, float("-inf")))
                               for p in names.tolist()])
            past = ~future & (times < clocks[which] - self.max_age_s)
        reasons = {k: int(v) for k, v in (("event_time_future", future.sum()), ("event_time_past", past.sum())) if v}
        if not reasons:
            return df, {}
        return df[~(future | past)].reset_index(drop=True), reasons

    def heal(self, watermark: Watermark) -> list[str]:
        """Forget partition clocks ahead of the wall clock (a checkpoint written before this rule); returns them."""
        if self.max_skew_s is None:
            return []
        now = self.wall()
        poisoned = [p for p, t in watermark.max_times.items() if t > now + self.max_skew_s]
        for p in poisoned:
            log.warning("restored clock of partition %r is %.0f s ahead of the wall clock: forgotten",
                        p, watermark.max_times[p] - now)
            watermark.max_times[p] = float("-inf")
        return poisoned
