"""Window queries over a ``SeriesStore``'s runs: (key, time) points in, aggregates over ``[t - W, t)`` out.

Per run, one search for the key's rows and a bisection for the window's bounds (none for a key whose
rows there are all before t, or all inside the window); the rows of the longest window are copied
straight into (query, time, arrival) order (``runs.gather_sorted``: only queries whose runs overlap in
time are re-sorted) and reduced in that order, column by column, sums anchored on the key's last value
(no cancellation at large magnitudes). So answers are bit-identical however the rows are split into
runs (see ``windows``). Only the reductions asked for are made: min/max and std for the columns that
name them (the default features: min, max and std of one field of two; none for the labels).

Example:
    >>> import numpy as np
    >>> from streamfit.actors.stream.runs import build
    >>> st = State((build(np.array([7, 7], np.uint64), np.array([0, 5]), np.array([[2.0], [4.0]])),), 1, NO_TIME, NO_TIME)
    >>> q = run_query(st, 1, np.array([7], np.uint64), np.array([6]), [10], frozenset({0}), frozenset())
    >>> q["count"][0].tolist(), q["mean"][0][:, 0].tolist(), q["max"][0][:, 0].tolist(), q["std"][0][:, 0].tolist()
    ([2], [3.0], [4.0], [nan])
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from streamfit.actors.stream.runs import (NO_TIME, SMALL, Run, bisect, concat_ranges, gather_sorted, locate_few,
                                          locate_many, repeat_index)

__all__ = ["EMPTY", "State", "columns", "run_query"]

class State(NamedTuple):
    """One whole state: runs (oldest first), how many were there at the last prune, its bounds."""

    runs: tuple[Run, ...]
    n_old: int  # runs[:n_old] hold rows inserted before the last prune; the horizon applies to them
    horizon: int
    expire: int


EMPTY = State((), 0, NO_TIME, NO_TIME)


def run_query(st: State, k: int, qk: np.ndarray, qt: np.ndarray, windows: list[int], minmax: frozenset[int],
           spread: frozenset[int], distinct: frozenset[int] = frozenset()) -> dict[str, Any]:
    """``SeriesStore.query`` for queries sorted by key (``minmax``/``spread``/``distinct``: the columns that need
    min/max, std, a count of distinct values)."""
    n = len(qk)
    wmax = max(windows) if windows else 0
    if n <= SMALL:  # a handful of lookups: per-run vector searches cost more than scalar ones
        found = locate_few(st.runs, st.n_old, st.horizon, qk, qt, wmax)
    else:
        found = locate_many(st.runs, st.n_old, st.horizon, qk, qt, wmax)
    ranges, (best_t, best_r, best_i), (new_t, new_r, new_i) = found
    # An old key's newest row behind the horizon is still there (unless the key expired).
    kept = (new_r >= 0) & (new_t < st.horizon) & (new_t >= st.expire) & (new_t < qt)
    ok = kept & (new_t > best_t)
    best_t, best_r, best_i = np.where(ok, new_t, best_t), np.where(ok, new_r, best_r), np.where(ok, new_i, best_i)
    extra = kept & (new_t >= qt - wmax)
    out: dict[str, Any] = {"last": np.full((n, k), np.nan), "age_us": np.where(best_r >= 0, qt - best_t, -1)}
    for ri in sorted(set(best_r.tolist()) - {-1}):
        m = best_r == ri
        out["last"][m] = st.runs[ri].values[best_i[m]]
    for name in ("count", "sum", "mean", "std", "min", "max"):
        out[name] = []
    if not windows:
        return out
    # The rows of the longest window, per query, in (time, arrival) order whatever runs they came
    # from: the extra row (the oldest arrival), then each run's rows, oldest run first, sorted stably.
    extra_v = np.zeros((int(extra.sum()), k))
    for ri in sorted(set(new_r[extra].tolist())):
        m = extra & (new_r == ri)
        extra_v[m[extra]] = st.runs[ri].values[new_i[m]]
    per_query, qrep, raw, gt = gather_sorted(st.runs, ranges, (extra, new_t[extra], extra_v), n, k)
    end = np.cumsum(per_query)
    # A query's rows in a shorter window are the newest: its last (rows at or after t - w) of them.
    if gt is not None:  # a few queries: their gathered times are at hand
        firsts = [end - per_query if w == wmax else _bisect_few(gt, end - per_query, end, qt - w) for w in windows]
    else:
        firsts = [end - per_query if w == wmax else
                  end - (extra & (new_t >= qt - w)) - sum(e - _bisect_ends(r.times, s, e, qt - w) for r, (s, e) in zip(st.runs, ranges))
                  for w in windows]
    s_all, e_all = np.concatenate(firsts), np.tile(end, len(windows))
    # Every window at once ((windows · n) rows); row wi·n + i is query i in window wi. Column by column, and
    # only what was asked: 1-D reductions give the same sums as the 2-D ones did (numpy reduces each
    # column on its own either way), bit for bit.
    cnt = e_all - s_all
    reduce = _Ranges(s_all, e_all)
    c = cnt.astype(np.float64)
    anchor = _nan0(out["last"])  # the last value is in every non-empty window: no cancellation
    stats = {"count": cnt, **{name: np.full((len(cnt), k), np.nan) for name in ("sum", "mean", "std", "min", "max")}}
    for j in range(k):
        shifted = np.empty(len(qrep) + 1)
        np.subtract(raw[j][:-1], np.take(anchor[:, j], qrep), out=shifted[:-1])
        shifted[-1] = np.nan
        ssum, anchors = _nan0(reduce(np.add, shifted)), np.tile(anchor[:, j], len(windows))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_shift = np.where(c > 0, ssum / c, np.nan)
        stats["sum"][:, j] = np.where(c > 0, ssum + c * anchors, 0.0)
        stats["mean"][:, j] = mean_shift + anchors
        if j in spread:
            ssq = _nan0(reduce(np.add, np.multiply(shifted, shifted, out=shifted)))
            with np.errstate(invalid="ignore", divide="ignore"):
                var = np.where(c > 1, (ssq - c * mean_shift**2) / (c - 1), np.nan)
            stats["std"][:, j] = np.sqrt(np.maximum(var, 0.0))
        if j in minmax:
            stats["min"][:, j], stats["max"][:, j] = reduce(np.minimum, raw[j]), reduce(np.maximum, raw[j])
    if not minmax:
        del stats["min"], stats["max"]
    if distinct:  # categorical codes: how many different ones per window (NaN = missing: not counted)
        stats["distinct"] = np.full((len(cnt), k), np.nan)
        for j in distinct:
            stats["distinct"][:, j] = _distinct(raw[j], s_all, e_all)
    for name, arr in stats.items():
        out[name] = [arr[wi * n:(wi + 1) * n] for wi in range(len(windows))]
    return out


class _Ranges:
    """``ufunc``-reductions of ``col[s_i:e_i]`` for fixed ranges (``col``'s last item is padding, so every ``e_i``
    is a valid index); nan where a range is empty. The indices are built once for every column."""

    def __init__(self, s: np.ndarray, e: np.ndarray) -> None:
        self.nonempty = e > s
        self.n = len(s)
        self.idx = np.empty(2 * int(self.nonempty.sum()), dtype=np.int64)
        self.idx[0::2], self.idx[1::2] = s[self.nonempty], e[self.nonempty]

    def __call__(self, ufunc: np.ufunc, col: np.ndarray) -> np.ndarray:
        out = np.full(self.n, np.nan)
        if len(self.idx):
            out[self.nonempty] = ufunc.reduceat(col, self.idx)[0::2]
        return out


def _distinct(col: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """How many different non-NaN values each range ``col[s_i:e_i]`` holds (0 when empty)."""
    rid = repeat_index(e - s)
    v = col[concat_ranges(s, e)]
    keep = ~np.isnan(v)
    rid, v = rid[keep], v[keep]
    order = np.lexsort((v, rid))
    rid, v = rid[order], v[order]
    new = np.ones(len(v), dtype=bool)
    new[1:] = (rid[1:] != rid[:-1]) | (v[1:] != v[:-1])
    return np.bincount(rid[new], minlength=len(s)).astype(np.float64)


def columns(asked: bool | Sequence[int], k: int) -> frozenset[int]:
    """The value columns ``asked`` names (``True``: all of them)."""
    if isinstance(asked, (bool, np.bool_)):
        return frozenset(range(k)) if asked else frozenset()
    return frozenset(int(j) for j in asked)


def _nan0(a: np.ndarray) -> np.ndarray:
    """``np.nan_to_num`` of a float array, in fewer steps when it holds no infinity (the usual case)."""
    out = np.where(np.isnan(a), 0.0, a)
    return np.nan_to_num(out) if np.isinf(out).any() else out


def _bisect_ends(times: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``runs.bisect``, with the ranges whose rows are all before ``target`` (most, in a short window) or all at or
    after it settled first, without a search."""
    some = hi > lo
    last, first = times[np.maximum(hi - 1, 0)], times[np.minimum(lo, len(times) - 1)]
    return bisect(times, np.where(some & (last < target), hi, lo), np.where(some & (first >= target), lo, hi), target)


def _bisect_few(times: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``bisect`` for a few ranges: one search each."""
    return np.array([a + int(times[a:b].searchsorted(t)) for a, b, t in zip(lo.tolist(), hi.tolist(), target.tolist())],
                    dtype=np.int64)
