"""Per-entity event-time sliding-window state: count and means over the window (t - W, t].

Example:
    >>> w = EntityWindows(window_s=10.0, n_values=1)
    >>> w.update("a", 0.0, [2.0])
    (1, [2.0])
    >>> w.update("a", 5.0, [4.0])
    (2, [3.0])
    >>> w.update("a", 12.0, [6.0])  # the event at t=0 has left the window (2, 12]
    (2, [5.0])
"""

from __future__ import annotations

import bisect
from typing import Sequence


class _Entity:
    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[tuple[float, ...]] = []


class EntityWindows:
    """Events of each entity still inside the window, kept sorted by event time."""

    def __init__(self, window_s: float, n_values: int) -> None:
        self.window_s = window_s
        self.n_values = n_values
        self._state: dict[str, _Entity] = {}

    def __len__(self) -> int:
        return len(self._state)

    def update(self, entity: str, t: float, values: Sequence[float]) -> tuple[int, list[float]]:
        """Add one event and return (count, means) over (t - W, t] for its entity."""
        st = self._state.get(entity)
        if st is None:
            st = self._state[entity] = _Entity()
        pos = bisect.bisect_right(st.times, t)
        st.times.insert(pos, t)
        st.values.insert(pos, tuple(values))
        return self._aggregate(st, t)

    def _aggregate(self, st: _Entity, t: float) -> tuple[int, list[float]]:
        lo = bisect.bisect_right(st.times, t - self.window_s)
        hi = bisect.bisect_right(st.times, t)
        n = hi - lo
        if n == 0:
            return 0, [float("nan")] * self.n_values
        sums = [0.0] * self.n_values
        for vals in st.values[lo:hi]:
            for j, v in enumerate(vals):
                sums[j] += v
        return n, [s / n for s in sums]

    def current(self, entity: str, now: float) -> tuple[int, list[float]] | None:
        """Aggregates of an entity as of event time ``now`` without adding an event (None if unknown)."""
        st = self._state.get(entity)
        if st is None:
            return None
        return self._aggregate(st, now)

    def expire(self, watermark: float) -> None:
        """Forget events that can no longer fall in any window at or after the watermark."""
        horizon = watermark - self.window_s
        for key in list(self._state):
            st = self._state[key]
            cut = bisect.bisect_right(st.times, horizon)
            if cut:
                del st.times[:cut]
                del st.values[:cut]
            if not st.times:
                del self._state[key]
