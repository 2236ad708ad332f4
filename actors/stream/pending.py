"""Feature vectors of events waiting for their label, keyed by event-id hash.

A shard computes an event's features when the event arrives (point in time) and keeps them
here until the label names the event; the pair is then a training row. Rows whose label
does not come within the timeout expire.

Layout (issue 14): the rows sit in arrival order in arrays with spare room at the end (they
double when full), so adding a batch copies only the batch; each added batch also keeps its
rows' order by event time, so ``expire`` reads only the rows that expire (and one time per
batch still held), not every pending row. Rows labelled or expired are marked dead and
given back when half the rows are dead. The id index is numpy too: sorted (id, row) chunks
merged like a binary counter (``Dedup``'s scheme), an id's entry being its newest row while
that row is marked ``indexed`` — the answers of a dict from id to row, with no Python loop
per row. Every step costs O(batch · log) amortised.

Example:
    >>> import numpy as np
    >>> p = PendingRows(n_features=1)
    >>> p.add(np.array([7, 8], np.uint64), np.array(["a", "b"]), np.array(["u", "u"]), np.array([1.0, 2.0]),
    ...       np.array([[0.5], [0.7]]))
    >>> found, pos = p.take(np.array([8, 9], np.uint64))
    >>> found.tolist(), p.feats[pos].tolist(), len(p)
    ([True, False], [[0.7]], 1)
    >>> p.expire(before=1.5), len(p)
    (1, 0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

COLUMNS = ("ids", "event_ids", "entities", "times", "feats")
_ARENA = (*COLUMNS, "cats", "alive", "by_time", "indexed")  # by_time: within each added batch, its rows' positions by
# event time; indexed: the row is its id's entry (a dict's id -> row: the newest row added, until taken or expired)


class _Column:
    """The used part of one of the rows' arrays (the arrays keep spare room at the end)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: "PendingRows | None", owner: type | None = None) -> Any:
        return self if obj is None else obj._cols[self.name][:obj._n]


class PendingRows:
    """Events kept until their labels arrive (a ``Stateful``); ``n_cats`` text columns (categorical fields,
    ``cats``) ride beside the float vectors (``task_columns``)."""

    def __init__(self, n_features: int, n_cats: int = 0) -> None:
        self.n_features, self.n_cats = n_features, n_cats
        self._clear()

    def _clear(self) -> None:
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []  # (ids, rows) sorted by (id, row); older first
        self._n_indexed = 0
        self._n = 0
        self._cols = {"ids": np.zeros(0, np.uint64), "event_ids": np.zeros(0, object),
                      "entities": np.zeros(0, object), "times": np.zeros(0, np.float64),
                      "feats": np.zeros((0, self.n_features), np.float64), "cats": np.empty((0, self.n_cats), object),
                      "alive": np.zeros(0, bool),
                      "by_time": np.zeros(0, np.int64), "indexed": np.zeros(0, bool)}
        # One entry per added batch: its rows are [start, end); by_time[head:end] are those not yet expired.
        self._seg_head = np.zeros(0, np.int64)
        self._seg_end = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return self._n_indexed

    # The columns; row i is the i-th event added since the last compaction (``take`` returns such positions).
    ids = _Column()  # event-id hashes
    event_ids = _Column()
    entities = _Column()
    times = _Column()  # event times (s)
    feats = _Column()  # feature vectors
    cats = _Column()  # categorical fields' text (None = missing), (n, n_cats) objects
    alive = _Column()  # still waiting: neither labelled nor expired

    def add(self, ids: np.ndarray, event_ids: np.ndarray, entities: np.ndarray, times: np.ndarray,
            feats: np.ndarray, cats: np.ndarray | None = None) -> None:
        """Keep these events until their labels arrive (``cats``: their text columns, None = all missing)."""
        b, base = len(ids), self._n
        if b == 0:
            return
        if base + b > len(self._cols["ids"]):
            cap = max(2 * len(self._cols["ids"]), base + b, 64)
            for name, a in self._cols.items():
                grown = np.zeros((cap, *a.shape[1:]), a.dtype)
                grown[:base] = a[:base]
                self._cols[name] = grown
        times, ids = np.asarray(times, np.float64), np.asarray(ids, np.uint64)
        order = np.argsort(ids, kind="stable")
        last = np.ones(b, dtype=bool)  # the newest row of each id in the batch becomes its entry
        last[order[:-1]] = ids[order[:-1]] != ids[order[1:]]
        self._unindex(ids[last])
        new = {"ids": ids, "event_ids": np.asarray(event_ids).astype(object),
               "entities": np.asarray(entities).astype(object), "times": times,
               "feats": np.asarray(feats, np.float64).reshape(b, self.n_features), "alive": np.ones(b, bool),
               "cats": np.empty((b, self.n_cats), object) if cats is None else np.asarray(cats, object),
               "by_time": base + np.argsort(times, kind="stable"), "indexed": last}
        for name in _ARENA:
            self._cols[name][base:base + b] = new[name]
        self._n = base + b
        self._n_indexed += int(last.sum())
        self._chunks.append((ids[order], base + order))
        while len(self._chunks) > 1 and len(self._chunks[-2][0]) <= 2 * len(self._chunks[-1][0]):
            (a_ids, a_rows), (b_ids, b_rows) = self._chunks[-2:]
            both = np.concatenate([a_ids, b_ids])
            o = np.argsort(both, kind="stable")  # a merge; rows stay ascending within an id
            self._chunks[-2:] = [(both[o], np.concatenate([a_rows, b_rows])[o])]
        self._seg_head = np.append(self._seg_head, base)
        self._seg_end = np.append(self._seg_end, base + b)

    def _entries(self, ids: np.ndarray) -> np.ndarray:
        """Each id's entry row (its newest row, while indexed), -1 where it has none."""
        ids = np.asarray(ids, np.uint64)
        newest = np.full(len(ids), -1, np.int64)
        if not len(ids):
            return newest
        order = np.argsort(ids, kind="stable")  # searches in sorted order walk each chunk front to back
        ordered = ids[order]
        found = np.full(len(ids), -1, np.int64)
        for c_ids, c_rows in self._chunks:  # older chunks hold older rows: a later hit is newer
            j = np.maximum(np.searchsorted(c_ids, ordered, side="right") - 1, 0)
            hit = c_ids[j] == ordered
            found = np.where(hit, c_rows[j], found)
        newest[order] = found
        ok = newest >= 0
        ok[ok] = self._cols["indexed"][newest[ok]]
        return np.where(ok, newest, -1)

    def _unindex(self, ids: np.ndarray) -> None:
        """Drop these ids' entries (a dict's ``pop(id, None)`` for each)."""
        if not len(ids):
            return
        rows = np.unique(self._entries(ids))
        rows = rows[rows >= 0]
        self._cols["indexed"][rows] = False
        self._n_indexed -= len(rows)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Mask of the ids waiting here (what ``take`` would find)."""
        return self._entries(ids) >= 0

    def take(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, row positions) for these ids; found rows leave the pending set (an id found once)."""
        pos = self._entries(ids)
        first = np.zeros(len(pos), dtype=bool)
        first[np.unique(np.asarray(ids, np.uint64), return_index=True)[1]] = True
        found = (pos >= 0) & first
        pos = pos[found]
        self._cols["alive"][pos] = False
        self._cols["indexed"][pos] = False
        self._n_indexed -= len(pos)
        return found, pos

    def expire(self, before: float) -> int:
        """Drop events older than ``before`` (event time) still unlabelled; returns how many."""
        times, by_time = self._cols["times"], self._cols["by_time"]
        open_ = self._seg_head < self._seg_end
        segs = np.flatnonzero(open_)
        segs = segs[times[by_time[self._seg_head[segs]]] < before]  # batches whose oldest row expires
        alive, gone = self._cols["alive"], [np.zeros(0, np.int64)]
        for s in segs.tolist():
            head, end = int(self._seg_head[s]), int(self._seg_end[s])
            cut = head + int(np.searchsorted(times[by_time[head:end]], before, "left"))
            old = by_time[head:cut]
            gone.append(old[alive[old]])
            self._seg_head[s] = cut
        old = np.concatenate(gone)
        self._unindex(self._cols["ids"][old])
        alive[old] = False
        n = len(old)
        if self._n > 1024 and len(self) < self._n // 2:
            self._compact()
        return n

    def _compact(self) -> None:
        keep = np.flatnonzero(self.alive)
        live = {name: self._cols[name][keep] for name in (*COLUMNS, "cats")}
        self._clear()
        if len(keep):
            self.add(live["ids"], live["event_ids"], live["entities"], live["times"], live["feats"], live["cats"])

    def snapshot(self) -> dict[str, Any]:
        """The live rows, in arrival order (dead rows are dropped from memory first)."""
        self._compact()  # a checkpoint is a good moment to give back the rows already labelled
        names = (*COLUMNS, "cats") if self.n_cats else COLUMNS  # no text columns: the snapshot as it always was
        return {name: getattr(self, name).copy() for name in names}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the pending rows with ``snap``'s."""
        self._clear()
        self.add(np.asarray(snap["ids"], np.uint64), np.asarray(snap["event_ids"], object),
                 np.asarray(snap["entities"], object), np.asarray(snap["times"], np.float64),
                 np.asarray(snap["feats"], np.float64).reshape(-1, self.n_features),
                 None if snap.get("cats") is None else np.asarray(snap["cats"], object).reshape(-1, self.n_cats))

    @property
    def nbytes(self) -> int:
        """Bytes of the numeric arrays allocated (spare room included; not the id/entity strings)."""
        index = sum(i.nbytes + r.nbytes for i, r in self._chunks)
        return sum(a.nbytes for name, a in self._cols.items() if a.dtype != object) + self._seg_end.nbytes * 2 + index
