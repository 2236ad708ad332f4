"""Unit tests of actors/windows.py EntityWindows against a pandas reference."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.windows import EntityWindows


def _stream(n: int, n_entities: int, seed: int, integer_gaps: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    if integer_gaps:
        # whole seconds: many events fall exactly on a window boundary t - W
        gaps = rng.integers(1, 5, size=n).astype(float)
    else:
        gaps = rng.exponential(1.5, size=n) + 1e-3
    t = 1_000.0 + np.cumsum(gaps)
    return pd.DataFrame(
        {
            "entity": np.array([f"e{k}" for k in rng.integers(0, n_entities, size=n)], dtype=object),
            "t": t,
            "a": rng.normal(0, 10, size=n),
            "b": rng.uniform(-5, 5, size=n),
        }
    )


def _pandas_reference(df: pd.DataFrame, window_s: float) -> pd.DataFrame:
    """count and means over (t - W, t] per entity, computed by pandas' time-based rolling."""
    d = df.copy()
    d["ts"] = pd.to_datetime(d["t"], unit="s")
    roll = d.groupby("entity").rolling(f"{int(window_s)}s", on="ts", closed="right")
    count = roll["a"].count().reset_index(level=0, drop=True)
    mean_a = roll["a"].mean().reset_index(level=0, drop=True)
    mean_b = roll["b"].mean().reset_index(level=0, drop=True)
    return pd.DataFrame({"count": count, "mean_a": mean_a, "mean_b": mean_b}).sort_index()


@pytest.mark.parametrize("integer_gaps", [True, False], ids=["boundary-hits", "float-gaps"])
@pytest.mark.parametrize("window_s", [30.0, 120.0])
def test_counts_and_means_match_pandas_rolling(integer_gaps, window_s):
    df = _stream(2000, 30, seed=11, integer_gaps=integer_gaps)
    ref = _pandas_reference(df, window_s)
    w = EntityWindows(window_s=window_s, n_values=2)
    counts, means = [], []
    for ent, t, a, b in df[["entity", "t", "a", "b"]].itertuples(index=False):
        c, m = w.update(ent, t, [a, b])
        counts.append(c)
        means.append(m)
    counts = np.array(counts, dtype=float)
    means = np.array(means)
    assert np.array_equal(counts, ref["count"].to_numpy())
    assert np.isclose(means[:, 0], ref["mean_a"].to_numpy()).all()
    assert np.isclose(means[:, 1], ref["mean_b"].to_numpy()).all()
    # the windows are genuinely sliding: some counts are > 1 and some events have left
    assert counts.max() > 1
    assert (counts < df.groupby("entity").cumcount().to_numpy() + 1).any()


def test_window_is_open_at_start_closed_at_end():
    w = EntityWindows(window_s=10.0, n_values=1)
    assert w.update("a", 0.0, [1.0]) == (1, [1.0])
    # event at t=10: the event at exactly t - W = 0 is outside (0, 10]
    assert w.update("a", 10.0, [3.0]) == (1, [3.0])
    # two events at the same time are both inside
    assert w.update("a", 10.0, [5.0]) == (2, [4.0])


def test_entities_do_not_mix():
    w = EntityWindows(window_s=100.0, n_values=1)
    w.update("a", 1.0, [10.0])
    assert w.update("b", 2.0, [0.0]) == (1, [0.0])
    assert w.update("a", 3.0, [20.0]) == (2, [15.0])
    assert len(w) == 2


def test_out_of_order_event_sees_only_its_own_past():
    w = EntityWindows(window_s=10.0, n_values=1)
    w.update("a", 100.0, [100.0])
    # an event at t=95 arriving late is aggregated as of t=95: the t=100 event is in its future
    assert w.update("a", 95.0, [1.0]) == (1, [1.0])
    assert w.current("a", 100.0) == (2, [50.5])


def test_current_does_not_add_an_event():
    w = EntityWindows(window_s=10.0, n_values=1)
    assert w.current("nobody", 5.0) is None
    w.update("a", 0.0, [4.0])
    assert w.current("a", 5.0) == (1, [4.0])
    assert w.current("a", 5.0) == (1, [4.0])
    count, means = w.current("a", 20.0)
    assert count == 0 and np.isnan(means[0])


def test_expire_drops_only_events_that_cannot_be_in_a_future_window():
    window_s = 30.0
    df = _stream(2000, 30, seed=3, integer_gaps=True)
    w = EntityWindows(window_s=window_s, n_values=2)
    for ent, t, a, b in df[["entity", "t", "a", "b"]].itertuples(index=False):
        w.update(ent, t, [a, b])
    keep_all = copy.deepcopy(w)
    watermark = float(df["t"].iloc[1500])
    w.expire(watermark)

    # every window at or after the watermark is unchanged by expiry
    entities = sorted(df["entity"].unique())
    probe_times = [watermark, watermark + 0.5, watermark + window_s / 2, float(df["t"].max()), watermark + window_s - 1]
    for ent in entities:
        for t in probe_times:
            full = keep_all.current(ent, t)
            got = w.current(ent, t)
            if got is None:
                # forgotten entity: it had nothing that could still be in a window
                assert full[0] == 0
                assert (df.loc[df["entity"] == ent, "t"] <= watermark - window_s).all()
            else:
                assert got[0] == full[0]
                assert np.allclose(got[1], full[1], equal_nan=True)

    # memory is actually released: events at or before watermark - W are gone
    kept = sum(len(st.times) for st in w._state.values())
    expected = int((df["t"] > watermark - window_s).sum())
    assert kept == expected
    assert all(t > watermark - window_s for st in w._state.values() for t in st.times)

    # and new events after expiry aggregate exactly as without it
    t_new = float(df["t"].max()) + 1.0
    for ent in entities[:5]:
        assert w.update(ent, t_new, [1.0, 2.0])[0] == keep_all.update(ent, t_new, [1.0, 2.0])[0]


def test_expire_forgets_idle_entities():
    w = EntityWindows(window_s=10.0, n_values=1)
    w.update("old", 0.0, [1.0])
    w.update("edge", 5.0, [1.0])
    w.update("new", 20.0, [1.0])
    w.expire(15.0)  # horizon 5: an event at exactly 5 cannot be in (t - 10, t] for any t >= 15
    assert w.current("old", 15.0) is None
    assert w.current("edge", 15.0) is None
    assert w.current("new", 20.0) == (1, [1.0])
    assert len(w) == 1
    w.update("keep", 6.0, [2.0])
    w.expire(15.0)
    assert w.current("keep", 15.0) == (1, [2.0])
