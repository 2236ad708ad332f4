"""Served feature vectors, kept until their event's label arrives; and the served-vs-point-in-time skew.

When a request scores an event that has an ``event_id``, the shard keeps the vector the
model was served (``ServedLog``, bounded: the oldest rows are evicted first and counted).
When the label of that event joins, the training row can use the served vector (what the
model really saw), and the served vector is compared with the point-in-time one computed
when the event itself arrived in the stream: ``skew_of`` counts, per feature, the rows that
differ (beyond float rounding) and the largest difference; ``add_skew`` sums batches.

The log is a ``Stateful`` part of the shard snapshot; checkpoints carry it in the shard's
part as ``served.arrow`` (``write_served``/``read_served``; a checkpoint written before has
none and loads with an empty log). Lookups record from their own thread while batches take
rows, so every method holds a small lock.

Example:
    >>> import numpy as np
    >>> log = ServedLog(n_features=2, capacity=2)
    >>> log.record(np.array([1, 2, 3], np.uint64), np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    >>> found, feats = log.take(np.array([1, 3], np.uint64))
    >>> found.tolist(), feats.tolist(), log.evicted, len(log)
    ([False, True], [[3.0, 0.0]], 1, 1)
    >>> skew = skew_of(np.array([[1.0, 5.0]]), np.array([[1.0, 7.0]]), ["a", "b"])
    >>> skew["rows_differing"], skew["features"]["b"]
    (1, {'differing': 1, 'share': 1.0, 'max_abs_diff': 2.0})
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa

RTOL, ATOL = 1e-9, 1e-12  # the same feature computed over a differently pruned store differs by rounding only


class ServedLog:
    """Served vectors by event-id hash, the newest ``capacity`` kept (a ``Stateful``); ``n_cats`` text columns
    (categorical fields) ride beside each vector (``task_columns``)."""

    def __init__(self, n_features: int, capacity: int, n_cats: int = 0) -> None:
        self.n_features, self.capacity, self.n_cats = n_features, capacity, n_cats
        self.lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.index: dict[int, int] = {}
        self.ids = np.zeros(0, np.uint64)
        self.feats = np.zeros((0, self.n_features), np.float64)
        self.cats = np.empty((0, self.n_cats), object)
        self.alive = np.zeros(0, bool)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.index)

    def record(self, ids: np.ndarray, feats: np.ndarray, cats: np.ndarray | None = None) -> None:
        """Keep these vectors (an id recorded again keeps its newest vector); evict the oldest over capacity.
        ``cats``: their text columns (None = all missing)."""
        ids = np.asarray(ids, np.uint64)
        with self.lock:
            _, last = np.unique(ids[::-1], return_index=True)  # the newest row of an id repeated in the call
            keep = np.sort(len(ids) - 1 - last)
            if self.n_cats:
                text = np.empty((len(ids), self.n_cats), object) if cats is None else np.asarray(cats, object)
                self.cats = np.vstack([self.cats, text.reshape(-1, self.n_cats)[keep]])
            ids, feats = ids[keep], np.asarray(feats, np.float64).reshape(-1, self.n_features)[keep]
            again = [self.index.pop(i) for i in ids.tolist() if i in self.index]
            self.alive[again] = False
            base = len(self.ids)
            self.index.update(zip(ids.tolist(), range(base, base + len(ids))))
            self.ids = np.concatenate([self.ids, ids])
            self.feats = np.vstack([self.feats, feats])
            self.alive = np.concatenate([self.alive, np.ones(len(ids), bool)])
            excess = len(self.index) - self.capacity
            if excess > 0:
                oldest = np.flatnonzero(self.alive)[:excess]
                for i in self.ids[oldest].tolist():
                    del self.index[i]
                self.alive[oldest] = False
                self.evicted += excess
            if len(self.alive) > 2 * len(self.index) + 64:
                self._compact()

    def take(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, the found rows' vectors in order); found rows leave the log."""
        found, feats, _ = self.take_rows(ids)
        return found, feats

    def take_rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found mask, the found rows' vectors, their text columns); found rows leave the log."""
        with self.lock:
            pos = np.fromiter((self.index.pop(i, -1) for i in np.asarray(ids, np.uint64).tolist()),
                              dtype=np.int64, count=len(ids))
            found = pos >= 0
            self.alive[pos[found]] = False
            cats = self.cats[pos[found]] if self.n_cats else np.empty((int(found.sum()), 0), object)
            return found, self.feats[pos[found]], cats

    def join(self, ids: np.ndarray, feats: np.ndarray, cats: np.ndarray, names: list[str], cat_pos: list[int],
             use_served: bool) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
        """Labelled rows' vectors and text columns (``feats``/``cats``: point in time; the served ones taken
        from the log instead when ``use_served``) and their served-vs-point-in-time skew (None: none served)."""
        found, served, served_cats = self.take_rows(ids)
        if not found.any():
            return feats, cats, None
        skew = skew_of(served, feats[found], names, (cat_pos, served_cats, cats[found]) if self.n_cats else None)
        if use_served:
            feats, cats = feats.copy(), cats.copy()
            feats[found], cats[found] = served, served_cats
        return feats, cats, skew

    def _compact(self) -> None:
        keep = self.alive
        if self.n_cats:
            self.cats = self.cats[keep]
        self.ids, self.feats, self.alive = self.ids[keep], self.feats[keep], self.alive[keep]
        self.index = dict(zip(self.ids.tolist(), range(len(self.ids))))

    def snapshot(self) -> dict[str, Any]:
        """The live rows, oldest first, and the eviction count."""
        with self.lock:
            self._compact()
            snap = {"ids": self.ids, "feats": self.feats, "evicted": int(self.evicted)}
            if self.n_cats:
                snap["cats"] = self.cats
            return snap

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the log with ``snap``'s rows."""
        with self.lock:
            self._clear()
        self.record(np.asarray(snap["ids"], np.uint64), np.asarray(snap["feats"], np.float64), snap.get("cats"))
        with self.lock:
            self.evicted = int(snap.get("evicted", 0))


# -- skew ------------------------------------------------------------------------------------------

def empty_skew(names: list[str]) -> dict[str, Any]:
    """Skew totals before any comparison: every feature at zero."""
    return {"compared_rows": 0, "rows_differing": 0,
            "features": {n: {"differing": 0, "share": 0.0, "max_abs_diff": 0.0} for n in names}}


def skew_of(served: np.ndarray, point_in_time: np.ndarray, names: list[str],
            text: tuple[list[int], np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Per feature: rows whose served and point-in-time values differ, and the largest difference.

    NaN equals NaN; a NaN against a number differs but has no size, so it is left out of
    ``max_abs_diff``. ``text``: (positions in ``names`` of the categorical columns, their served and
    point-in-time text matrices): a row differs there when the texts differ (None equals None).
    """
    a, b = np.asarray(served, np.float64), np.asarray(point_in_time, np.float64)
    both = ~np.isnan(a) & ~np.isnan(b)
    with np.errstate(invalid="ignore"):
        diff = np.where(both, np.abs(a - b), 0.0)
    differs = (np.isnan(a) != np.isnan(b)) | (both & (diff > ATOL + RTOL * np.abs(b)))
    if text is not None and len(text[0]):
        differs[:, text[0]] = np.asarray(text[1], object) != np.asarray(text[2], object)
    out = empty_skew(names)
    out["compared_rows"], out["rows_differing"] = len(a), int(differs.any(axis=1).sum())
    for j, name in enumerate(names):
        n = int(differs[:, j].sum())
        out["features"][name] = {"differing": n, "share": n / len(a) if len(a) else 0.0,
                                 "max_abs_diff": float(diff[:, j].max()) if len(a) else 0.0}
    return out


def add_skew(total: dict[str, Any], part: dict[str, Any] | None) -> None:
    """Add one batch's skew into running totals (in place)."""
    if not part:
        return
    total["compared_rows"] += part["compared_rows"]
    total["rows_differing"] += part["rows_differing"]
    for name, f in part["features"].items():
        t = total["features"].setdefault(name, {"differing": 0, "share": 0.0, "max_abs_diff": 0.0})
        t["differing"] += f["differing"]
        t["max_abs_diff"] = max(t["max_abs_diff"], f["max_abs_diff"])
    for t in total["features"].values():
        t["share"] = t["differing"] / total["compared_rows"] if total["compared_rows"] else 0.0


# -- in checkpoints --------------------------------------------------------------------------------

def served_table(snap: dict[str, Any]) -> pa.Table:
    """A served-log snapshot as an Arrow table (``f0``, ``f1`` … columns, text ``c0``… ; ``evicted`` in the
    metadata)."""
    feats = np.asarray(snap["feats"], np.float64)
    data = {"ids": pa.array(np.asarray(snap["ids"], np.uint64))}
    data.update({f"f{j}": pa.array(feats[:, j]) for j in range(feats.shape[1])})
    data.update(text_arrays(snap.get("cats")))
    return pa.table(data, metadata={"evicted": str(int(snap.get("evicted", 0)))})


def served_snapshot(table: pa.Table, n_features: int) -> dict[str, Any]:
    """The snapshot ``served_table`` wrote (``cats`` only when it has text columns)."""
    cols = [table[f"f{j}"].to_numpy(zero_copy_only=False) for j in range(n_features)]
    feats = np.column_stack(cols).astype(np.float64) if cols else np.zeros((table.num_rows, 0))
    evicted = (table.schema.metadata or {}).get(b"evicted", b"0")
    snap = {"ids": table["ids"].to_numpy().astype(np.uint64), "feats": feats.reshape(-1, n_features),
            "evicted": int(evicted)}
    cats = text_matrix(table)
    if cats is not None:
        snap["cats"] = cats
    return snap


def text_arrays(cats: np.ndarray | None) -> dict[str, pa.Array]:
    """Text columns ``c0``, ``c1``… of a text matrix (none for None or no columns), as Arrow strings."""
    if cats is None:
        return {}
    cats = np.asarray(cats, object)
    return {f"c{j}": pa.array(cats[:, j].tolist(), type=pa.string()) for j in range(cats.shape[1])}


def text_matrix(table: pa.Table) -> np.ndarray | None:
    """The text matrix ``text_arrays`` wrote into ``table`` (None when it has no text columns)."""
    names = sorted((c for c in table.column_names if c[:1] == "c" and c[1:].isdigit()), key=lambda c: int(c[1:]))
    if not names:
        return None
    out = np.empty((table.num_rows, len(names)), object)
    for j, c in enumerate(names):
        out[:, j] = table[c].to_pylist()
    return out
