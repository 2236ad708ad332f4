"""Feature vectors of events waiting for their label, keyed by event-id hash.

A shard computes an event's features when the event arrives (point in time) and keeps them
here until the label names the event; the pair is then a training row. Rows whose label
does not come within the timeout expire.

Example:
    >>> import numpy as np
    >>> p = PendingRows(n_features=1)
    >>> p.add(np.array([7, 8], np.uint64), np.array(["a", "b"]), np.array(["u", "u"]), np.array([1.0, 2.0]),
    ...       np.array([[0.5], [0.7]]))
    >>> found, pos = p.take(np.array([8, 9], np.uint64))
    >>> found.tolist(), p.feats[pos].tolist(), len(p)
    ([True, False], [[0.7]], 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np

COLUMNS = ("ids", "event_ids", "entities", "times", "feats")


class PendingRows:
    """Events kept until their labels arrive (a ``Stateful``)."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features
        self._clear()

    def _clear(self) -> None:
        self.index: dict[int, int] = {}
        self.ids = np.zeros(0, np.uint64)
        self.event_ids = np.zeros(0, object)
        self.entities = np.zeros(0, object)
        self.times = np.zeros(0, np.float64)
        self.feats = np.zeros((0, self.n_features), np.float64)
        self.alive = np.zeros(0, bool)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, ids: np.ndarray, event_ids: np.ndarray, entities: np.ndarray, times: np.ndarray,
            feats: np.ndarray) -> None:
        """Keep these events until their labels arrive."""
        base = len(self.ids)
        self.index.update(zip(ids.tolist(), range(base, base + len(ids))))
        self.ids = np.concatenate([self.ids, ids])
        self.event_ids = np.concatenate([self.event_ids, event_ids.astype(object)])
        self.entities = np.concatenate([self.entities, entities.astype(object)])
        self.times = np.concatenate([self.times, times])
        self.feats = np.vstack([self.feats, feats])
        self.alive = np.concatenate([self.alive, np.ones(len(ids), bool)])

    def take(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, row positions) for these ids; found rows leave the pending set."""
        pos = np.fromiter((self.index.pop(i, -1) for i in ids.tolist()), dtype=np.int64, count=len(ids))
        found = pos >= 0
        self.alive[pos[found]] = False
        return found, pos[found]

    def expire(self, before: float) -> int:
        """Drop events older than ``before`` (event time) still unlabelled; returns how many."""
        old = self.alive & (self.times < before)
        for i in self.ids[old].tolist():
            self.index.pop(i, None)
        self.alive[old] = False
        n = int(old.sum())
        if len(self.alive) > 1024 and self.alive.sum() < len(self.alive) // 2:
            self._compact()
        return n

    def _compact(self) -> None:
        keep = self.alive
        self.ids, self.event_ids, self.entities = self.ids[keep], self.event_ids[keep], self.entities[keep]
        self.times, self.feats, self.alive = self.times[keep], self.feats[keep], self.alive[keep]
        self.index = dict(zip(self.ids.tolist(), range(len(self.ids))))

    def snapshot(self) -> dict[str, Any]:
        """The live rows, in arrival order (dead rows are dropped from memory first)."""
        self._compact()  # a checkpoint is a good moment to give back the rows already labelled
        return {name: getattr(self, name) for name in COLUMNS}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the pending rows with ``snap``'s."""
        self._clear()
        self.add(np.asarray(snap["ids"], np.uint64), np.asarray(snap["event_ids"], object),
                 np.asarray(snap["entities"], object), np.asarray(snap["times"], np.float64),
                 np.asarray(snap["feats"], np.float64).reshape(-1, self.n_features))
