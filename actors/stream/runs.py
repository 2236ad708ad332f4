"""Immutable sorted runs of (key, time µs, values) rows: the pieces a ``SeriesStore`` is made of.

A ``Run`` holds rows sorted by (key, time, arrival). The key is stored once per distinct key
(``ukeys[j]`` owns rows ``starts[j]:starts[j + 1]``), so a row costs its time (8 bytes) and its
values. A run is never written after it is built: stores replace runs, so a reader holding
the old ones (a lookup view) keeps a whole state.

``bisect`` searches many (row range, time) pairs at once, ``merge`` puts several runs (oldest
first) back into one order, ``rebuild`` merges runs while dropping the rows a prune has made
dead (each key's newest row stays, unless the key has expired), ``gather_sorted`` copies the
rows of many queries' ranges straight into (query, time) order for their reductions.

Example:
    >>> import numpy as np
    >>> r = build(np.array([9, 4, 9], np.uint64), np.array([5, 7, 1]), np.array([[1.0], [2.0], [3.0]]))
    >>> r.ukeys.tolist(), r.starts.tolist(), r.times.tolist(), r.values[:, 0].tolist()
    ([4, 9], [0, 1, 3], [7, 1, 5], [2.0, 3.0, 1.0])
    >>> lo, hi = r.locate(np.array([9, 8], np.uint64))
    >>> bisect(r.times, lo, hi, np.array([2, 0])).tolist()   # first row of the key at or after the time
    [2, 0]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NO_TIME = -(2**62)  # before every time: "no horizon", "nothing expired"
ABSENT = np.iinfo(np.int64).min  # time of a key a run does not hold
SAMPLE = 64  # times kept per run to estimate how many rows a horizon has made dead
REPEAT_BELOW = 512  # up to this many ranges, ``np.repeat`` (fewer calls) instead of a cumulative sum (faster per row)
SMALL = 8  # up to this many queries: one binary search per (query, run) in Python (a lookup's few events)


def concat_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices lo[0]..hi[0]-1, lo[1]..hi[1]-1, … as one array.

    A cumulative sum of steps (1 inside a range, a jump between ranges): ``np.repeat`` with counts
    copies each count's block on its own, 7x slower on ~10-row ranges.
    """
    lens = np.asarray(hi, dtype=np.int64) - lo
    if len(lens) <= REPEAT_BELOW:  # few ranges: fewer numpy calls this way
        total = int(lens.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        return np.repeat(lo - (np.cumsum(lens) - lens), lens) + np.arange(total, dtype=np.int64)
    some = lens > 0
    lo, lens = np.asarray(lo, dtype=np.int64)[some], lens[some]
    if not len(lens):
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lens)
    step = np.ones(int(ends[-1]), dtype=np.int64)
    step[0] = lo[0]
    step[ends[:-1]] = lo[1:] - (lo[:-1] + lens[:-1] - 1)
    return np.cumsum(step, out=step)


def repeat_index(counts: np.ndarray) -> np.ndarray:
    """``np.repeat(np.arange(len(counts)), counts)``, by a cumulative sum (see ``concat_ranges``)."""
    if len(counts) <= REPEAT_BELOW:
        return np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    some = np.flatnonzero(counts > 0)
    if not len(some):
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts[some])
    step = np.zeros(int(ends[-1]), dtype=np.int64)
    step[0] = some[0]
    step[ends[:-1]] = np.diff(some)
    return np.cumsum(step, out=step)


def bisect(times: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> np.ndarray:
    """For each i, the first index in [lo_i, hi_i) whose time is >= target_i (hi_i if none).

    ``times`` is sorted inside each range. The search narrows all ranges at once and stops
    as soon as every range is settled, so it costs log2 of the longest range, not of the run.
    """
    lo = np.array(lo, dtype=np.int64)
    hi = np.array(hi, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    act = np.flatnonzero(lo < hi)
    while len(act):
        a_lo, a_hi = lo[act], hi[act]
        mid = (a_lo + a_hi) >> 1
        go = times[mid] < target[act]
        a_lo = np.where(go, mid + 1, a_lo)
        a_hi = np.where(go, a_hi, mid)
        lo[act], hi[act] = a_lo, a_hi
        act = act[a_lo < a_hi]
    return lo


def stable_order(rank: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Stable order by (rank, time): a merge, nearly linear, when the input is a few sorted runs."""
    if not len(rank):
        return np.zeros(0, dtype=np.int64)
    tmin = int(times.min())
    span = int(times.max()) - tmin + 1
    if (int(rank.max()) + 1) * span < 2**62:
        return np.argsort(rank * span + (times - tmin), kind="stable")
    return np.lexsort((times, rank))


def _sample(times: np.ndarray) -> np.ndarray:
    return np.sort(times[:: max(1, len(times) // SAMPLE)])


class Run:
    """Rows sorted by (key, time, arrival), keys stored once each; immutable once built."""

    __slots__ = ("ukeys", "starts", "times", "values", "sample", "n_pinned", "pinned_sample")

    def __init__(self, ukeys: np.ndarray, starts: np.ndarray, times: np.ndarray, values: np.ndarray,
                 pinned: np.ndarray | None = None) -> None:
        self.ukeys, self.starts, self.times, self.values = ukeys, starts, times, values
        self.sample = _sample(times)  # to estimate how many rows fall behind a horizon
        # Rows kept behind the horizon of the prune that built the run (each key's newest): not dead.
        pinned_times = times[pinned] if pinned is not None else times[:0]
        self.n_pinned = len(pinned_times)
        self.pinned_sample = _sample(pinned_times)

    def __len__(self) -> int:
        return len(self.times)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays."""
        return int(self.ukeys.nbytes + self.starts.nbytes + self.times.nbytes + self.values.nbytes)

    def lengths(self) -> np.ndarray:
        """Rows per distinct key."""
        return np.diff(self.starts)

    def keys(self) -> np.ndarray:
        """The key of every row."""
        return np.repeat(self.ukeys, self.lengths())

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row range [lo, hi) of each key (empty for keys the run does not hold)."""
        j = np.minimum(np.searchsorted(self.ukeys, keys), len(self.ukeys) - 1)
        hit = self.ukeys[j] == keys
        return np.where(hit, self.starts[j], 0), np.where(hit, self.starts[j + 1], 0)

    def last_times(self, keys: np.ndarray) -> np.ndarray:
        """Time of each key's newest row here (``ABSENT`` for keys the run does not hold)."""
        lo, hi = self.locate(keys)
        return np.where(hi > lo, self.times[np.maximum(hi - 1, 0)], ABSENT)

    def dead_estimate(self, horizon: int, expire: int) -> float:
        """About how many rows a prune at (horizon, expire) has made dead (from the time samples)."""
        below = len(self) * np.searchsorted(self.sample, horizon) / max(1, len(self.sample))
        expired = self.n_pinned * np.searchsorted(self.pinned_sample, expire) / max(1, len(self.pinned_sample))
        return float(below - self.n_pinned + expired)


def _from_sorted(uk: np.ndarray, rank: np.ndarray, times: np.ndarray, values: np.ndarray,
                 pinned: np.ndarray | None = None) -> Run:
    """A run from rows already sorted by (rank, time); ``uk[rank]`` is each row's key."""
    first = np.ones(len(rank), dtype=bool)
    first[1:] = rank[1:] != rank[:-1]
    starts = np.append(np.flatnonzero(first), len(rank)).astype(np.int64)
    return Run(uk[rank[first]], starts, times, values, pinned)


def build(keys: np.ndarray, times: np.ndarray, values: np.ndarray) -> Run:
    """A run of these rows (any order; rows of equal key and time keep their order)."""
    keys = np.asarray(keys, dtype=np.uint64)
    times = np.asarray(times, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64).reshape(len(times), -1)
    step = keys[1:] != keys[:-1]
    if ((keys[1:] > keys[:-1]) | (~step & (times[1:] >= times[:-1]))).all():  # sorted already (a snapshot): O(n)
        rank = np.concatenate([[0], np.cumsum(step)]) if len(keys) else np.zeros(0, np.int64)
        return _from_sorted(keys[np.concatenate([[True], step])] if len(keys) else keys, rank, times, values)
    order = np.lexsort((times, keys))  # stable: rows of equal key and time keep their order
    ordered = keys[order]
    step = np.empty(len(ordered), dtype=bool)
    step[0], step[1:] = True, ordered[1:] != ordered[:-1]
    starts = np.append(np.flatnonzero(step), len(ordered)).astype(np.int64)
    return Run(ordered[step], starts, times[order], np.take(values, order, axis=0))


def _merged(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ukeys, rank per row, times, order) of ``runs`` in one (key, time, run) order: row ``i`` of the
    result is row ``order[i]`` of the runs' rows concatenated."""
    every = np.concatenate([r.ukeys for r in runs])
    o = np.argsort(every, kind="stable")  # sorted runs: a merge; np.unique would hash
    ordered = every[o]
    new = np.ones(len(ordered), dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    rank_of = np.empty(len(o), dtype=np.int64)
    rank_of[o] = np.cumsum(new) - 1
    rank = np.repeat(rank_of, np.concatenate([r.lengths() for r in runs]))
    times = np.concatenate([r.times for r in runs])
    order = stable_order(rank, times)
    return ordered[new], rank[order], times[order], order


def merge(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ukeys, rank per row, times, values, source run per row) of ``runs`` (oldest first) in one order.

    Rows of equal key and time keep the runs' order: the older run's first, as they arrived.
    """
    uk, rank, times, order = _merged(runs)
    src = np.repeat(np.arange(len(runs)), [len(r) for r in runs])
    values = np.concatenate([r.values for r in runs])
    return uk, rank, times, np.take(values, order, axis=0), src[order]


def rebuild(runs: Sequence[Run], i: int, j: int, horizon: int = NO_TIME, expire: int = NO_TIME) -> list[Run]:
    """``runs[i:j]`` as one run, without the rows dead at ``horizon``/``expire`` (``[]`` if none is left).

    A row behind the horizon stays only if it is its key's newest row anywhere (``runs[:i]``
    are older, ``runs[j:]`` younger: they win ties) and not behind ``expire``.
    """
    uk, rank, times, order = _merged(runs[i:j])
    keep = times >= horizon
    last = np.ones(len(rank), dtype=bool)
    last[:-1] = rank[:-1] != rank[1:]
    cand = np.flatnonzero(last & ~keep)
    if len(cand):
        ck, ct = uk[rank[cand]], times[cand]
        newest = ct >= expire
        for r in runs[:i]:
            newest &= r.last_times(ck) <= ct
        for r in runs[j:]:
            newest &= r.last_times(ck) < ct
        keep[cand[newest]] = True
    if not keep.any():
        return []
    values = runs[i].values if j == i + 1 else np.concatenate([r.values for r in runs[i:j]])
    if keep.all():
        return [_from_sorted(uk, rank, times, np.take(values, order, axis=0), times < horizon)]
    times = times[keep]  # the values are gathered once, kept rows only
    return [_from_sorted(uk, rank[keep], times, np.take(values, order[keep], axis=0), times < horizon)]


Found = tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, ...], tuple[np.ndarray, ...]]


def locate_many(runs: Sequence[Run], n_old: int, horizon: int, qk: np.ndarray, qt: np.ndarray, wmax: int) -> Found:
    """Where queries (key-sorted) fall in each run: ([(first, end) row of [t - wmax, t)] per run, (time, run,
    row) of the newest row before t, (time, run, row) of the newest row among ``runs[:n_old]``)."""
    n = len(qk)
    best_t, best_r, best_i = np.full(n, np.iinfo(np.int64).min), np.full(n, -1), np.zeros(n, np.int64)
    new_t, new_r, new_i = best_t.copy(), best_r.copy(), best_i.copy()  # newest row among the old runs
    ranges = []
    for ri, run in enumerate(runs):
        old = ri < n_old
        lo, hi = run.locate(qk)
        first = np.maximum(qt - wmax, horizon) if old else qt - wmax
        # Settled without a search (the ranges given to bisect start empty): a key whose rows here are all
        # before t (e = hi: most keys, most runs), or all inside the window (s = lo).
        e = bisect(run.times, np.where(run.times[np.maximum(hi - 1, 0)] < qt, hi, lo), hi, qt)
        s = bisect(run.times, lo, np.where(run.times[np.minimum(lo, len(run) - 1)] >= first, lo, e), first)
        ranges.append((s, e))
        cand = e - 1
        ct = run.times[np.maximum(cand, 0)]
        ok = (e > lo) & ((ct >= horizon) if old else True) & (ct >= best_t)  # a younger run wins a tie
        best_t, best_r, best_i = np.where(ok, ct, best_t), np.where(ok, ri, best_r), np.where(ok, cand, best_i)
        if old:
            lt = run.times[np.maximum(hi - 1, 0)]
            ok = (hi > lo) & (lt >= new_t)
            new_t, new_r, new_i = np.where(ok, lt, new_t), np.where(ok, ri, new_r), np.where(ok, hi - 1, new_i)
    return ranges, (best_t, best_r, best_i), (new_t, new_r, new_i)


def locate_few(runs: Sequence[Run], n_old: int, horizon: int, qk: np.ndarray, qt: np.ndarray, wmax: int) -> Found:
    """``locate_many`` with one binary search per (query, run): cheaper for a handful of queries."""
    n, low = len(qk), ABSENT
    best, new = [[low, -1, 0] for _ in range(n)], [[low, -1, 0] for _ in range(n)]
    ranges = []
    starts_young, starts_old = (qt - wmax).tolist(), np.maximum(qt - wmax, horizon).tolist()
    for ri, run in enumerate(runs):
        old = ri < n_old
        s_out, e_out = np.zeros(n, np.int64), np.zeros(n, np.int64)
        j_all = run.ukeys.searchsorted(qk).tolist()
        for qi, (j, t) in enumerate(zip(j_all, qt.tolist())):
            if j >= len(run.ukeys) or run.ukeys[j] != qk[qi]:
                continue
            lo, hi = int(run.starts[j]), int(run.starts[j + 1])
            seg = run.times[lo:hi]
            e = int(seg.searchsorted(t))
            s = int(seg[:e].searchsorted(starts_old[qi] if old else starts_young[qi]))
            s_out[qi], e_out[qi] = lo + s, lo + e
            if e > 0:
                ct = int(seg[e - 1])
                if (ct >= horizon or not old) and ct >= best[qi][0]:
                    best[qi] = [ct, ri, lo + e - 1]
            if old and int(seg[-1]) >= new[qi][0]:
                new[qi] = [int(seg[-1]), ri, hi - 1]
        ranges.append((s_out, e_out))
    b, w = np.array(best, dtype=np.int64).reshape(n, 3).T, np.array(new, dtype=np.int64).reshape(n, 3).T
    return ranges, (b[0], b[1], b[2]), (w[0], w[1], w[2])


def gather_sorted(runs: Sequence[Run], ranges: list[tuple[np.ndarray, np.ndarray]], first: tuple[np.ndarray, ...],
                  n: int, k: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray | None]:
    """The rows of each query's ranges, query by query, each query's in (time, arrival) order: ``first`` =
    (mask, time, values) of a row that goes before the runs' (the oldest arrival), then each run's
    ``[s_i, e_i)``, oldest run first. Returns (row count per query, query of each row, one array per value
    column with one nan after the rows, so ``np.ufunc.reduceat`` may take the end as an index, and the rows'
    times for a few queries (``SMALL``), None for more).

    Rows are written where they belong (no concatenation, no sort of everything), each column on its own
    (1-D copies: a 2-D fancy assignment costs ~10x more). A query's pieces are sorted each; only queries
    where a piece starts before the previous one ends (runs overlapping in time) have their times gathered
    and are sorted, stably, so ties keep their arrival order.
    """
    if n <= SMALL:
        return _gather_few(runs, ranges, first, n, k)
    has_first, first_t, first_v = first
    lens = [e - s for s, e in ranges]
    per_query = has_first.astype(np.int64) + sum(lens, np.zeros(n, np.int64))
    end = np.cumsum(per_query)
    start = end - per_query
    total = int(end[-1]) if n else 0
    cols = [np.empty(total + 1) for _ in range(k)]
    at, ats = start.copy(), []
    at_first = at[has_first]
    for j, col in enumerate(cols):
        col[total] = np.nan
        col[at_first] = first_v[:, j]
    at[has_first] += 1
    last_t, bad = np.full(n, ABSENT), np.zeros(n, dtype=bool)
    last_t[has_first] = first_t
    for run, (s, e), ln in zip(runs, ranges, lens):
        ats.append(at.copy())
        some = ln > 0
        bad |= some & (run.times[np.minimum(s, len(run) - 1)] < last_t)
        last_t = np.where(some, run.times[np.maximum(e - 1, 0)], last_t)
        src = concat_ranges(s, e)
        if len(src):
            dst = concat_ranges(at, at + ln)
            got = np.take(run.values, src, axis=0)  # 3x faster than run.values[src] for (n, k) rows
            for j, col in enumerate(cols):
                col[dst] = got[:, j]
        at += ln
    qrep = repeat_index(per_query)
    if bad.any():
        _sort_by_time(runs, ranges, (has_first, first_t), ats, np.flatnonzero(bad), (start, end, qrep), cols)
    return per_query, qrep, cols, None


def _gather_few(runs: Sequence[Run], ranges: list[tuple[np.ndarray, np.ndarray]], first: tuple[np.ndarray, ...],
                n: int, k: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """``gather_sorted`` for a few queries (a lookup's): slices, not index arithmetic, and the times with them."""
    has_first, first_t, first_v = first
    per_query = has_first.astype(np.int64) + sum((e - s for s, e in ranges), np.zeros(n, np.int64))
    end = np.cumsum(per_query)
    start = end - per_query
    total = int(end[-1]) if n else 0
    times, rows = np.empty(total, np.int64), np.empty((total + 1, k))
    rows[total] = np.nan
    at = start.copy()
    times[at[has_first]], rows[at[has_first]] = first_t, first_v
    at[has_first] += 1
    for run, (s, e) in zip(runs, ranges):
        for qi in np.flatnonzero(e > s).tolist():
            a, b, to = int(s[qi]), int(e[qi]), int(at[qi])
            times[to:to + b - a], rows[to:to + b - a] = run.times[a:b], run.values[a:b]
            at[qi] += b - a
    qrep = np.repeat(np.arange(n, dtype=np.int64), per_query)
    down = np.flatnonzero(times[1:] < times[:-1]) + 1
    for qi in sorted(set(qrep[down[qrep[down] == qrep[down - 1]]].tolist())):  # runs overlapping in time: sort
        o = start[qi] + np.argsort(times[start[qi]:end[qi]], kind="stable")
        times[start[qi]:end[qi]], rows[start[qi]:end[qi]] = times[o], rows[o]
    return per_query, qrep, [np.ascontiguousarray(rows[:, j]) for j in range(k)], times


def _sort_by_time(runs: Sequence[Run], ranges: list[tuple[np.ndarray, np.ndarray]], first: tuple[np.ndarray, ...],
                  ats: list[np.ndarray], bad: np.ndarray, where: tuple[np.ndarray, ...], cols: list[np.ndarray]) -> None:
    """Sort the gathered rows of the queries ``bad`` by time, stably (their runs overlap in time)."""
    start, end, qrep = where
    has_first, first_t = first
    times = np.zeros(len(qrep), np.int64)
    times[start[has_first]] = first_t
    for run, (s, e), at in zip(runs, ranges, ats):
        sb, eb = s[bad], e[bad]
        src = concat_ranges(sb, eb)
        times[concat_ranges(at[bad], at[bad] + eb - sb)] = run.times[src]
    rows = concat_ranges(start[bad], end[bad])
    o = rows[np.lexsort((times[rows], qrep[rows]))]
    for col in cols:
        col[rows] = col[o]
