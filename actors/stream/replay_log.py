"""The coordinator's replay log: batches sent since the last complete checkpoint, for a restarted shard.

With checkpoints on, each checkpoint truncates the log, so it holds one interval of batches. With
checkpoints off nothing truncates it, so it is capped in bytes (``stream.replay_max_bytes``): past
the cap the oldest batches go, counted (``dropped``, ``dropped_bytes``). A shard that restarts
(empty: there is no checkpoint) is then replayed what is kept; the batches dropped before are sent
as empty stand-ins (``skipped``), so the shard moves past them applying nothing: it misses their
events, as it would miss anything older than its windows. Memory stays flat however long the
stream runs.

Example:
    >>> import pandas as pd
    >>> part = pd.DataFrame({"entity": ["a" * 100] * 10})
    >>> log = ReplayLog(max_bytes=2 * frame_bytes(part))
    >>> for b in (1, 2, 3):
    ...     log.append(b, 0.0, 0.0, [part])
    >>> [b.batch_id for b in log.batches], log.dropped, [b.batch_id for b in log.skipped(0)]
    ([2, 3], 1, [1])
    >>> log.truncate(2); [b.batch_id for b in log.after(0)], log.bytes == frame_bytes(part)
    ([3], True)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pandas as pd


def frame_bytes(df: pd.DataFrame) -> int:
    """Bytes a frame holds (text counted by its characters)."""
    return int(df.memory_usage(index=False, deep=True).sum())


@dataclass
class Batch:
    """One dispatched batch: its id, the watermark and clock it was sent with, one part per shard."""

    batch_id: int
    watermark: float
    clock: float
    parts: list[pd.DataFrame]
    size: int = 0


class ReplayLog:
    """Batches sent since the last complete checkpoint, at most ``max_bytes`` of them (None: no cap)."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.batches: deque[Batch] = deque()
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped = 0
        self.dropped_bytes = 0
        self.dropped_upto = 0  # the newest batch dropped past the cap
        self._stand_in: Batch | None = None  # its watermark, clock and empty parts

    def append(self, batch_id: int, watermark: float, clock: float, parts: list[pd.DataFrame]) -> None:
        """Remember a dispatched batch; past the cap the oldest go (the newest is always kept)."""
        size = sum(frame_bytes(p) for p in parts) if self.max_bytes is not None else 0
        self.batches.append(Batch(batch_id, watermark, clock, parts, size))
        self.bytes += size
        while self.max_bytes is not None and self.bytes > self.max_bytes and len(self.batches) > 1:
            old = self.batches.popleft()
            self.bytes -= old.size
            self.dropped += 1
            self.dropped_bytes += old.size
            self.dropped_upto = old.batch_id
            self._stand_in = Batch(old.batch_id, old.watermark, old.clock, [p.iloc[:0] for p in old.parts])

    def after(self, batch_id: int) -> list[Batch]:
        """Batches with an id greater than ``batch_id``, in order."""
        return [b for b in self.batches if b.batch_id > batch_id]

    def skipped(self, batch_id: int) -> list[Batch]:
        """Empty stand-ins for the dropped batches after ``batch_id``, in order."""
        s = self._stand_in
        if s is None or batch_id >= self.dropped_upto:
            return []
        return [Batch(b, s.watermark, s.clock, s.parts) for b in range(batch_id + 1, self.dropped_upto + 1)]

    def truncate(self, upto: int) -> None:
        """Forget batches up to and including ``upto`` (they are in a checkpoint)."""
        while self.batches and self.batches[0].batch_id <= upto:
            self.bytes -= self.batches.popleft().size

    def stats(self) -> dict[str, int]:
        """Batches and bytes held, and those dropped past the cap."""
        return {"replay_log_batches": len(self.batches), "replay_log_bytes": self.bytes,
                "replay_dropped_batches": self.dropped, "replay_dropped_bytes": self.dropped_bytes}
