"""Unit tests of actors/windows.py (SeriesStore, concat_ranges, to_us) against a pandas reference.

Windows are [t - W, t): strictly before the event, so an event's own values (and those of
other events at the very same time) are not in its history. pandas' time-based
``Series.rolling(f"{W}s", closed="left")`` has exactly these semantics, including ties.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.stream.windows import US, SeriesStore, concat_ranges, to_us

WINDOWS_S = [30, 300]
OPS = ["count", "sum", "mean", "std", "min", "max"]


def _stream(n: int = 3000, n_entities: int = 40, seed: int = 5) -> pd.DataFrame:
    """Events in arrival order: integer-second times (many ties, many exact window boundaries)."""
    rng = np.random.default_rng(seed)
    # ~0.5 s per event on average in integer seconds -> many events share a second
    t = 10_000 + np.sort(rng.integers(0, n // 2, size=n))
    df = pd.DataFrame(
        {
            "row": np.arange(n),
            "key": rng.integers(0, n_entities, size=n).astype(np.uint64) * np.uint64(7919) + np.uint64(3),
            "t": t.astype(np.int64),
            # a large offset on one column checks that std stays accurate
            "a": rng.normal(0.0, 10.0, size=n),
            "b": 1e6 + rng.normal(0.0, 1.0, size=n),
        }
    )
    return df


def _pandas_reference(df: pd.DataFrame) -> pd.DataFrame:
    """Per entity, time-based rolling [t - W, t) on a DatetimeIndex; mapped back by the row column."""
    parts = []
    df = df.assign(_arrival=np.arange(len(df)))  # df is in arrival order; ties keep it
    for _, g in df.groupby("key", sort=False):
        g = g.sort_values(["t", "_arrival"], kind="stable")
        idx = pd.DatetimeIndex(pd.to_datetime(g["t"].to_numpy(), unit="s"))
        out = pd.DataFrame({"row": g["row"].to_numpy()})
        for w in WINDOWS_S:
            for col in ("a", "b"):
                s = pd.Series(g[col].to_numpy(), index=idx)
                r = s.rolling(f"{w}s", closed="left")
                out[f"count_{w}"] = r.count().fillna(0).to_numpy()
                for op in ("sum", "mean", "std", "min", "max"):
                    out[f"{col}_{op}_{w}"] = getattr(r, op)().to_numpy()
        # previous event of the entity at a strictly earlier time (ties: the one that arrived last)
        times = g["t"].to_numpy()
        prev_pos = np.searchsorted(times, times, "left") - 1
        has = prev_pos >= 0
        safe = np.where(has, prev_pos, 0)
        for col in ("a", "b"):
            out[f"{col}_last"] = np.where(has, g[col].to_numpy()[safe], np.nan)
        out["age_us"] = np.where(has, (times - times[safe]) * US, -1)
        parts.append(out)
    return pd.concat(parts).set_index("row").sort_index()


def _shuffle_within_batches(df: pd.DataFrame, n_batches: int, seed: int = 0) -> pd.DataFrame:
    """The same events, arriving out of time order inside each batch."""
    rng = np.random.default_rng(seed)
    parts = [df.iloc[p].iloc[rng.permutation(len(p))] for p in np.array_split(np.arange(len(df)), n_batches)]
    return pd.concat(parts, ignore_index=True)


def _feed(df: pd.DataFrame, n_batches: int, prune: bool):
    """Insert the stream (in arrival order) batch by batch; query each batch's events right after inserting it."""
    st = SeriesStore(n_values=2)
    results = []
    for part in np.array_split(np.arange(len(df)), n_batches):
        b = df.iloc[part]
        keys = b["key"].to_numpy(np.uint64)
        t_us = b["t"].to_numpy(np.int64) * US
        st.insert(keys, t_us, b[["a", "b"]].to_numpy())
        q = st.query(keys, t_us, [w * US for w in WINDOWS_S], minmax=True)
        res = pd.DataFrame({"row": b["row"].to_numpy()})
        for wi, w in enumerate(WINDOWS_S):
            res[f"count_{w}"] = q["count"][wi]
            for ci, col in enumerate(("a", "b")):
                for op in ("sum", "mean", "std", "min", "max"):
                    res[f"{col}_{op}_{w}"] = q[op][wi][:, ci]
        for ci, col in enumerate(("a", "b")):
            res[f"{col}_last"] = q["last"][:, ci]
        res["age_us"] = q["age_us"]
        results.append(res)
        if prune:
            # a watermark at this batch's earliest time: every later query is at or after it
            st.prune(int(t_us.min()) - max(WINDOWS_S) * US)
    return st, pd.concat(results).set_index("row").sort_index()


@pytest.mark.parametrize(
    "n_batches, shuffle_within, prune",
    [(1, False, False), (7, False, False), (12, True, True)],
    ids=["one-batch", "seven-batches", "twelve-shuffled-batches-pruned"],
)
def test_aggregates_match_pandas_rolling_closed_left(n_batches, shuffle_within, prune):
    df = _stream()
    if shuffle_within:
        df = _shuffle_within_batches(df, n_batches)
        assert not df["t"].is_monotonic_increasing
    ref = _pandas_reference(df)
    _, got = _feed(df, n_batches, prune)
    assert len(got) == len(df) == len(ref)
    for w in WINDOWS_S:
        cnt = got[f"count_{w}"].to_numpy()
        assert np.array_equal(cnt, ref[f"count_{w}"].to_numpy().astype(np.int64)), f"count over {w}s"
        for col in ("a", "b"):
            for op in ("sum", "mean", "std", "min", "max"):
                exp = ref[f"{col}_{op}_{w}"].to_numpy()
                if op == "sum":
                    exp = np.where(cnt == 0, 0.0, exp)  # an empty window sums to 0 (pandas says NaN)
                g = got[f"{col}_{op}_{w}"].to_numpy()
                ok = np.isclose(g, exp, rtol=1e-6, atol=1e-9, equal_nan=True)
                assert ok.all(), (w, col, op, np.flatnonzero(~ok)[:5], g[~ok][:5], exp[~ok][:5])
    for col in ("a", "b"):
        assert np.array_equal(got[f"{col}_last"].to_numpy(), ref[f"{col}_last"].to_numpy(), equal_nan=True), col
    assert np.array_equal(got["age_us"].to_numpy(), ref["age_us"].to_numpy())
    # the test data really exercises the interesting cases
    assert (ref["count_30"] == 0).any() and (ref["count_30"] > 3).any()
    assert (ref["count_300"] > ref["count_30"]).any()
    assert df.duplicated(["key", "t"]).any(), "ties within an entity"


def test_event_own_values_and_same_time_events_are_not_in_its_history():
    st = SeriesStore(n_values=1)
    k = np.array([1, 1, 1, 1], np.uint64)
    st.insert(k, np.array([0, 10, 10, 20], np.int64) * US, np.array([[1.0], [2.0], [3.0], [4.0]]))
    q = st.query(np.array([1, 1, 1], np.uint64), np.array([10, 20, 30], np.int64) * US, [10 * US])
    # at t=10: [0, 10) holds only the event at 0; at t=20: [10, 20) holds both events at 10 (boundary included)
    # at t=30: [20, 30) holds the event at 20
    assert q["count"][0].tolist() == [1, 2, 1]
    assert q["sum"][0][:, 0].tolist() == [1.0, 5.0, 4.0]
    assert q["last"][:, 0].tolist() == [1.0, 3.0, 4.0]  # previous event, the later-arrived of a tie
    assert q["age_us"].tolist() == [10 * US, 10 * US, 10 * US]


def test_last_and_age_have_no_age_limit_and_unknown_key_is_empty():
    st = SeriesStore(n_values=1)
    st.insert(np.array([5], np.uint64), np.array([0], np.int64), np.array([[7.0]]))
    q = st.query(np.array([5, 6, 5], np.uint64), np.array([10_000 * US, 10_000 * US, 0], np.int64), [60 * US],
                 minmax=True)
    assert q["count"][0].tolist() == [0, 0, 0]
    assert q["sum"][0][:, 0].tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(q["mean"][0]).all() and np.isnan(q["min"][0]).all() and np.isnan(q["max"][0]).all()
    # the previous value is reported however old it is; nothing for an unknown key or before the first event
    assert q["last"][0, 0] == 7.0 and q["age_us"][0] == 10_000 * US
    assert np.isnan(q["last"][1, 0]) and q["age_us"][1] == -1
    assert np.isnan(q["last"][2, 0]) and q["age_us"][2] == -1


def test_keys_do_not_mix():
    st = SeriesStore(n_values=1)
    st.insert(np.array([1, 2, 1], np.uint64), np.array([0, 1, 2], np.int64) * US, np.array([[10.0], [99.0], [20.0]]))
    q = st.query(np.array([1, 2], np.uint64), np.array([3, 3], np.int64) * US, [100 * US], minmax=True)
    assert q["count"][0].tolist() == [2, 1]
    assert q["mean"][0][:, 0].tolist() == [15.0, 99.0]
    assert q["max"][0][:, 0].tolist() == [20.0, 99.0]
    assert q["last"][:, 0].tolist() == [20.0, 99.0]
    assert st.n_keys() == 2 and len(st) == 3


def test_std_of_a_key_does_not_depend_on_other_keys_in_the_same_query():
    # one key with a large spread (amounts in the 1e5 range), one with a small spread
    rng = np.random.default_rng(0)
    st = SeriesStore(n_values=1)
    big = rng.normal(0.0, 1e5, size=(2000, 1))
    small = 5.0 + rng.normal(0.0, 0.01, size=(50, 1))
    st.insert(np.full(2000, 1, np.uint64), np.arange(2000) * US, big)
    st.insert(np.full(50, 2, np.uint64), np.arange(50) * US, small)
    expected = np.std(small[:, 0], ddof=1)
    alone = st.query(np.array([2], np.uint64), np.array([100 * US]), [1000 * US])
    together = st.query(np.array([1, 2], np.uint64), np.array([100 * US, 100 * US]), [1000 * US])
    assert alone["std"][0][0, 0] == pytest.approx(expected, rel=1e-6)
    assert together["std"][0][1, 0] == pytest.approx(expected, rel=1e-6)
    assert together["mean"][0][1, 0] == pytest.approx(small.mean(), rel=1e-9)


def test_out_of_order_insert_sees_only_its_own_past():
    st = SeriesStore(n_values=1)
    st.insert(np.array([1], np.uint64), np.array([100 * US]), np.array([[100.0]]))
    st.insert(np.array([1], np.uint64), np.array([95 * US]), np.array([[1.0]]))
    q = st.query(np.array([1, 1], np.uint64), np.array([95 * US, 101 * US]), [10 * US])
    assert q["count"][0].tolist() == [0, 2]
    assert q["mean"][0][1, 0] == pytest.approx(50.5)
    assert q["last"][:, 0].tolist()[1] == 100.0 and q["age_us"][1] == US
    assert np.array_equal(st.times, np.array([95, 100]) * US)  # kept sorted by time within the key


def test_prune_keeps_reachable_rows_and_each_keys_newest_row():
    df = _stream(n=3000, n_entities=40, seed=9)
    # one entity seen only at the start, long before the horizon
    early = pd.DataFrame({"row": [3000, 3001], "key": np.array([1, 1], np.uint64), "t": [10_000, 10_001],
                          "a": [5.0, 6.0], "b": [1e6, 1e6]})
    df = pd.concat([early, df], ignore_index=True)
    st_full, _ = _feed(df, 1, False)
    st = SeriesStore(n_values=2)
    st.restore({k: v.copy() for k, v in st_full.snapshot().items()})
    wmax = max(WINDOWS_S) * US
    watermark = int(df["t"].iloc[2000]) * US
    horizon = watermark - wmax
    st.prune(horizon)

    # what is left: every row at or after the horizon, plus each key's newest row
    newest = df.sort_values(["key", "t", "row"]).groupby("key").tail(1)["row"]
    expected_rows = set(df.loc[df["t"] * US >= horizon, "row"]) | set(newest)
    assert len(st) == len(expected_rows) < len(df)
    assert st.n_keys() == df["key"].nunique()
    # every key keeps its newest row, even idle ones whose newest row is older than the horizon
    idle = df.groupby("key")["t"].max() * US < horizon
    assert idle.any(), "the test should include an entity idle since before the horizon"
    assert st.times[st.keys == 1].tolist() == [10_001 * US] and st.values[st.keys == 1, 0].tolist() == [6.0]

    # queries at or after the watermark are unchanged by pruning (windows, last value and age)
    keys = np.repeat(df["key"].unique().astype(np.uint64), 4)
    times = np.tile(np.array([watermark, watermark + 7 * US, int(df["t"].max()) * US, int(df["t"].max() + 400) * US]),
                    df["key"].nunique())
    ws = [w * US for w in WINDOWS_S]
    a, b = st.query(keys, times, ws, minmax=True), st_full.query(keys, times, ws, minmax=True)
    for wi in range(len(ws)):
        assert np.array_equal(a["count"][wi], b["count"][wi])
        for op in ("sum", "mean", "std", "min", "max"):
            assert np.allclose(a[op][wi], b[op][wi], rtol=1e-9, equal_nan=True), op
    assert np.array_equal(a["last"], b["last"], equal_nan=True)
    assert np.array_equal(a["age_us"], b["age_us"])


def test_prune_on_empty_store_and_everything_kept():
    st = SeriesStore(n_values=1)
    st.prune(10**12)
    assert len(st) == 0
    st.insert(np.array([1, 1, 2], np.uint64), np.array([0, 5, 3], np.int64), np.ones((3, 1)))
    st.prune(-(10**12))
    assert len(st) == 3
    st.prune(10**12)  # everything is old: only each key's newest row stays
    assert st.times.tolist() == [5, 3] and st.keys.tolist() == [1, 2]


def test_state_round_trip_gives_identical_arrays_and_answers():
    df = _stream(n=800, n_entities=20, seed=2)
    st, _ = _feed(_shuffle_within_batches(df, 4), 4, False)
    back = SeriesStore(n_values=2)
    back.restore(st.snapshot())
    for name in ("keys", "times", "values"):
        assert np.array_equal(getattr(back, name), getattr(st, name))
        assert getattr(back, name).dtype == getattr(st, name).dtype
    keys = df["key"].to_numpy(np.uint64)
    times = (df["t"].to_numpy(np.int64) + 1) * US
    ws = [w * US for w in WINDOWS_S]
    a, b = back.query(keys, times, ws, minmax=True), st.query(keys, times, ws, minmax=True)
    for wi in range(len(ws)):
        for op in OPS:
            assert np.array_equal(a[op][wi], b[op][wi], equal_nan=True), op
    # the restored store keeps working: a new row lands in the right place
    back.insert(keys[:1], times[:1], np.array([[1.0, 2.0]]))
    st.insert(keys[:1], times[:1], np.array([[1.0, 2.0]]))
    assert np.array_equal(back.times, st.times) and np.array_equal(back.values, st.values)


def test_empty_insert_and_empty_query():
    st = SeriesStore(n_values=2)
    st.insert(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros((0, 2)))
    assert len(st) == 0
    q = st.query(np.zeros(0, np.uint64), np.zeros(0, np.int64), [US], minmax=True)
    assert q["count"][0].shape == (0,) and q["age_us"].shape == (0,)


@pytest.mark.parametrize("populated", [False, True], ids=["empty-store", "other-keys-only"])
def test_query_of_unknown_keys_has_one_column_per_value(populated):
    # ``last`` is documented as (n, k): one column per stored value, nan when the key has no row.
    st = SeriesStore(n_values=3)
    if populated:
        st.insert(np.array([9], np.uint64), np.array([0], np.int64), np.array([[1.0, 2.0, 3.0]]))
    q = st.query(np.array([1, 2], np.uint64), np.array([5 * US, 6 * US]), [US], minmax=True)
    assert q["count"][0].tolist() == [0, 0] and q["age_us"].tolist() == [-1, -1]
    for op in ("sum", "mean", "std", "min", "max"):
        assert q[op][0].shape == (2, 3), op
    assert q["last"].shape == (2, 3)
    assert np.isnan(q["last"]).all()


def test_concat_ranges():
    assert concat_ranges(np.array([0, 5, 2]), np.array([3, 5, 4])).tolist() == [0, 1, 2, 2, 3]
    assert concat_ranges(np.array([4]), np.array([4])).tolist() == []
    assert concat_ranges(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []


def test_to_us_is_exact_for_float_seconds():
    assert to_us(1.5) == 1_500_000
    assert to_us(np.array([0.1, 0.2, 0.3])).tolist() == [100_000, 200_000, 300_000]
    assert to_us(1_700_000_000.000001) == 1_700_000_000_000_001
    assert to_us(np.array([1.0])).dtype == np.int64
