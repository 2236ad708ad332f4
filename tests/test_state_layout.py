"""The run layout of ``SeriesStore`` (actors/stream/runs.py) against a naive list-of-rows store.

The reference below is today's semantics written as plainly as possible: windows
[t - W, t) strictly before t, rows of equal key and time in arrival order, prune keeps each
key's newest row, expiry forgets keys idle since before a bound. Hypothesis drives both with
out-of-order, late and duplicate rows, prunes at random (also backwards) horizons,
snapshot/restore in the middle and a frozen view taken at a random point.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfit.actors.stream.windows import US, SeriesStore

WINDOWS = [10, 45]
K = 2


class Naive:
    """Rows (key, time, arrival, values) in a list; every operation scans all of them."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, tuple[float, ...]]] = []
        self.seq = 0

    def insert(self, keys, times, values) -> None:
        for k, t, v in zip(keys, times, values):
            self.rows.append((int(k), int(t), self.seq, tuple(float(x) for x in v)))
            self.seq += 1

    def newest(self) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        for k, t, s, _ in self.rows:
            out[k] = max(out.get(k, (t, s)), (t, s))
        return out

    def prune(self, horizon: int, expire: int | None) -> None:
        new = self.newest()
        expire = -(2**62) if expire is None else min(expire, horizon)
        self.rows = [r for r in self.rows if r[1] >= horizon or ((r[1], r[2]) == new[r[0]] and r[1] >= expire)]

    def flat(self) -> tuple[list[int], list[int], list[tuple[float, ...]]]:
        rows = sorted(self.rows, key=lambda r: (r[0], r[1], r[2]))
        return [r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows]

    def query(self, key: int, t: int, w: int) -> dict:
        rows = sorted((r for r in self.rows if r[0] == key and t - w <= r[1] < t), key=lambda r: (r[1], r[2]))
        before = [r for r in self.rows if r[0] == key and r[1] < t]
        last = max(before, key=lambda r: (r[1], r[2])) if before else None
        out = {"count": len(rows), "last": last[3] if last else (math.nan,) * K, "age": t - last[1] if last else -1}
        for j in range(K):
            xs = [r[3][j] for r in rows]
            exact = [Fraction(x) for x in xs]
            mean = sum(exact, Fraction(0)) / len(xs) if xs else None
            out[("sum", j)] = float(sum(exact, Fraction(0)))
            out[("mean", j)] = float(mean) if xs else math.nan
            var = sum(((x - mean) ** 2 for x in exact), Fraction(0)) / (len(xs) - 1) if len(xs) > 1 else None
            out[("std", j)] = math.sqrt(float(var)) if var is not None else math.nan
            out[("min", j)] = min(xs) if xs else math.nan
            out[("max", j)] = max(xs) if xs else math.nan
            out[("scale", j)] = max((abs(x) for x in xs), default=0.0)
        return out


def check_queries(store: SeriesStore, ref: Naive, keys: list[int], times: list[int]) -> None:
    """Every (key, time, window) answered as the reference does: counts, min/max, last bit for bit."""
    q = store.query(np.array(keys, np.uint64), np.array(times, np.int64), WINDOWS, minmax=True)
    for i, (key, t) in enumerate(zip(keys, times)):
        for wi, w in enumerate(WINDOWS):
            exp = ref.query(key, t, w)
            assert q["count"][wi][i] == exp["count"], (key, t, w)
            assert q["age_us"][i] == exp["age"] and np.array_equal(q["last"][i], exp["last"], equal_nan=True)
            for j in range(K):
                for op in ("min", "max"):
                    assert np.array_equal(q[op][wi][i, j], exp[(op, j)], equal_nan=True), (op, key, t, w)
                scale, spread = exp[("scale", j)], exp[("max", j)] - exp[("min", j)] if exp["count"] else 0.0
                tols = {"sum": 1e-12 * scale * max(1, exp["count"]), "mean": 1e-12 * scale, "std": 1e-12 * spread}
                for op, tol in tols.items():
                    g, e = q[op][wi][i, j], exp[(op, j)]
                    assert (np.isnan(g) and np.isnan(e)) or abs(g - e) <= 1e-9 * abs(e) + tol, (op, key, t, w, g, e)


def assert_same_rows(store: SeriesStore, ref: Naive) -> None:
    keys, times, values = ref.flat()
    snap = store.snapshot()
    assert snap["keys"].tolist() == keys and snap["times"].tolist() == times
    assert np.array_equal(snap["values"], np.array(values).reshape(-1, K))
    assert snap["keys"].dtype == np.uint64 and snap["times"].dtype == np.int64 and snap["values"].dtype == np.float64
    assert len(store) == len(keys) and store.n_keys() == len(set(keys))


MAGNITUDE = st.sampled_from([0.0, 1e9, -3e12])
ROW = st.tuples(st.integers(1, 4), st.integers(0, 120), st.floats(-1e3, 1e3), st.integers(-4, 4))
OPS = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.lists(ROW, min_size=1, max_size=12)),
    st.tuples(st.just("prune"), st.integers(-10, 130), st.one_of(st.none(), st.integers(-10, 130))),
    st.tuples(st.just("restore")),
    st.tuples(st.just("freeze")),
), min_size=1, max_size=25)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, magnitude=MAGNITUDE, probe=st.lists(st.tuples(st.integers(0, 5), st.integers(-5, 140)),
                                                  min_size=1, max_size=8))
def test_runs_answer_as_the_naive_store(ops, magnitude, probe):
    store, ref = SeriesStore(K), Naive()
    frozen = None
    for op in ops:
        if op[0] == "insert":
            rows = op[1]
            keys = [r[0] * 7919 for r in rows]
            times = [r[1] for r in rows]
            values = [(magnitude + r[2], float(r[3])) for r in rows]  # small integers: many equal values
            store.insert(np.array(keys, np.uint64), np.array(times, np.int64), np.array(values))
            ref.insert(keys, times, values)
        elif op[0] == "prune":
            store.prune(op[1], op[2])
            ref.prune(op[1], op[2])
        elif op[0] == "restore":
            back = SeriesStore(K)
            back.restore(store.snapshot())
            store = back
        elif frozen is None:
            frozen = (store.frozen(), Naive())
            frozen[1].rows, frozen[1].seq = list(ref.rows), ref.seq
        keys = [p[0] * 7919 for p in probe]
        check_queries(store, ref, keys, [p[1] for p in probe])
    assert_same_rows(store, ref)
    if frozen is not None:  # a view taken earlier still answers for its own moment
        check_queries(frozen[0], frozen[1], [p[0] * 7919 for p in probe], [p[1] for p in probe])
        assert_same_rows(frozen[0], frozen[1])


def _stream(n_batches: int, batch: int, n_keys: int, seed: int = 0, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    for b in range(n_batches):
        t = (b * 10 + np.sort(rng.uniform(0, 10, batch)) + rng.normal(0, 2, batch)) * US  # late rows too
        yield (rng.integers(0, n_keys, batch).astype(np.uint64), t.astype(np.int64),
               offset + rng.normal(0, 1, (batch, K)))


@pytest.mark.parametrize("offset", [0.0, 1e12])
def test_many_runs_match_a_flat_reference_at_large_magnitudes(offset):
    """Hundreds of batches (so many runs, merges and rewrites), pruned as a shard does, queried each
    batch: counts exact, sums/means/std within 1e-9 of a reference computed on exact differences."""
    store = SeriesStore(K)
    all_k, all_t, all_v = [], [], []
    windows = [30 * US, 300 * US]
    for b, (k, t, v) in enumerate(_stream(120, 500, 40, seed=3, offset=offset)):
        store.insert(k, t, v)
        all_k.append(k), all_t.append(t), all_v.append(v)
        store.prune(int(t.min()) - max(windows))
        if b % 20 != 19:
            continue
        q = store.query(k, t, windows, minmax=True)
        keys, times, vals = np.concatenate(all_k), np.concatenate(all_t), np.vstack(all_v)
        for i in range(0, len(k), 25):
            for wi, w in enumerate(windows):
                m = (keys == k[i]) & (times >= t[i] - w) & (times < t[i])
                y = vals[m] - offset  # exact (Sterbenz), so the reference is accurate
                assert q["count"][wi][i] == m.sum()
                if m.sum() > 1:
                    assert np.allclose(q["mean"][wi][i] - offset, y.mean(axis=0), rtol=1e-9, atol=1e-9 * max(1, offset) * 1e-6)
                    assert np.allclose(q["std"][wi][i], y.std(axis=0, ddof=1), rtol=1e-9)
                    assert np.allclose(q["min"][wi][i], vals[m].min(axis=0), rtol=0, atol=0)
    assert len(store._state.runs) > 1, "the stream should leave several runs"


def test_a_snapshot_written_by_the_flat_layout_restores():
    """The snapshot format did not change: arrays sorted by (key, time), as checkpoints hold them."""
    old = {"keys": np.array([3, 3, 3, 9], np.uint64), "times": np.array([1, 5, 5, 2], np.int64) * US,
           "values": np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 1.0], [8.0, 2.0]])}
    st_ = SeriesStore(K)
    st_.restore(old)
    q = st_.query(np.array([3, 3, 9], np.uint64), np.array([6, 5, 3], np.int64) * US, [10 * US])
    assert q["count"][0].tolist() == [3, 1, 1]
    assert q["last"][:, 0].tolist() == [4.0, 1.0, 8.0]  # the later-arrived of a tie
    assert q["mean"][0][:, 0].tolist() == pytest.approx([7 / 3, 1.0, 8.0], rel=1e-15)
    for name in ("keys", "times", "values"):
        assert np.array_equal(st_.snapshot()[name], old[name])


def test_frozen_view_is_untouched_by_later_batches_and_the_old_attributes_still_work():
    st_ = SeriesStore(1)
    st_.insert(np.array([1, 2], np.uint64), np.array([0, 0], np.int64), np.array([[1.0], [2.0]]))
    view = st_.frozen()
    before = (view.keys.copy(), view.times.copy(), view.values.copy())
    for b in range(1, 40):  # enough to merge and rewrite runs
        st_.insert(np.array([1, 3], np.uint64), np.array([b, b], np.int64) * US, np.array([[b], [b]], float))
        st_.prune((b - 5) * US)
    assert all(np.array_equal(a, b) for a, b in zip(before, (view.keys, view.times, view.values)))
    assert view.query(np.array([1], np.uint64), np.array([10 * US]), [100 * US])["count"][0].tolist() == [1]
    # assigning the three arrays (what lookup._frozen does) gives a store holding exactly them
    copy = SeriesStore(1)
    copy.keys, copy.times, copy.values = st_.keys, st_.times, st_.values
    assert np.array_equal(copy.snapshot()["times"], st_.snapshot()["times"]) and copy.n_keys() == 3


def test_contains_tells_the_keys_with_rows():
    st_ = SeriesStore(1)
    st_.insert(np.array([1, 2], np.uint64), np.array([0, 50], np.int64) * US, np.ones((2, 1)))
    st_.prune(40 * US, expire_before_us=10 * US)  # key 1 idle since 0: expired
    st_.insert(np.array([3], np.uint64), np.array([60], np.int64) * US, np.ones((1, 1)))
    assert st_.contains(np.array([1, 2, 3, 4], np.uint64)).tolist() == [False, True, True, False]
    assert set(st_.keys.tolist()) == {2, 3}


def test_a_prune_before_any_watermark_is_not_a_move_backwards(monkeypatch):
    """FeatureShard prunes at int64.min // 2 minus the window while the watermark is -inf: that must
    stay the cheap path (moving a bound back rebuilds the whole store)."""
    st_ = SeriesStore(1)
    st_.insert(np.array([1, 2], np.uint64), np.array([0, 5], np.int64), np.ones((2, 1)))
    monkeypatch.setattr(SeriesStore, "_flat_arrays", lambda self: pytest.fail("rebuilt the whole store"))
    for _ in range(3):
        st_.prune(np.iinfo(np.int64).min // 2 - 3600 * US, np.iinfo(np.int64).min // 2 - 7200 * US)
    assert len(st_) == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_answers_do_not_depend_on_how_rows_are_split_into_runs(seed):
    """The same rows inserted in many small batches (overlapping in time, with ties) or restored into one
    run give bit-identical answers: every window is reduced in (time, arrival) order whatever the runs."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 30, 3000).astype(np.uint64)
    times = (np.arange(3000) // 3 + rng.integers(-40, 40, 3000)).astype(np.int64) * US  # late rows, ties
    values = np.column_stack([1e9 + rng.normal(0, 5, 3000), np.round(rng.normal(0, 3, 3000))])
    split = SeriesStore(K)
    for part in np.array_split(np.arange(3000), 37):
        split.insert(keys[part], times[part], values[part])
    whole = SeriesStore(K)
    whole.restore(split.snapshot())
    assert len(split._state.runs) > 1 and len(whole._state.runs) == 1
    qk = rng.integers(0, 32, 500).astype(np.uint64)
    qt = rng.integers(0, 1100, 500).astype(np.int64) * US
    a, b = split.query(qk, qt, [30 * US, 200 * US], minmax=True), whole.query(qk, qt, [30 * US, 200 * US], minmax=True)
    for name in ("count", "sum", "mean", "std", "min", "max"):
        for x, y in zip(a[name], b[name]):
            assert np.array_equal(x, y, equal_nan=True), name
    assert np.array_equal(a["last"], b["last"], equal_nan=True) and np.array_equal(a["age_us"], b["age_us"])
