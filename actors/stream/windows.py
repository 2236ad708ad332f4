"""Vectorised per-entity event-time series with sliding-window aggregates (plain numpy).

A ``SeriesStore`` keeps, for every entity key, the rows (event time, values) that a future
window can still need, and answers, for many (key, time) points at once, aggregates over the
rows with time in ``[t - W, t)`` — strictly before ``t``, so an event's own values are not in
its history. ``prune(horizon)`` forgets rows older than any window can reach, keeping each
key's newest row (for "last value" and "time since last event") unless the key has been idle
since before ``expire_before_us``: then the whole key is forgotten (expiry).

Layout (issue 14): sorted immutable runs (``runs.Run``), merged like a binary counter. A batch
is sorted on its own into a new run; a run is merged into its older neighbour when it has
grown to half that one's size, so there are O(log n) runs and a row is merged O(log n) times:
insert costs O(batch · log n) amortised, not a sort of the whole state. A prune only records
the horizon (rows behind it are *dead*: queries clamp their windows to it); dead rows leave
memory when their run is merged, or rewritten once about a quarter of it is dead, so memory
stays within ~4/3 of the live rows. Keys are stored once per run, not per row. Chosen over
per-entity ring buffers in one arena: those are written in place (a published lookup view
would need copies), grow per entity, and need the same sort for late events; runs are never
written, so ``frozen()`` is O(1).

Queries (``window_query``): per run, one search for the key's rows and a bisection for the window's
bounds (none for a key whose rows there are all before t, or all inside the window); the rows of the
longest window are copied straight into (query, time, arrival) order (``runs.gather_sorted``: only
queries whose runs overlap in time are re-sorted) and reduced in that order, sums anchored on the
key's last value (no cancellation at large magnitudes). So answers are bit-identical however the rows are
split into runs: a restored snapshot is one run, and the stateful contract and round-trip tests
want the answers of the store that never stopped, bit for bit. That rules out prefix sums per
run: a window's sum from them depends on the split (rounding) and on rows outside the window
(cancellation; the property test's tolerance is relative to the window's own values). Exact
(double-double) prefix sums would need 32 bytes per row and value, and min/max need the rows.
So a query costs O(rows in its window): a batch costs more while the longest window fills.

Measured 2026-11-30, insert and prune (one process, 10k-event batches over 100k keys, 2 values,
windows 300 s / 3600 s, times up to ±2 s out of order; median of 7 batches, ms; load 6-7):

    stored rows              170k    660k    1.05M   3.6M
    before  insert + prune   10.8    37.4    57.3    210.0
    after   insert + prune    4.0     4.1     4.1      4.1   (mean with merges 6-14)

Queries, later the same day (the bench's stream: 100k entities, 20k-event batches, 250 events/s of
event time, default features; the next batch's 20k queries; CPU ms, median of 9; load 11-14, ±15 %),
before and after the direct gather, the settled bisections and the column-by-column arithmetic:

    after batch                 5 (100k rows)    90 (921k rows: the 1 h window full)
    events query                 29 -> 21          60 -> 44
    labels query                 13 -> 13          35 -> 20..28
    whole batch (first tenth of the stream / last half): 91-115 / 146-166 ms -> 86-98 / 113-141 ms

Session 5 (issue 14, steady_state_ratio): profiled on the same stream (one in-process FeatureShard,
65 batches: 1.3M events, the 1 h window full from batch ~45), the cost that grows is the query's per-row
work on the window's rows (~1 row per query early, ~9 at steady state: 18k -> 180k rows per batch):
the gather (index ranges, copies) ~+7 ms per store, the searches ~+2.5 ms per store (one more run,
longer ranges), the reductions ~+4 ms; insert, prune, pending rows and dedup stay flat (~42 ms).
Changes, answers bit-identical (checked on the captured states, every aggregate, and by the tests):
only the reductions the features ask for (default: min/max/std of x0 only, none for the labels'
count/mean), reduced column by column (1-D ``reduceat`` gives the same sums as the 2-D one); times
gathered only for queries whose runs overlap in time (overlap found from each piece's first and last
time); index ranges by a cumulative sum (``np.repeat`` with counts copied block by block: 7x slower);
a shorter window's bisections settle the ranges wholly before or inside it without a search.
Replaying the next batch's 20k queries on the captured states (CPU ms, median of 9, caches flushed
between runs; load 8-9):

    after batch                 5 (100k rows)    63 (1.08M rows: the 1 h window full)
    events query                20.6 -> 18.2     36.4 -> 28.4
    labels query                13.2 -> 12.6     16.2 -> 15.0

Whole batches (``FeatureShard.process``, the 20k-event batches above; CPU ms, medians of the first
and the last tenth of the batches; before/after pairs run alternately, load 6-13, ±10 %; the last two
pairs with the final code):

    query part (_features_at)   first -> last tenth: before +22.5..27.5 ms, after +16.7..22.5 (final: +18.6, +18.7)
    whole batch, first / last   before 64.9 / 92.3, 66.6 / 89.6 (0.70, 0.74); after 64.2 / 84.8, 62.8 / 82.5 (0.76, 0.76)

A lookup's sizes stay as fast (a few queries gather their times and search them once per window;
up to 512 ranges, ``np.repeat``): 1/8/64/256 queries at steady state, events 192/265/504/852 ->
183/268/555/805 µs, labels 144/220/425/612 -> 135/209/477/649 µs.

Tried and dropped: glibc malloc thresholds (a replayed query page-faulted its ~15 MB of temporaries
in again each time, but in the shard's own flow glibc's adaptive threshold already avoids that: 0
faults per query at steady state before and after); queries in chunks of 2-5k (faster on a replay,
slower in the real flow). What is left grows with the rows in the window, and by design: prefix sums
per run (see above) are what would make it O(runs).

A lookup's few queries (``runs.SMALL``) search each run with one binary search per (query, run)
in Python instead of the vectorised bisection, whose fixed cost per run dominated them: 4 queries
on a frozen view of 400k rows in 3 runs, events 518 -> 225 µs, labels 333 -> 151 µs (load ~5).

Memory at 3.6M rows: 26.4 bytes per row allocated (32 before).

Times are integer microseconds, so window boundaries are exact.

Example:
    >>> import numpy as np
    >>> st = SeriesStore(n_values=1)
    >>> st.insert(np.array([7, 7, 7], np.uint64), np.array([0, 5, 12], np.int64) * 1_000_000, np.array([[2.0], [4.0], [6.0]]))
    >>> q = st.query(np.array([7], np.uint64), np.array([13_000_000]), windows_us=[10_000_000])
    >>> q["count"][0].tolist(), q["sum"][0][:, 0].tolist(), q["last"][:, 0].tolist(), q["age_us"].tolist()
    ([2], [10.0], [6.0], [1000000])
    >>> st.prune(12_000_000); len(st), st.n_keys()          # the newest row stays
    (1, 1)
    >>> st.prune(20_000_000, expire_before_us=13_000_000); len(st), st.n_keys()   # idle too long: gone
    (0, 0)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from streamfit.actors.stream.runs import NO_TIME, Run, build, concat_ranges, merge, rebuild
from streamfit.actors.stream.window_query import EMPTY, State, columns, run_query

__all__ = ["US", "SeriesStore", "concat_ranges", "to_us"]

US = 1_000_000
DEAD_SHARE = 0.25  # a run is rewritten once about this share of its rows is dead
def to_us(seconds: np.ndarray | float) -> np.ndarray:
    """Float seconds to integer microseconds."""
    return np.round(np.asarray(seconds, dtype=np.float64) * US).astype(np.int64)


class SeriesStore:
    """Rows (key, time µs, values) still needed by some window (a ``Stateful``)."""

    def __init__(self, n_values: int) -> None:
        self.n_values = n_values
        self._state = EMPTY
        self._flat: tuple[State, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._assigned: dict[str, np.ndarray] = {}

    def frozen(self) -> "SeriesStore":
        """A store sharing this state as it is now; later inserts and prunes never change it."""
        view = SeriesStore(self.n_values)
        view._state = self._state
        return view

    # -- sizes (of the rows a query can see: the same however the runs happen to be split) ---
    def __len__(self) -> int:
        st = self._state
        n = sum(len(r) if i >= st.n_old else int(np.count_nonzero(r.times >= st.horizon))
                for i, r in enumerate(st.runs))
        return n + self._n_pinned(st)

    def n_keys(self) -> int:
        """Number of distinct keys held."""
        st = self._state
        if not st.runs:
            return 0
        young = [r.ukeys for r in st.runs[st.n_old:]]
        alive = [r.ukeys[r.times[r.starts[1:] - 1] >= st.expire] for r in st.runs[:st.n_old]]
        every = np.sort(np.concatenate(young + alive), kind="stable")  # sorted runs: a merge (np.unique hashes: 50x slower)
        return int(np.count_nonzero(every[1:] != every[:-1])) + int(len(every) > 0)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Mask of the keys that have rows here (O(log) per key; ``FeatureShard.features`` wants this)."""
        st, keys = self._state, np.asarray(keys, dtype=np.uint64)
        found = np.zeros(len(keys), dtype=bool)
        for i, r in enumerate(st.runs):
            lt = r.last_times(keys)
            found |= (lt >= st.expire) if i < st.n_old else (lt > np.iinfo(np.int64).min)
        return found

    @staticmethod
    def _n_pinned(st: State) -> int:
        """How many keys keep their newest old row behind the horizon."""
        old, n = st.runs[:st.n_old], 0
        for i, r in enumerate(old):
            lt = r.times[r.starts[1:] - 1]
            m = (lt < st.horizon) & (lt >= st.expire)
            ck, ct = r.ukeys[m], lt[m]
            newest = np.ones(len(ck), dtype=bool)
            for j, other in enumerate(old):
                if j != i:
                    newest &= (other.last_times(ck) <= ct) if j < i else (other.last_times(ck) < ct)
            n += int(newest.sum())
        return n

    @property
    def nbytes(self) -> int:
        """Bytes the rows a query can see need in this layout (a row: time and values; a key: 16)."""
        return len(self) * 8 * (1 + self.n_values) + 16 * self.n_keys()

    @property
    def allocated_bytes(self) -> int:
        """Bytes the runs hold now: ``nbytes`` plus dead rows not yet dropped and keys repeated across runs."""
        return sum(r.nbytes for r in self._state.runs)

    # -- the flat (key, time)-sorted view: snapshots, and the arrays older callers read -----
    def _flat_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        st = self._state
        if self._flat is not None and self._flat[0] is st:
            return self._flat[1]
        if not st.runs:
            flat = (np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros((0, self.n_values)))
        else:
            uk, rank, times, values, src = merge(st.runs)
            old = src < st.n_old
            present = ~old | (times >= st.horizon)
            o = np.flatnonzero(old)
            last = np.ones(len(o), dtype=bool)
            last[:-1] = rank[o[:-1]] != rank[o[1:]]
            newest = o[last]
            present[newest[times[newest] >= st.expire]] = True
            flat = (uk[rank[present]], times[present], values[present])
        self._flat = (st, flat)
        return flat

    @property
    def keys(self) -> np.ndarray:
        """Every row's key, sorted by (key, time) (built from the runs: O(rows); prefer ``query``)."""
        return self._flat_arrays()[0]

    @property
    def times(self) -> np.ndarray:
        """Every row's time, in ``keys`` order."""
        return self._flat_arrays()[1]

    @property
    def values(self) -> np.ndarray:
        """Every row's values, in ``keys`` order."""
        return self._flat_arrays()[2]

    # Assigning keys, times and values (as ``lookup._frozen`` did) restores the store from them.
    @keys.setter
    def keys(self, a: np.ndarray) -> None:
        self._assign("keys", a)

    @times.setter
    def times(self, a: np.ndarray) -> None:
        self._assign("times", a)

    @values.setter
    def values(self, a: np.ndarray) -> None:
        self._assign("values", a)

    def _assign(self, name: str, a: np.ndarray) -> None:
        self._assigned[name] = a
        if len(self._assigned) == 3:
            snap, self._assigned = self._assigned, {}
            self.restore(snap)

    # -- changes ---------------------------------------------------------------------------
    def insert(self, keys: np.ndarray, times_us: np.ndarray, values: np.ndarray) -> None:
        """Add rows; rows of the same key and time keep their arrival order after existing ones."""
        if len(keys) == 0:
            return
        st = self._state
        runs = [*st.runs, build(keys, times_us, np.asarray(values, np.float64).reshape(len(keys), -1))]
        self._set(st._replace(runs=tuple(_merge_sizes(runs, st.n_old))))

    def prune(self, horizon_us: int, expire_before_us: int | None = None) -> None:
        """Drop rows older than ``horizon_us`` except the newest row of each key; with
        ``expire_before_us``, also keys whose newest row is older than that (clamped to the horizon).

        Both bounds are meant to move forward; moving one back is exact but rebuilds the store.
        """
        st = self._state
        horizon = max(int(horizon_us), NO_TIME)  # "no watermark yet" (very negative) is the initial horizon
        expire = NO_TIME if expire_before_us is None else max(min(int(expire_before_us), horizon), NO_TIME)
        if horizon < st.horizon or expire < st.expire:
            keys, times, values = self._flat_arrays()
            last = np.ones(len(keys), dtype=bool)
            last[:-1] = keys[:-1] != keys[1:]
            keep = (times >= horizon) | (last & (times >= expire))
            runs = [build(keys[keep], times[keep], values[keep])] if keep.any() else []
        else:
            runs, i = list(st.runs), 0
            while i < len(runs):
                if runs[i].dead_estimate(horizon, expire) > DEAD_SHARE * len(runs[i]):
                    new = rebuild(runs, i, i + 1, horizon, expire)
                    runs[i:i + 1] = new
                    i += len(new)
                else:
                    i += 1
            runs = _merge_sizes(runs, 0, horizon, expire)
        self._set(State(tuple(runs), len(runs), horizon, expire))

    # -- queries ---------------------------------------------------------------------------
    def query(self, keys: np.ndarray, times_us: np.ndarray, windows_us: list[int],
              minmax: bool | Sequence[int] = False, std: bool | Sequence[int] = True,
              distinct: bool | Sequence[int] = False) -> dict[str, Any]:
        """Aggregates over [t - W, t) for each (key, t) and each window W.

        Returns ``count`` (list per window of int arrays), ``sum``/``mean``/``std``/``min``/
        ``max`` (lists per window of (n, k) arrays; min/max only when asked), and
        ``last`` (n, k) / ``age_us`` (n,) from the key's latest row before t (nan / -1 when none).
        ``minmax`` and ``std`` may name the value columns that need them (the others' are nan); ``distinct``
        the columns whose different values per window are counted (``distinct``: only when asked).
        """
        keys, times_us = np.asarray(keys, dtype=np.uint64), np.asarray(times_us, dtype=np.int64)
        windows = [int(w) for w in windows_us]
        minmax, std, distinct = (columns(c, self.n_values) for c in (minmax, std, distinct))
        if not (keys[1:] < keys[:-1]).any():  # in key order already (one lookup): nothing to permute
            return run_query(self._state, self.n_values, keys, times_us, windows, minmax, std, distinct)
        order = np.argsort(keys, kind="stable")  # key order: the searches read each run in order
        res = run_query(self._state, self.n_values, keys[order], times_us[order], windows, minmax, std, distinct)
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        return {name: ([np.take(a, inv, axis=0) for a in v] if isinstance(v, list) else np.take(v, inv, axis=0))
                for name, v in res.items()}

    # -- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The rows as arrays (``keys``, ``times``, ``values``), sorted by (key, time)."""
        keys, times, values = self._flat_arrays()
        return {"keys": keys, "times": times, "values": values}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the rows with ``snap``'s (copied, so the snapshot stays untouched)."""
        keys = np.array(snap["keys"], dtype=np.uint64)
        values = np.array(snap["values"], dtype=np.float64).reshape(len(keys), self.n_values)
        runs = (build(keys, np.array(snap["times"], dtype=np.int64), values),) if len(keys) else ()
        self._set(State(runs, len(runs), NO_TIME, NO_TIME))

    def _set(self, state: State) -> None:
        self._state, self._flat = state, None  # one rebinding: a frozen view keeps the old state whole


def _merge_sizes(runs: list[Run], start: int, horizon: int = NO_TIME, expire: int = NO_TIME) -> list[Run]:
    """Merge neighbours in ``runs[start:]`` until each run is more than twice the next younger one."""
    i = len(runs) - 1
    while i > start:
        if len(runs[i - 1]) <= 2 * len(runs[i]):
            runs[i - 1:i + 1] = rebuild(runs, i - 1, i + 1, horizon, expire)
            i = len(runs) - 1
        else:
            i -= 1
    return runs
