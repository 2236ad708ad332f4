"""Vectorised per-entity event-time series with sliding-window aggregates (plain numpy).

A ``SeriesStore`` keeps, for every entity key, the rows (event time, values) that a future
window can still need, as flat arrays sorted by (key, time). A batch is applied with a
handful of numpy calls, never a Python loop per event:

- ``insert`` gathers the rows of the keys in the batch, merges the new rows in, and puts
  them back (a stable sort of two sorted runs, i.e. a linear merge);
- ``query`` answers, for many (key, time) points at once, aggregates over the rows with
  time in ``[t - W, t)`` — strictly before ``t``, so an event's own values are not in its
  history — using prefix sums and ``searchsorted`` on a composite (group, time) key;
- ``prune`` forgets rows older than any window can reach, keeping each key's last row
  (for "last value" and "time since last event").

Times are integer microseconds, so window boundaries are exact. The arrays are never written
in place: ``insert``, ``prune`` and ``restore`` build new ones and rebind them, so a reader
holding the old arrays (a shard's lookup view, ``lookup.ShardView``) keeps a whole state.

Example:
    >>> import numpy as np
    >>> st = SeriesStore(n_values=1)
    >>> st.insert(np.array([7, 7, 7], np.uint64), np.array([0, 5, 12], np.int64) * 1_000_000, np.array([[2.0], [4.0], [6.0]]))
    >>> q = st.query(np.array([7], np.uint64), np.array([13_000_000]), windows_us=[10_000_000])
    >>> q["count"][0].tolist(), q["sum"][0][:, 0].tolist(), q["last"][:, 0].tolist(), q["age_us"].tolist()
    ([2], [10.0], [6.0], [1000000])
"""

from __future__ import annotations

from typing import Any

import numpy as np

US = 1_000_000


def to_us(seconds: np.ndarray | float) -> np.ndarray:
    """Float seconds to integer microseconds."""
    return np.round(np.asarray(seconds, dtype=np.float64) * US).astype(np.int64)


def concat_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices lo[0]..hi[0]-1, lo[1]..hi[1]-1, … as one array."""
    lens = hi - lo
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - (np.cumsum(lens) - lens), lens)
    return starts + np.arange(total, dtype=np.int64)


def _range_reduce(ufunc: np.ufunc, arr: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """ufunc-reduction of the rows arr[s_i:e_i] for each i, all columns at once (nan where empty)."""
    out = np.full((len(s), arr.shape[1]), np.nan)
    nonempty = e > s
    if not nonempty.any():
        return out
    padded = np.vstack([arr, np.full((1, arr.shape[1]), np.nan)])  # reduceat indices must stay < len
    ss, ee = s[nonempty], e[nonempty]
    # reduceat also reduces the gaps (e_i, s_i+1); visiting ranges by start keeps those gaps short.
    order = np.argsort(ss, kind="stable")
    idx = np.empty(2 * len(ss), dtype=np.int64)
    idx[0::2], idx[1::2] = ss[order], ee[order]
    res = np.empty((len(ss), arr.shape[1]))
    res[order] = ufunc.reduceat(padded, idx, axis=0)[0::2]
    out[nonempty] = res
    return out


class SeriesStore:
    """Rows (key, time µs, values) still needed by some window, sorted by (key, time) (a ``Stateful``)."""

    def __init__(self, n_values: int) -> None:
        self.n_values = n_values
        self.keys = np.zeros(0, dtype=np.uint64)
        self.times = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((0, n_values), dtype=np.float64)

    def __len__(self) -> int:
        return len(self.keys)

    def n_keys(self) -> int:
        """Number of distinct keys held."""
        return int(len(np.unique(self.keys))) if len(self.keys) else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return int(self.keys.nbytes + self.times.nbytes + self.values.nbytes)

    def _ranges(self, ukeys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.searchsorted(self.keys, ukeys, "left"), np.searchsorted(self.keys, ukeys, "right")

    def insert(self, keys: np.ndarray, times_us: np.ndarray, values: np.ndarray) -> None:
        """Add rows; rows of the same key and time keep their arrival order after existing ones."""
        if len(keys) == 0:
            return
        keys = np.asarray(keys, dtype=np.uint64)
        ukeys = np.unique(keys)
        lo, hi = self._ranges(ukeys)
        old = concat_ranges(lo, hi)
        mk = np.concatenate([self.keys[old], keys])
        mt = np.concatenate([self.times[old], np.asarray(times_us, dtype=np.int64)])
        mv = np.concatenate([self.values[old], np.asarray(values, dtype=np.float64).reshape(len(keys), -1)])
        order = np.lexsort((mt, mk))  # stable: old rows before new ones at equal (key, time)
        keep = np.ones(len(self.keys), dtype=bool)
        keep[old] = False
        allk = np.concatenate([self.keys[keep], mk[order]])
        # Two runs each sorted by key, with disjoint keys: a stable sort merges them in linear time.
        merge = np.argsort(allk, kind="stable")
        self.keys = allk[merge]
        self.times = np.concatenate([self.times[keep], mt[order]])[merge]
        self.values = np.concatenate([self.values[keep], mv[order]])[merge]

    def query(self, keys: np.ndarray, times_us: np.ndarray, windows_us: list[int],
              minmax: bool = False) -> dict[str, Any]:
        """Aggregates over [t - W, t) for each (key, t) and each window W.

        Returns ``count`` (list per window of int arrays), ``sum``/``mean``/``std``/``min``/
        ``max`` (lists per window of (n, k) arrays; min/max only when asked), and
        ``last`` (n, k) / ``age_us`` (n,) from the key's latest row before t (nan / -1 when none).
        """
        keys = np.asarray(keys, dtype=np.uint64)
        t = np.asarray(times_us, dtype=np.int64)
        n, k = len(keys), self.n_values
        ukeys, inv = np.unique(keys, return_inverse=True)
        lo, hi = self._ranges(ukeys)
        rows = concat_ranges(lo, hi)
        lens = hi - lo
        gstart = (np.cumsum(lens) - lens)[inv]  # where each query's key block starts in the gathered rows
        gt = self.times[rows]
        gv = self.values[rows]
        group = np.repeat(np.arange(len(ukeys), dtype=np.int64), lens)
        wmax = max(windows_us) if windows_us else 0
        floor = (int(t.min()) - wmax - 1) if n else 0
        top = max(int(gt.max()) if len(gt) else floor, int(t.max()) if n else floor)
        span = top - floor + 2
        comp = group * span + (np.maximum(gt, floor) - floor)  # sorted, since rows are sorted by (key, time)
        base = inv.astype(np.int64) * span - floor
        e = np.searchsorted(comp, base + t, "left")
        # Sums are reduced per range (not as differences of one running sum over every key), so
        # one key's large values cannot cost another key its precision; values are shifted by the
        # key's first row so the variance does not cancel.
        first = np.zeros((len(ukeys), k))
        has = lens > 0
        first[has] = gv[(np.cumsum(lens) - lens)[has]]
        shifted = gv - first[group] if len(gv) else gv
        out: dict[str, Any] = {"count": [], "sum": [], "mean": [], "std": [], "min": [], "max": []}
        f = first[inv]
        for w in windows_us:
            s = np.maximum(np.searchsorted(comp, base + t - w, "left"), gstart)
            cnt = np.maximum(e - s, 0)
            ssum = np.nan_to_num(_range_reduce(np.add, shifted, s, e))
            ssq = np.nan_to_num(_range_reduce(np.add, shifted * shifted, s, e))
            c = cnt[:, None].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_shift = np.where(c > 0, ssum / c, np.nan)
                var = np.where(c > 1, (ssq - c * mean_shift**2) / (c - 1), np.nan)
            out["count"].append(cnt)
            out["sum"].append(np.where(c > 0, ssum + c * f, 0.0))
            out["mean"].append(mean_shift + f)
            out["std"].append(np.sqrt(np.maximum(var, 0.0)))
            if minmax:
                out["min"].append(_range_reduce(np.minimum, gv, s, e))
                out["max"].append(_range_reduce(np.maximum, gv, s, e))
        prev = e - 1
        has_prev = prev >= gstart
        safe = np.where(has_prev, prev, 0)
        if len(gv):
            out["last"] = np.where(has_prev[:, None], gv[safe], np.nan)
            out["age_us"] = np.where(has_prev, t - gt[safe], -1)
        else:
            out["last"] = np.full((n, k), np.nan)
            out["age_us"] = np.full(n, -1, dtype=np.int64)
        return out

    def prune(self, horizon_us: int) -> None:
        """Drop rows older than ``horizon_us`` except the newest row of each key."""
        if not len(self.keys):
            return
        is_last = np.ones(len(self.keys), dtype=bool)
        is_last[:-1] = self.keys[:-1] != self.keys[1:]
        keep = (self.times >= horizon_us) | is_last
        if not keep.all():
            self.keys, self.times, self.values = self.keys[keep], self.times[keep], self.values[keep]

    def snapshot(self) -> dict[str, Any]:
        """The arrays (``keys``, ``times``, ``values``), sorted by (key, time)."""
        return {"keys": self.keys, "times": self.times, "values": self.values}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the rows with ``snap``'s (copied, so the snapshot stays untouched)."""
        self.keys = np.array(snap["keys"], dtype=np.uint64)
        self.times = np.array(snap["times"], dtype=np.int64)
        self.values = np.array(snap["values"], dtype=np.float64).reshape(len(self.keys), self.n_values)
