"""Online lookups and served features (no Ray): ``FeatureShard.lookup``, ``ServedLog``, skew.

(a) a stream replayed offline: every event looked up once the shard has applied every earlier
    row gets the model row the shard's own training row holds for it, and the one an
    independent pandas computation gives, column by column;
(b) a brand-new entity (and a brand-new shard) gets empty-history features, no error;
(c) with ``training_features: served`` the training rows of scored events are exactly the
    served vectors; the skew is 0 when nothing arrived late and non-zero when a late event
    of the same entity was applied between scoring and the event's arrival; the coordinator
    sums it into ``stats()["skew"]``;
(d) a lookup changes no state; the view a lookup reads stays whole while the next batch is applied;
bad rows get reasons; the served log is checkpointed (and an old checkpoint still loads).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_feature_shard import (STREAM_FEATURES, _assert_same_state, _batches, _state, ev, frame, lab, offline_features,
                                small_cfg)

from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.partition import Watermark
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.local_runner import LocalRunner
from streamfit.actors.stream.lookup import BusyMeter
from streamfit.actors.stream.shard_checkpoint import load_shard_checkpoint, write_shard_checkpoint
from streamfit.actors.stream.sources import FramesSource
from streamfit.schema import EventArrays

NAN = float("nan")
LOOKUP_COLS = ["entity", "event_time", "x0", "x1", "x2", "event_id"]


def query(*rows: tuple) -> pd.DataFrame:
    """Lookup rows: (entity, event_time, x0, x1, x2, event_id)."""
    return pd.DataFrame([list(r) for r in rows], columns=LOOKUP_COLS)


def as_lookup(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[LOOKUP_COLS].reset_index(drop=True)


# == (a) lookups replayed offline ===============================================================

def test_lookups_equal_training_rows_and_offline_point_in_time_features():
    stream = pd.concat([b[1] for b in _batches()], ignore_index=True)
    is_event = (stream["kind"] == "event").to_numpy()
    scored = np.flatnonzero(is_event)[::7]  # each scored event starts a batch: every earlier row is applied
    cuts = [0, *[int(i) for i in scored if i > 0], len(stream)]
    shard = FeatureShard(STREAM_FEATURES, training_features="point_in_time")
    wm, clock, looked, rows, skews = Watermark(STREAM_FEATURES.allowed_lateness_s), -np.inf, {}, [], []
    for bid, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:]), start=1):
        chunk = stream.iloc[lo:hi]
        if lo in set(scored.tolist()):
            res = shard.lookup(as_lookup(chunk.iloc[:1]), record=True)
            assert res.reasons == [""] and res.times[0] == chunk["event_time"].iloc[0]
            looked[chunk["event_id"].iloc[0]] = res.features[0]
        clock = max(clock, float(chunk["event_time"].max()))
        out = shard.process(bid, chunk, wm.observe(chunk), clock)
        rows.append(out.training_rows)
        skews.append(out.skew)
    names = STREAM_FEATURES.feature_names()
    got = pd.DataFrame(np.vstack(list(looked.values())), index=list(looked), columns=names)
    assert len(got) > 150

    # the shard's own point-in-time training rows: the same numbers, bit for bit
    train = pd.concat(rows, ignore_index=True).set_index("event_id")
    both = got.index.intersection(train.index)
    assert len(both) > 100
    assert np.array_equal(got.loc[both, names].to_numpy(), train.loc[both, names].to_numpy(float), equal_nan=True)

    # an independent computation from the definitions, column by column
    ref = offline_features(stream, STREAM_FEATURES).loc[got.index, names]
    for name in names:
        g, e = got[name].to_numpy(float), ref[name].to_numpy(float)
        ok = np.isclose(g, e, rtol=1e-6, atol=1e-9, equal_nan=True)
        assert ok.all(), (name, list(got.index[~ok][:5]), g[~ok][:5], e[~ok][:5])
    assert (got["count_5m"] > 0).any() and (got["label_count_10m"] > 0).any()

    # nothing arrived late: every compared served vector equals its point-in-time one
    compared = [s for s in skews if s]
    assert sum(s["compared_rows"] for s in compared) == len(both)
    assert sum(s["rows_differing"] for s in compared) == 0


# == (b) empty history ==========================================================================

def test_a_new_entity_gets_empty_history_features():
    shard = FeatureShard(small_cfg())
    fresh = shard.lookup(query(("nobody", NAN, 1.0, 2.0, 3.0, "")))  # a shard that has seen nothing yet
    shard.process(1, frame(ev("a", "u", 0.0, 1.0), ev("b", "u", 10.0, 2.0), lab("a", "u", 5.0, 1.0)), 0.0, 10.0)
    res = shard.lookup(query(("nobody", NAN, 1.0, 2.0, 3.0, ""), ("u", 20.0, 4.0, 0.0, 0.0, "")))
    assert fresh.reasons == [""] and np.isnan(fresh.as_of)
    assert res.reasons == ["", ""] and res.as_of == 10.0 and res.times.tolist() == [10.0, 20.0]
    for r in (fresh, res):
        row = dict(zip(r.feature_names, r.features[0]))
        assert (row["x0"], row["x1"], row["x2"]) == (1.0, 2.0, 3.0)
        assert row["count_1m"] == 0 and row["x0_sum_1m"] == 0 and row["label_count_1m"] == 0
        for name in ("x0_mean_1m", "x0_min_1m", "x0_max_1m", "x0_last", "age_s", "label_last", "label_rate_1m"):
            assert np.isnan(row[name]), name
    known = dict(zip(res.feature_names, res.features[1]))
    assert known["count_1m"] == 2 and known["x0_sum_1m"] == 3 and known["age_s"] == 10 and known["label_last"] == 1


# == (c) served vectors become training rows; skew ==============================================

def _scored_then_labelled(mode: str, late: bool) -> tuple[FeatureShard, np.ndarray, pd.DataFrame, dict | None]:
    """Score event e, (maybe) apply a late event of the same entity, then e arrives and is labelled."""
    shard = FeatureShard(small_cfg(late_policy="apply"), training_features=mode)
    shard.process(1, frame(ev("a", "u", 0.0, 1.0), ev("b", "u", 10.0, 2.0)), 0.0, 10.0)
    served = shard.lookup(query(("u", 20.0, 5.0, 0.0, 0.0, "e")), record=True).features[0]
    filler = ev("l", "u", 15.0, 40.0) if late else ev("l", "other", 15.0, 40.0)
    assert shard.process(2, frame(ev("z", "other", 19.0), filler), 18.0, 19.0).reasons == {}
    shard.process(3, frame(ev("e", "u", 20.0, 5.0)), 18.0, 20.0)
    out = shard.process(4, frame(lab("e", "u", 30.0, 1.0)), 25.0, 30.0)
    return shard, served, out.training_rows, out.skew


def test_served_vectors_are_the_training_rows_and_no_skew_without_late_events():
    shard, served, rows, skew = _scored_then_labelled("served", late=False)
    names = shard.feature_names
    assert len(rows) == 1 and np.array_equal(rows[names].to_numpy(float)[0], served, equal_nan=True)
    assert skew["compared_rows"] == 1 and skew["rows_differing"] == 0
    assert all(f == {"differing": 0, "share": 0.0, "max_abs_diff": 0.0} for f in skew["features"].values())
    assert len(shard.served) == 0  # taken by the label


def test_a_late_event_between_scoring_and_label_shows_as_skew():
    shard, served, rows, skew = _scored_then_labelled("served", late=True)
    names = shard.feature_names
    assert shard.counters["late_applied"] == 1
    assert np.array_equal(rows[names].to_numpy(float)[0], served, equal_nan=True)  # what the model saw
    assert skew["compared_rows"] == 1 and skew["rows_differing"] == 1
    f = skew["features"]
    assert f["count_1m"] == {"differing": 1, "share": 1.0, "max_abs_diff": 1.0}
    assert f["x0_sum_1m"]["max_abs_diff"] == 40.0 and f["x0"]["differing"] == 0
    # point_in_time mode: the same skew, but the row holds the vector recomputed at the event's arrival
    _, served_pit, pit_rows, pit_skew = _scored_then_labelled("point_in_time", late=True)
    assert pit_skew == skew
    assert pit_rows["count_1m"].iloc[0] == 3 and served_pit[names.index("count_1m")] == 2


def test_the_coordinator_sums_skew_from_zero():
    cfg = small_cfg(late_policy="apply")
    batches = [frame(ev("a", "u", 0.0, 1.0), ev("b", "u", 10.0, 2.0)), frame(ev("l", "u", 15.0, 40.0)),
               frame(ev("e", "u", 20.0, 5.0), ev("f", "v", 20.0)),
               frame(lab("e", "u", 30.0, 1.0), lab("f", "v", 30.0, 0.0))]
    runner = LocalRunner(cfg, FramesSource(batches), on_rows=lambda rows, clock: None)
    zero = runner.coordinator.stats()["skew"]
    assert zero == {"compared_rows": 0, "rows_differing": 0,
                    "features": {n: {"differing": 0, "share": 0.0, "max_abs_diff": 0.0} for n in cfg.feature_names()}}
    runner.run_until(1)
    runner.shards[0].lookup(query(("u", 20.0, 5.0, 0.0, 0.0, "e"), ("v", 20.0, 0.0, 0.0, 0.0, "f")), record=True)
    skew = runner.run()["skew"]
    assert skew["compared_rows"] == 2 and skew["rows_differing"] == 1
    assert skew["features"]["count_1m"] == {"differing": 1, "share": 0.5, "max_abs_diff": 1.0}


# == (d) no state change; a consistent view ======================================================

def test_lookup_changes_no_state_and_reads_the_view_of_the_last_batch():
    shard = FeatureShard(small_cfg())
    shard.process(1, frame(ev("a", "u", 0.0, 1.0), ev("b", "u", 10.0, 2.0), lab("a", "u", 5.0, 1.0)), 0.0, 10.0)
    before = _state(shard)
    snap = shard.snapshot()
    shard.lookup(query(("u", 12.0, 1.0, 1.0, 1.0, "q"), ("new", NAN, 1.0, 1.0, 1.0, "")))
    _assert_same_state(_state(shard), before)
    assert len(shard.served) == 0 and shard.snapshot()["served"]["ids"].tolist() == snap["served"]["ids"].tolist()
    view = shard.view
    arrays = [a.copy() for a in (view.events.keys, view.events.times, view.events.values, view.labels.times)]
    first = shard.lookup(query(("u", 12.0, 1.0, 1.0, 1.0, "")))
    shard.process(2, frame(ev("c", "u", 11.0, 50.0), lab("b", "u", 11.0, 0.0)), 5.0, 11.0)
    # the old view is untouched by the batch (a lookup that read it still sees batch 1 whole)
    for old, now in zip(arrays, (view.events.keys, view.events.times, view.events.values, view.labels.times)):
        assert np.array_equal(old, now)
    assert shard.view is not view and shard.view.last_batch_id == 2 and view.last_batch_id == 1
    again = shard.lookup(query(("u", 12.0, 1.0, 1.0, 1.0, "")))
    names = first.feature_names
    assert first.features[0][names.index("count_1m")] == 2 and again.features[0][names.index("count_1m")] == 3


def test_bad_rows_get_reasons_and_the_rest_is_scored():
    shard = FeatureShard(small_cfg(max_future_s=60.0, max_past_s=100.0))
    shard.process(1, frame(ev("a", "u", 1000.0, 1.0)), 0.0, 1000.0)
    before = _state(shard)
    res = shard.lookup(query(
        ("u", NAN, 1.0, 0.0, 0.0, "ok"), ("u", 1061.0, 1.0, 0.0, 0.0, ""), ("u", 899.0, 1.0, 0.0, 0.0, ""),
        (None, NAN, 1.0, 0.0, 0.0, ""), ("u", NAN, "x", 0.0, 0.0, ""), ("u", NAN, np.inf, 0.0, 0.0, ""),
        ("u", NAN, 99.0, 0.0, 0.0, ""), ("u", NAN, NAN, 0.0, 0.0, "missing"), ("u", 1060.0, 1.0, 0.0, 0.0, "")),
        record=True)
    assert res.reasons == ["", "event_time_future", "event_time_past", "missing:entity", "non_numeric:x0",
                           "non_finite:x0", "out_of_range:x0", "missing:x0", ""]
    assert res.scored().tolist() == [r == "" for r in res.reasons]
    assert np.isnan(res.features[1:8]).all() and np.isnan(res.times[1:8]).all()
    assert not np.isnan(res.features[[0, 8], 0]).any()
    assert len(shard.served) == 1  # only scored rows with an event id are recorded
    _assert_same_state(_state(shard), before)


def test_arrays_as_a_router_sends_them_get_the_frame_answer():
    shard = FeatureShard(small_cfg(max_future_s=60.0, max_past_s=100.0))
    shard.process(1, frame(ev("a", "u", 1000.0, 1.0), ev("b", "v", 990.0, 3.0)), 0.0, 1000.0)
    rows = [("u", NAN, 1.0, 0.0, 0.0, "ok"), ("v", 1010.0, 2.0, NAN, 0.0, ""), ("u", 1061.0, 1.0, 0.0, 0.0, "f"),
            ("", NAN, 1.0, 0.0, 0.0, ""), ("w", NAN, 99.0, 0.0, 0.0, "r"), ("v", 999.0, 4.0, 1.0, 50.0, "s")]
    ent, t, x0, x1, x2, ids = zip(*rows)
    arrays = EventArrays(np.array(ent, dtype=object), np.array(t), np.column_stack([x0, x1, x2]), ["x0", "x1", "x2"],
                         np.array(ids, dtype=object))
    by_frame = FeatureShard(small_cfg(max_future_s=60.0, max_past_s=100.0))
    by_frame.restore(shard.snapshot())
    got, want = shard.lookup(arrays, record=True), by_frame.lookup(query(*rows), record=True)
    assert got.reasons == want.reasons == ["", "missing:x1", "event_time_future", "missing:entity",
                                           "out_of_range:x0", ""]
    assert np.array_equal(got.features, want.features, equal_nan=True) and got.features[5, 0] == 4.0
    assert np.array_equal(got.times, want.times, equal_nan=True) and got.as_of == want.as_of == 1000.0
    assert len(shard.served) == len(by_frame.served) == 2  # the scored rows with an id
    assert np.array_equal(shard.served.feats, by_frame.served.feats, equal_nan=True)


def test_a_lookup_says_how_busy_the_shard_is_applying_batches():
    shard = FeatureShard(small_cfg())
    assert shard.lookup(query(("u", NAN, 1.0, 0.0, 0.0, ""))).busy == 0.0  # no batch yet
    shard.busy.tau_s = 1e9  # nothing decays while the test runs, however slow the machine
    shard.process(1, frame(ev("a", "u", 0.0, 1.0)), 0.0, 0.0)
    busy = shard.lookup(query(("u", NAN, 1.0, 0.0, 0.0, ""))).busy
    assert 0.0 < busy < 1.0  # the batch took some time, and the shard is idle now


def test_the_busy_meter_is_an_exponential_average_of_the_busy_share():
    m = BusyMeter(tau_s=2.0)
    assert m.share(now=5.0) == 0.0
    m.begin(now=0.0)
    assert m.share(now=2.0) == pytest.approx(1 - np.exp(-1.0))  # busy for one tau so far
    m.end(now=2.0)
    assert m.share(now=4.0) == pytest.approx((1 - np.exp(-1.0)) * np.exp(-1.0))  # then idle for one
    for k in range(100):  # busy a quarter of every second, for long: the share settles near 0.25
        m.begin(now=10.0 + k)
        m.end(now=10.25 + k)
    assert 0.2 < m.share(now=110.0) < 0.3


# == the served log in checkpoints ==============================================================

def test_served_log_survives_a_checkpoint_and_an_old_checkpoint_still_loads(tmp_path):
    shard = FeatureShard(small_cfg())
    shard.process(1, frame(ev("a", "u", 0.0, 1.0)), 0.0, 0.0)
    served = shard.lookup(query(("u", 5.0, 2.0, 0.0, 0.0, "e")), record=True).features[0]
    store = CheckpointStore(str(tmp_path / "new"))
    write_shard_checkpoint(store, 1, shard)
    store.write_manifest(1, batch_id=1, position=1, num_shards=1)
    resumed = FeatureShard(small_cfg())
    assert load_shard_checkpoint(store, resumed, num_shards=1)
    resumed.process(2, frame(ev("e", "u", 5.0, 2.0)), 0.0, 5.0)
    rows = resumed.process(3, frame(lab("e", "u", 6.0, 1.0)), 0.0, 6.0).training_rows
    assert np.array_equal(rows[resumed.feature_names].to_numpy(float)[0], served, equal_nan=True)

    old = CheckpointStore(str(tmp_path / "old"))  # written by the store alone, as before served logs
    snap = shard.snapshot()
    del snap["served"]
    old.write_shard(1, 0, snap)
    old.write_manifest(1, batch_id=1, position=1, num_shards=1)
    loaded = FeatureShard(small_cfg())
    assert load_shard_checkpoint(old, loaded, num_shards=1)
    assert len(loaded.served) == 0 and loaded.last_batch_id == 1
    loaded.restore(snap)  # a snapshot without the part restores too
    assert len(loaded.served) == 0


def test_served_log_is_bounded_and_counts_evictions():
    shard = FeatureShard(small_cfg(served_log_capacity=3))
    shard.lookup(query(*[("u", NAN, 1.0, 0.0, 0.0, f"e{i}") for i in range(5)]), record=True)
    assert len(shard.served) == 3 and shard.served.evicted == 2
    assert shard.snapshot()["served"]["evicted"] == 2


def test_the_local_runner_asks_the_shard_that_owns_each_entity():
    stream = pd.concat([b[1] for b in _batches(10)], ignore_index=True)
    frames = [stream.iloc[i:i + 100] for i in range(0, len(stream), 100)]
    one, three = (LocalRunner(STREAM_FEATURES, FramesSource(frames), num_shards=n) for n in (1, 3))
    one.run()
    three.run()
    entities = sorted(stream["entity"].unique())[:12]
    ask = pd.DataFrame({"entity": [*entities, "nobody"], "event_time": NAN, "x0": 1.0, "x1": 0.0, "x2": 0.0,
                        "event_id": ""})
    a, b = one.lookup(ask), three.lookup(ask)
    assert a.reasons == b.reasons == [""] * len(ask) and a.as_of == b.as_of
    assert np.array_equal(a.features, b.features, equal_nan=True) and np.array_equal(a.times, b.times)
    assert (a.features[:-1, a.feature_names.index("count_5m")] > 0).any()
