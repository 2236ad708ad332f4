"""Unit tests of actors/stream/window_query.py and the index helpers of runs.py it uses.

A query that names the columns needing min/max and std gives, for those, exactly what the
query asking for everything gives (and nan for the others); the rows of a key spread over
runs that overlap in time come back sorted; ``columns`` reads what a caller asks for.
"""

from __future__ import annotations

import numpy as np

from streamfit.actors.stream import runs, window_query
from streamfit.actors.stream.runs import concat_ranges, repeat_index
from streamfit.actors.stream.windows import US, SeriesStore

WINDOWS = [20 * US, 300 * US]


def _store(seed: int = 3, batches: int = 6, n: int = 400, k: int = 3) -> tuple[SeriesStore, np.ndarray, np.ndarray]:
    """A store fed in batches whose times overlap (so a key's rows are split over runs that overlap in time)."""
    rng = np.random.default_rng(seed)
    st = SeriesStore(n_values=k)
    for b in range(batches):
        keys = rng.integers(0, 30, n).astype(np.uint64)
        times = (b * 40 + rng.integers(-30, 30, n)) * US + rng.integers(0, 3, n)  # ties and near-ties
        st.insert(keys, times, rng.normal(0, 10, (n, k)) + 1e6 * (np.arange(k) == 1))
        if b == 3:
            st.prune(60 * US)
    qk = rng.integers(0, 32, 500).astype(np.uint64)
    qt = rng.integers(0, 260, 500) * US
    return st, qk, qt


def test_asked_columns_are_exactly_those_of_the_full_query_and_the_others_nan():
    st, qk, qt = _store()
    full = st.query(qk, qt, WINDOWS, minmax=True)
    part = st.query(qk, qt, WINDOWS, minmax=[2], std=[0])
    for wi in range(len(WINDOWS)):
        assert np.array_equal(part["count"][wi], full["count"][wi])
        for op in ("sum", "mean"):
            assert np.array_equal(part[op][wi], full[op][wi], equal_nan=True), op
        assert np.array_equal(part["std"][wi][:, 0], full["std"][wi][:, 0], equal_nan=True)
        assert np.isnan(part["std"][wi][:, 1:]).all()
        for op in ("min", "max"):
            assert np.array_equal(part[op][wi][:, 2], full[op][wi][:, 2], equal_nan=True), op
            assert np.isnan(part[op][wi][:, :2]).all()
    none = st.query(qk, qt, WINDOWS, minmax=False, std=False)
    assert none["min"] == [] and none["max"] == [] and np.isnan(none["std"][0]).all()
    assert np.array_equal(none["mean"][1], full["mean"][1], equal_nan=True)


def test_answers_do_not_depend_on_the_split_into_runs_when_runs_overlap_in_time(monkeypatch):
    st, qk, qt = _store(seed=8)
    assert len(st._state.runs) > 1
    whole = SeriesStore(n_values=3)
    whole.restore(st.snapshot())  # one run
    sorts = []
    real = runs._sort_by_time
    monkeypatch.setattr(runs, "_sort_by_time", lambda *a: sorts.append(len(a[4])) or real(*a))
    a, b = st.query(qk, qt, WINDOWS, minmax=True), whole.query(qk, qt, WINDOWS, minmax=True)
    assert sorts and 0 < sorts[0] < len(qk)  # some queries (not all) had their rows re-sorted
    for name in ("count", "sum", "mean", "std", "min", "max"):
        for x, y in zip(a[name], b[name]):
            assert np.array_equal(x, y, equal_nan=True), name
    few = st.query(qk[:5], qt[:5], WINDOWS, minmax=True)  # the few-queries path (one search per query and run)
    for name in ("count", "sum", "mean", "std", "min", "max"):
        for x, y in zip(few[name], a[name]):
            assert np.array_equal(x, y[:5], equal_nan=True), name


def test_index_helpers_equal_their_numpy_definitions():
    rng = np.random.default_rng(0)
    for n in [int(x) for x in rng.integers(0, 10, 300)] + [600, 3000] * 5:  # both ways (np.repeat below REPEAT_BELOW)
        lo, ln = rng.integers(0, 40, n), rng.integers(0, 4, n) * rng.integers(0, 2, n)
        expected = np.concatenate([np.arange(a, a + m) for a, m in zip(lo, ln)] + [np.zeros(0, np.int64)])
        got = concat_ranges(lo, lo + ln)
        assert got.dtype == np.int64 and np.array_equal(got, expected)
        rep = repeat_index(ln)
        assert rep.dtype == np.int64 and np.array_equal(rep, np.repeat(np.arange(n), ln))


def test_columns_names_the_value_columns_asked_for():
    assert window_query.columns(True, 3) == {0, 1, 2} and window_query.columns(False, 3) == set()
    assert window_query.columns([1], 3) == {1} and window_query.columns(np.bool_(True), 2) == {0, 1}
