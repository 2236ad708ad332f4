"""Unit tests of actors/feature_shard.py and actors/checkpoint.py (no Ray).

- point-in-time correct training rows against an independent offline computation,
- validation reasons, clipping, dedup, lateness,
- the label join and label-history features,
- exactly-once mechanics (retried batch ids, gaps, snapshot/restore, checkpoints, re-partitioning).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from shard_streams import assert_same_state, feed, make_batches, reshard_two_into_three, shard_state
from streamfit.actors.stream.checkpoint import CheckpointStore, repartition
from streamfit.actors.stream.partition import Partitioner
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.schema import validate
from streamfit.config import AggregateSpec, FeaturesConfig, FieldSpec, LabelHistoryConfig, StreamConfig
from streamfit.schema import shard_of

NAN = float("nan")
NEG_INF = -math.inf
COLS = ["kind", "event_id", "entity", "event_time", "x0", "x1", "x2", "label"]


def ev(event_id, entity, t, x0=0.0, x1=0.0, x2=0.0):
    return ["event", event_id, entity, t, x0, x1, x2, NAN]


def lab(event_id, entity, t, label):
    return ["label", event_id, entity, t, NAN, NAN, NAN, label]


def frame(*rows) -> pd.DataFrame:
    # object dtype everywhere, as a batch decoded from JSON would be
    return pd.DataFrame([list(r) for r in rows], columns=COLS).astype(object)


def small_cfg(**kw) -> FeaturesConfig:
    """One 60 s window; x0: sum/mean/min/max and last; label history over 60 s."""
    base = dict(
        windows_s=[60.0],
        aggregates=[AggregateSpec(field="x0", ops=["sum", "mean", "min", "max"], last=True)],
        label_history=LabelHistoryConfig(windows_s=[60.0]),
    )
    base.update(kw)
    return FeaturesConfig(**base)


@pytest.fixture
def cfg() -> FeaturesConfig:
    return small_cfg()


def _row(rows: pd.DataFrame, event_id: str) -> pd.Series:
    sel = rows[rows["event_id"] == event_id]
    assert len(sel) == 1, rows
    return sel.iloc[0]


# == (a) a multi-batch stream against an independent offline computation =======================

STREAM_FEATURES = FeaturesConfig(
    windows_s=[30.0, 300.0],
    aggregates=[
        AggregateSpec(field="x0", ops=["sum", "mean", "std", "min", "max"], last=True),
        AggregateSpec(field="x1", ops=["mean", "min"], last=True),
    ],
    label_history=LabelHistoryConfig(windows_s=[60.0, 600.0]),
)
STREAM = StreamConfig(batch_size=60, entities=25, label_delay_events=40, events_per_second=2.0,
                      bad_row_rate=0.0, seed=11)
N_BATCHES = 40


def _batches(n: int = N_BATCHES, features: FeaturesConfig = STREAM_FEATURES) -> list[tuple[int, pd.DataFrame, float]]:
    """(batch id, frame, watermark) as the coordinator would send them."""
    return make_batches(n, STREAM, features)


def _us(t) -> np.ndarray:
    return np.round(np.asarray(t, dtype=np.float64) * 1e6).astype(np.int64)


def offline_features(stream: pd.DataFrame, cfg: FeaturesConfig) -> pd.DataFrame:
    """Feature vector of every event, computed directly from the definitions, entity by entity.

    Windows are [t - W, t) over the entity's earlier events; ``last``/``age_s`` come from the
    entity's previous event (any age); label history counts the entity's label rows whose
    arrival time (their event_time) is before t.
    """
    fields = [f.name for f in cfg.fields]
    events = stream[stream["kind"] == "event"]
    labels = stream[stream["kind"] == "label"]
    out = []
    for entity, g in events.groupby("entity", sort=False):
        g = g.reset_index(drop=True)  # arrival order
        tu = _us(g["event_time"].to_numpy(float))
        vals = {f: g[f].to_numpy(float) for f in fields}
        lg = labels[labels["entity"] == entity]
        ltu = _us(lg["event_time"].to_numpy(float))
        lval = lg["label"].to_numpy(float)
        for i in range(len(g)):
            t = tu[i]
            row: dict[str, float] = {"event_id": g["event_id"][i]}
            for f in fields:
                row[f] = vals[f][i]
            for w in cfg.windows_s:
                tag = _tag(w)
                inside = (tu >= t - _us(w)) & (tu < t)
                if cfg.count:
                    row[f"count_{tag}"] = float(inside.sum())
                for a in cfg.aggregates:
                    v = vals[a.field][inside]
                    for op in a.ops:
                        if op == "sum":
                            x = float(v.sum())
                        elif len(v) == 0 or (op == "std" and len(v) < 2):
                            x = NAN
                        else:
                            x = float({"mean": np.mean, "min": np.min, "max": np.max}[op](v)) if op != "std" \
                                else float(np.std(v, ddof=1))
                        row[f"{a.field}_{op}_{tag}"] = x
            before = np.flatnonzero(tu < t)
            prev = before[np.argmax(tu[before])] if len(before) else None  # latest earlier event
            for a in cfg.aggregates:
                if a.last:
                    row[f"{a.field}_last"] = NAN if prev is None else vals[a.field][prev]
            if cfg.age:
                row["age_s"] = NAN if prev is None else (t - tu[prev]) / 1e6
            if cfg.label_history.enabled:
                lb = np.flatnonzero(ltu < t)
                row["label_last"] = lval[lb[np.argmax(ltu[lb])]] if len(lb) else NAN
                for w in cfg.label_history.windows_s:
                    tag = _tag(w)
                    inside = (ltu >= t - _us(w)) & (ltu < t)
                    row[f"label_rate_{tag}"] = float(lval[inside].mean()) if inside.any() else NAN
                    row[f"label_count_{tag}"] = float(inside.sum())
            out.append(row)
    return pd.DataFrame(out).set_index("event_id")


def _tag(w: float) -> str:
    from streamfit.config import window_tag

    return window_tag(w)


_feed = feed


def _assert_rows_match_offline(rows: pd.DataFrame, stream: pd.DataFrame, cfg: FeaturesConfig) -> None:
    ref = offline_features(stream, cfg)
    names = cfg.feature_names()
    assert list(rows.columns) == ["event_id", "entity", "event_time", *names, "label"]
    got = rows.set_index("event_id")
    exp = ref.loc[got.index, names]
    for name in names:
        g, e = got[name].to_numpy(float), exp[name].to_numpy(float)
        ok = np.isclose(g, e, rtol=1e-6, atol=1e-9, equal_nan=True)
        assert ok.all(), (name, list(got.index[~ok][:5]), g[~ok][:5], e[~ok][:5])


def test_training_rows_equal_offline_features_of_the_event():
    batches = _batches()
    stream = pd.concat([b[1] for b in batches], ignore_index=True)
    shard = FeatureShard(STREAM_FEATURES)
    rows = _feed([shard], batches)

    labels = stream[stream["kind"] == "label"].set_index("event_id")["label"].astype(float)
    # one row per label that arrived, with the label that named it and the event's own time and entity
    assert len(rows) == len(labels) > 1500
    assert not rows["event_id"].duplicated().any()
    assert np.array_equal(rows["label"].to_numpy(float), labels.loc[rows["event_id"]].to_numpy())
    events = stream[stream["kind"] == "event"].set_index("event_id")
    assert (rows["entity"].to_numpy() == events.loc[rows["event_id"], "entity"].to_numpy()).all()
    assert np.array_equal(rows["event_time"].to_numpy(float), events.loc[rows["event_id"], "event_time"].to_numpy(float))
    _assert_rows_match_offline(rows, stream, STREAM_FEATURES)

    # the stream really exercises sliding windows and label history
    assert rows["count_30s"].min() == 0 and rows["count_5m"].max() > rows["count_30s"].max()
    assert (rows["label_count_1m"] > 0).any() and (rows["label_count_10m"] > rows["label_count_1m"]).any()
    assert rows["age_s"].isna().any() and (rows["age_s"] > 30).any()
    stats = shard.stats()
    assert stats["events"] == len(events) and stats["rejected"] == 0
    assert stats["training_rows"] == len(rows)
    assert stats["pending_labels"] == len(events) - len(labels)


def test_training_rows_through_three_shards_equal_one_shard():
    batches = _batches(25)
    stream = pd.concat([b[1] for b in batches], ignore_index=True)
    one = _feed([FeatureShard(STREAM_FEATURES)], batches)
    shards = [FeatureShard(STREAM_FEATURES, i) for i in range(3)]
    three = _feed(shards, batches)
    key = lambda d: d.sort_values("event_id").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(one), key(three))
    _assert_rows_match_offline(three, stream, STREAM_FEATURES)
    for i, s in enumerate(shards):
        assert s.stats()["training_rows"] > 0
        owned = shard_of(np.array(s.pending.entities[s.pending.alive], dtype=object), 3)
        assert (owned == i).all()


# == point-in-time: the label join and label history ==========================================


def test_label_after_later_events_uses_features_as_of_the_labelled_event(cfg):
    shard = FeatureShard(cfg)
    r1 = shard.process(
        1,
        frame(ev("a", "u1", 0.0, x0=1.0, x1=7.0), ev("b", "u1", 10.0, x0=3.0), ev("c", "u1", 20.0, x0=5.0)),
        watermark=NEG_INF,
    )
    assert r1.accepted == 3 and len(r1.training_rows) == 0
    # labels for a and b arrive after c, in a later batch
    r2 = shard.process(2, frame(lab("a", "u1", 30.0, 1.0), lab("b", "u1", 31.0, 0.0)), watermark=15.0)
    rows = r2.training_rows
    assert len(rows) == 2
    assert list(rows.columns) == ["event_id", "entity", "event_time", *cfg.feature_names(), "label"]
    a = _row(rows, "a")
    # a's own values are not in its history: nothing before it
    assert a["count_1m"] == 0 and a["x0_sum_1m"] == 0 and np.isnan(a["x0_mean_1m"]) and np.isnan(a["x0_last"])
    assert np.isnan(a["age_s"]) and np.isnan(a["label_last"]) and a["label_count_1m"] == 0
    assert a["x0"] == 1.0 and a["x1"] == 7.0 and a["label"] == 1.0
    assert a["entity"] == "u1" and a["event_time"] == 0.0
    b = _row(rows, "b")
    assert b["count_1m"] == 1 and b["x0_mean_1m"] == 1.0 and b["x0_last"] == 1.0 and b["age_s"] == 10.0
    assert b["x0"] == 3.0 and b["label"] == 0.0
    # none of the labels had arrived when b happened
    assert b["label_count_1m"] == 0 and np.isnan(b["label_last"])
    # the current state, by contrast, includes all three events
    feats = shard.features("u1")
    assert feats["count_1m"] == 3.0 and feats["x0_mean_1m"] == pytest.approx(3.0) and feats["x0_last"] == 5.0
    assert feats["x0_max_1m"] == 5.0


def test_label_in_same_batch_after_later_events(cfg):
    shard = FeatureShard(cfg)
    res = shard.process(
        1,
        frame(ev("a", "u", 0.0, x0=2.0), ev("b", "u", 5.0, x0=4.0), lab("a", "u", 6.0, 1.0), ev("c", "u", 7.0, x0=9.0),
              lab("b", "u", 8.0, 1.0), lab("c", "u", 9.0, 0.0)),
        watermark=NEG_INF,
    )
    rows = res.training_rows
    a, b, c = (_row(rows, x) for x in "abc")
    assert (a["count_1m"], b["count_1m"], c["count_1m"]) == (0, 1, 2)
    assert (b["x0_sum_1m"], c["x0_sum_1m"]) == (2.0, 6.0)
    # a's label (arrived at 6) is in c's history (c at 7), not in b's (b at 5)
    assert b["label_count_1m"] == 0 and c["label_count_1m"] == 1 and c["label_last"] == 1.0
    assert c["label_rate_1m"] == 1.0


def test_label_history_counts_only_labels_that_arrived_before_the_event(cfg):
    shard = FeatureShard(cfg)
    shard.process(1, frame(ev("e1", "u", 0.0), ev("e2", "u", 1.0), ev("e3", "u", 2.0)), watermark=NEG_INF)
    # e1 labelled at 10 (0), e2 labelled at 20 (1) -- and e3's label arrives later still
    shard.process(2, frame(lab("e1", "u", 10.0, 0.0)), watermark=NEG_INF)
    shard.process(3, frame(ev("e4", "u", 15.0), lab("e2", "u", 20.0, 1.0), ev("e5", "u", 20.0), ev("e6", "u", 25.0)),
                  watermark=NEG_INF)
    # a label arriving at exactly the event's time is not "before" it; labels older than the window drop out
    shard.process(4, frame(ev("e7", "u", 79.0), ev("e8", "u", 80.0), ev("e9", "u", 81.0)), watermark=NEG_INF)
    res = shard.process(5, frame(*(lab(f"e{i}", "u", 100.0, 1.0) for i in (3, 4, 5, 6, 7, 8, 9))), watermark=NEG_INF)
    rows = res.training_rows.set_index("event_id")
    lc, lr, ll = rows["label_count_1m"], rows["label_rate_1m"], rows["label_last"]
    assert lc["e4"] == 1 and lr["e4"] == 0.0 and ll["e4"] == 0.0  # only e1's label (at 10) before 15
    assert lc["e5"] == 1 and ll["e5"] == 0.0  # e2's label arrived at 20: not before e5 at 20
    assert lc["e6"] == 2 and lr["e6"] == 0.5 and ll["e6"] == 1.0  # both, e2's is the latest
    assert lc["e7"] == 1 and ll["e7"] == 1.0  # [19, 79): e1's label at 10 has left the window
    assert lc["e8"] == 1 and lr["e8"] == 1.0  # [20, 80): e2's label at exactly 20 is inside
    assert lc["e9"] == 0 and np.isnan(lr["e9"]) and ll["e9"] == 1.0  # [21, 81): none; last label is any age
    assert np.isnan(ll["e3"]) and lc["e3"] == 0  # nothing had arrived at t=2


def test_label_is_emitted_once_and_unknown_label_is_rejected(cfg):
    shard = FeatureShard(cfg)
    shard.process(1, frame(ev("a", "u", 0.0)), watermark=NEG_INF)
    first = shard.process(2, frame(lab("a", "u", 1.0, 1.0)), watermark=NEG_INF)
    assert list(first.training_rows["event_id"]) == ["a"]
    again = shard.process(3, frame(lab("a", "u", 2.0, 1.0), lab("zzz", "u", 2.0, 0.0)), watermark=NEG_INF)
    assert len(again.training_rows) == 0
    assert again.reasons == {"label_unmatched": 2} and again.rejected == 2 and again.accepted == 0
    assert shard.stats()["rejected:label_unmatched"] == 2


def test_rejected_label_is_not_counted_in_label_history(cfg):
    # A label for an unknown event is rejected (label_unmatched); like every rejected row it must
    # not change the state, so it must not appear in the entity's label history.
    shard = FeatureShard(cfg)
    shard.process(1, frame(ev("a", "u", 0.0)), watermark=NEG_INF)
    res = shard.process(2, frame(lab("nope", "u", 1.0, 1.0), ev("b", "u", 2.0)), watermark=NEG_INF)
    assert res.reasons == {"label_unmatched": 1}
    rows = shard.process(3, frame(lab("b", "u", 3.0, 0.0)), watermark=NEG_INF).training_rows
    b = _row(rows, "b")
    assert b["label_count_1m"] == 0 and np.isnan(b["label_last"])


def test_label_delivered_twice_counts_once_in_label_history(cfg):
    # Clients retry (ingest is idempotent by event_id): a label sent twice must count once.
    shard = FeatureShard(cfg)
    shard.process(1, frame(ev("a", "u", 0.0)), watermark=NEG_INF)
    shard.process(2, frame(lab("a", "u", 1.0, 1.0)), watermark=NEG_INF)
    retry = shard.process(3, frame(lab("a", "u", 1.0, 1.0), ev("b", "u", 2.0)), watermark=NEG_INF)
    assert len(retry.training_rows) == 0
    b = _row(shard.process(4, frame(lab("b", "u", 3.0, 0.0)), watermark=NEG_INF).training_rows, "b")
    assert b["label_count_1m"] == 1 and b["label_rate_1m"] == 1.0


def test_unlabelled_events_expire_after_label_timeout():
    shard = FeatureShard(small_cfg(label_timeout_s=100.0))
    shard.process(1, frame(ev("old", "u", 0.0), ev("new", "u", 150.0)), watermark=NEG_INF)
    shard.process(2, frame(ev("x", "v", 160.0)), watermark=120.0)  # expires events before 20
    assert shard.stats()["expired_unlabelled"] == 1
    res = shard.process(3, frame(lab("old", "u", 170.0, 1.0), lab("new", "u", 170.0, 1.0)), watermark=120.0)
    assert list(res.training_rows["event_id"]) == ["new"]
    assert res.reasons == {"label_unmatched": 1}


# == (c) validation, cleaning, dedup, lateness =================================================

BAD_ROWS = [
    (ev("m1", "u", 1.0, x1=None), "missing:x1"),
    (ev("m2", "u", 1.0, x0="abc"), "non_numeric:x0"),
    (ev("m3", "u", 1.0, x2=float("inf")), "non_finite:x2"),
    (ev("m4", "u", 1.0, x0=-float("inf")), "non_finite:x0"),
    (ev("m5", "u", 1.0, x0=100.0), "out_of_range:x0"),
    (ev("m6", "u", 1.0, x2=-50.5), "out_of_range:x2"),
    (ev("m7", None, 1.0), "missing:entity"),
    (ev("m7b", "", 1.0), "missing:entity"),
    (ev(None, "u", 1.0), "missing:event_id"),
    (ev("m8", "u", None), "missing:event_time"),
    (ev("m9", "u", "yesterday"), "missing:event_time"),
    (ev("m9b", "u", float("inf")), "missing:event_time"),
    (["evnt", "m10", "u", 1.0, 0.0, 0.0, 0.0, NAN], "bad_kind"),
    (lab("good0", "u", 2.0, 2.0), "bad_label"),
    (lab("good0", "u", 2.0, NAN), "bad_label"),
    (lab("good0", "u", 2.0, "yes"), "bad_label"),
]


@pytest.mark.parametrize("bad, why", BAD_ROWS, ids=[w + f"-{i}" for i, (_, w) in enumerate(BAD_ROWS)])
def test_validate_gives_reason_per_row(cfg, bad, why):
    df = frame(ev("good0", "u", 0.0, x0=1.0), bad, ev("good1", "u", 0.5, x0="2.5"))
    clean, reason = validate(df, cfg)
    assert list(reason) == ["", why, ""]
    # good rows are coerced to numbers
    assert clean["x0"].tolist()[2] == 2.5 and clean["event_time"].tolist()[2] == 0.5


def test_malformed_rows_are_rejected_and_rest_of_batch_applied(cfg):
    shard = FeatureShard(cfg)
    rows = [ev("g0", "u", 0.0, x0=1.0)]
    for i, (bad, _) in enumerate(BAD_ROWS):
        rows.append(bad)
        rows.append(ev(f"g{i + 1}", "u", float(i + 1), x0=3.0))
    df = frame(*rows)
    res = shard.process(1, df, watermark=NEG_INF)

    expected: dict[str, int] = {}
    for _, why in BAD_ROWS:
        expected[why] = expected.get(why, 0) + 1
    assert res.reasons == expected
    assert res.rejected == len(BAD_ROWS)
    assert res.accepted == len(df) - len(BAD_ROWS)
    # every good event was applied to the window state, no bad value reached it
    n_good = len(BAD_ROWS) + 1
    feats = shard.features("u")
    assert feats["count_1m"] == n_good
    assert feats["x0_sum_1m"] == pytest.approx(1.0 + 3.0 * len(BAD_ROWS))
    assert feats["x0_max_1m"] == 3.0 and feats["x0_min_1m"] == 1.0
    stats = shard.stats()
    assert stats["events"] == n_good
    assert stats["rejected:missing:x1"] == 1 and stats["rejected:bad_label"] == 3
    # the good events can be labelled; the bad ones cannot
    lab_res = shard.process(2, frame(lab("g3", "u", 100.0, 1.0), lab("m1", "u", 100.0, 1.0)), watermark=NEG_INF)
    assert list(lab_res.training_rows["event_id"]) == ["g3"]
    assert lab_res.reasons == {"label_unmatched": 1}


def test_missing_required_column_rejects_events_but_not_labels(cfg):
    shard = FeatureShard(cfg)
    shard.process(1, frame(ev("a", "u", 0.0)), watermark=NEG_INF)
    df = frame(ev("b", "u", 1.0), lab("a", "u", 2.0, 1.0)).drop(columns=["x1"])
    res = shard.process(2, df, watermark=NEG_INF)
    assert res.reasons == {"missing:x1": 1}
    assert list(res.training_rows["event_id"]) == ["a"]


def test_optional_field_may_be_missing():
    cfg = FeaturesConfig(fields=[FieldSpec(name="x0", min=-50, max=50), FieldSpec(name="x1", required=False)],
                         windows_s=[60.0], aggregates=[AggregateSpec(field="x0", ops=["mean"])])
    shard = FeatureShard(cfg)
    df = pd.DataFrame({"kind": ["event"] * 2, "event_id": ["a", "b"], "entity": ["u"] * 2,
                       "event_time": [0.0, 1.0], "x0": [1.0, 3.0], "x1": [NAN, 2.0]})
    res = shard.process(1, df, watermark=NEG_INF)
    assert res.accepted == 2 and res.rejected == 0
    assert shard.features("u")["x0_mean_1m"] == 2.0


@pytest.mark.parametrize("value, clipped", [(100.0, 50.0), (-1e9, -50.0), ("75", 50.0), (12.5, 12.5)])
def test_clip_clips_out_of_range_values_instead_of_rejecting(value, clipped):
    cfg = small_cfg(fields=[FieldSpec(name="x0", min=-50, max=50, clip=True), FieldSpec(name="x1", min=-50, max=50),
                            FieldSpec(name="x2")])
    shard = FeatureShard(cfg)
    res = shard.process(1, frame(ev("a", "u", 0.0, x0=value), ev("b", "u", 1.0, x1=99.0)), watermark=NEG_INF)
    # x0 clips; x1 (without clip) is still rejected
    assert res.reasons == {"out_of_range:x1": 1} and res.accepted == 1
    assert shard.features("u")["x0_max_1m"] == clipped
    rows = shard.process(2, frame(lab("a", "u", 2.0, 1.0)), watermark=NEG_INF).training_rows
    assert _row(rows, "a")["x0"] == clipped


def test_duplicate_event_id_is_counted_and_not_applied_twice(cfg):
    shard = FeatureShard(cfg)
    # within one batch
    r1 = shard.process(1, frame(ev("a", "u", 0.0, x0=1.0), ev("a", "u", 0.0, x0=1.0)), watermark=NEG_INF)
    assert r1.reasons == {"duplicate": 1} and r1.accepted == 1 and r1.events == 1
    # across batches, even with other values
    r2 = shard.process(2, frame(ev("a", "u", 1.0, x0=9.0), ev("b", "u", 1.0, x0=3.0)), watermark=NEG_INF)
    assert r2.reasons == {"duplicate": 1} and r2.accepted == 1
    feats = shard.features("u")
    assert feats["count_1m"] == 2.0 and feats["x0_sum_1m"] == 4.0 and feats["x0_max_1m"] == 3.0
    assert shard.stats()["rejected:duplicate"] == 2
    # one training row for the event, however often it was sent
    rows = shard.process(3, frame(lab("a", "u", 5.0, 1.0)), watermark=NEG_INF).training_rows
    assert list(rows["event_id"]) == ["a"] and _row(rows, "a")["x0"] == 1.0


def test_rejected_event_can_be_resent_corrected(cfg):
    shard = FeatureShard(cfg)
    r1 = shard.process(1, frame(ev("a", "u", 0.0, x0="abc")), watermark=NEG_INF)
    assert r1.reasons == {"non_numeric:x0": 1}
    r2 = shard.process(2, frame(ev("a", "u", 0.0, x0=4.0)), watermark=NEG_INF)
    assert r2.accepted == 1 and r2.reasons == {}
    assert shard.features("u")["x0_sum_1m"] == 4.0


def test_late_event_is_counted_and_dropped(cfg):
    shard = FeatureShard(cfg)
    shard.process(1, frame(ev("a", "u", 100.0, x0=1.0)), watermark=NEG_INF)
    res = shard.process(2, frame(ev("old", "u", 94.9, x0=40.0), ev("ok", "u", 95.0, x0=3.0)), watermark=95.0)
    assert res.reasons == {"late": 1}
    assert res.accepted == 1
    assert shard.stats()["rejected:late"] == 1
    feats = shard.features("u")
    assert feats["count_1m"] == 2 and feats["x0_max_1m"] == 3.0  # 40.0 never reached the window
    # the late event cannot be labelled (it was never applied); the on-time one can
    res = shard.process(3, frame(lab("old", "u", 101.0, 1.0), lab("ok", "u", 101.0, 0.0)), watermark=95.0)
    assert list(res.training_rows["event_id"]) == ["ok"]


def test_late_event_with_apply_policy_is_counted_and_applied():
    shard = FeatureShard(small_cfg(late_policy="apply"))
    shard.process(1, frame(ev("a", "u", 100.0, x0=1.0)), watermark=NEG_INF)
    res = shard.process(2, frame(ev("old", "u", 94.9, x0=40.0), ev("ok", "u", 95.0, x0=3.0)), watermark=95.0)
    assert res.reasons == {} and res.accepted == 2
    stats = shard.stats()
    assert stats["late_applied"] == 1 and "rejected:late" not in stats
    feats = shard.features("u")
    assert feats["count_1m"] == 3 and feats["x0_max_1m"] == 40.0
    rows = shard.process(3, frame(lab("old", "u", 101.0, 1.0)), watermark=95.0).training_rows
    old = _row(rows, "old")
    assert old["x0"] == 40.0 and old["count_1m"] == 0  # as of 94.9: nothing before it


def test_watermark_prunes_window_rows_but_keeps_last_and_age(cfg):
    shard = FeatureShard(cfg)
    shard.process(1, frame(ev("a", "old", 0.0, x0=7.0), ev("b", "old", 1.0, x0=8.0), ev("c", "new", 100.0)),
                  watermark=NEG_INF)
    assert len(shard.events) == 3
    shard.process(2, frame(ev("d", "new", 101.0)), watermark=100.0)  # horizon 40
    assert len(shard.events) == 3  # "old" keeps only its newest row; "new" keeps both
    assert shard.stats()["entities"] == 2
    shard.process(3, frame(ev("e", "old", 200.0, x0=1.0)), watermark=100.0)
    rows = shard.process(4, frame(lab("e", "old", 201.0, 1.0)), watermark=100.0).training_rows
    e = _row(rows, "e")
    assert e["count_1m"] == 0 and e["x0_last"] == 8.0 and e["age_s"] == 199.0


def test_window_std_of_an_entity_is_not_disturbed_by_other_entities_in_the_batch():
    # amounts: one entity with a large spread, another with a small one, in the same batches
    cfg = FeaturesConfig(fields=[FieldSpec(name="x0")], windows_s=[3600.0],
                         aggregates=[AggregateSpec(field="x0", ops=["mean", "std"])],
                         label_history=LabelHistoryConfig(enabled=False))
    rng = np.random.default_rng(0)
    n = 400
    whale = rng.normal(0.0, 1e5, size=n)
    small = 5.0 + rng.normal(0.0, 0.01, size=n)
    df = pd.DataFrame({
        "kind": "event",
        "event_id": [f"w{i}" for i in range(n)] + [f"s{i}" for i in range(n)],
        "entity": ["whale"] * n + ["small"] * n,
        "event_time": np.concatenate([np.arange(n), np.arange(n)]).astype(float),
        "x0": np.concatenate([whale, small]),
    })
    shard = FeatureShard(cfg)
    shard.process(1, df, watermark=NEG_INF)
    labels = pd.DataFrame({"kind": "label", "event_id": ["s399", "w399"], "entity": ["small", "whale"],
                           "event_time": [500.0, 500.0], "label": [1.0, 0.0]})
    rows = shard.process(2, labels, watermark=NEG_INF).training_rows.set_index("event_id")
    assert rows.loc["s399", "x0_std_1h"] == pytest.approx(np.std(small[:-1], ddof=1), rel=1e-6)
    assert rows.loc["w399", "x0_std_1h"] == pytest.approx(np.std(whale[:-1], ddof=1), rel=1e-6)


def test_empty_batch_is_applied(cfg):
    shard = FeatureShard(cfg)
    res = shard.process(1, frame(ev("a", "u", 0.0)).iloc[0:0], watermark=NEG_INF)
    assert (res.accepted, res.rejected, len(res.training_rows), res.replay_from) == (0, 0, 0, None)
    assert shard.process(2, frame(ev("b", "u", 1.0)), watermark=NEG_INF).accepted == 1


def test_features_of_unknown_entity_is_none(cfg):
    shard = FeatureShard(cfg)
    assert shard.features("nobody") is None
    shard.process(1, frame(ev("a", "u", 0.0, x0=2.0)), watermark=NEG_INF)
    assert shard.features("nobody") is None
    feats = shard.features("u")
    assert set(feats) == set(cfg.feature_names()[3:]) | {"as_of"}
    assert feats["x0_last"] == 2.0 and feats["count_1m"] == 1.0


# == exactly-once mechanics ====================================================================


_state, _assert_same_state = shard_state, assert_same_state


def test_retried_batch_returns_cached_result_and_changes_nothing():
    batches = _batches(6)
    shard = FeatureShard(STREAM_FEATURES)
    results = [shard.process(bid, df, wm) for bid, df, wm in batches]
    assert sum(len(r.training_rows) for r in results) > 0
    before = _state(shard)
    for (bid, df, wm), first in zip(batches[::-1], results[::-1]):
        again = shard.process(bid, df, wm)
        assert (again.batch_id, again.accepted, again.rejected, again.reasons, again.events, again.replay_from) == (
            first.batch_id, first.accepted, first.rejected, first.reasons, first.events, None)
        pd.testing.assert_frame_equal(again.training_rows, first.training_rows)
    # a retry carrying different data (it cannot: same id, same batch) still changes nothing
    bid, df, wm = batches[-1]
    shard.process(bid, frame(ev("intruder", "u0", 1e10, x0=1.0)), wm)
    _assert_same_state(_state(shard), before)
    assert shard.stats()["last_batch_id"] == 6


def test_gap_in_batch_ids_asks_for_replay_and_applies_nothing():
    batches = _batches(5)
    shard = FeatureShard(STREAM_FEATURES)
    for bid, df, wm in batches[:3]:
        shard.process(bid, df, wm)
    before = _state(shard)
    bid, df, wm = batches[4]
    res = shard.process(5, df, wm)
    assert res.replay_from == 3
    assert (res.accepted, res.rejected, res.events) == (0, 0, 0)
    assert res.training_rows is None or len(res.training_rows) == 0
    _assert_same_state(_state(shard), before)
    # replaying 4 then 5 works, and gives what an uninterrupted shard gives
    ref = FeatureShard(STREAM_FEATURES)
    ref_results = [ref.process(b, d, w) for b, d, w in batches]
    for b, d, w in batches[3:]:
        r = shard.process(b, d, w)
        assert r.replay_from is None
        pd.testing.assert_frame_equal(r.training_rows, ref_results[b - 1].training_rows)
    _assert_same_state(_state(shard), _state(ref))


@pytest.mark.parametrize("cut", [1, 13, 27])
def test_snapshot_restore_then_continue_equals_uninterrupted(cut):
    batches = _batches(N_BATCHES)
    full = FeatureShard(STREAM_FEATURES)
    first = FeatureShard(STREAM_FEATURES)
    full_rows = [full.process(b, d, w).training_rows for b, d, w in batches]
    for b, d, w in batches[:cut]:
        first.process(b, d, w)
    snap = first.snapshot()
    resumed = FeatureShard(STREAM_FEATURES)
    resumed.restore(snap)
    assert resumed.stats()["last_batch_id"] == cut
    rows = [resumed.process(b, d, w).training_rows for b, d, w in batches[cut:]]
    for got, exp in zip(rows, full_rows[cut:]):
        pd.testing.assert_frame_equal(got, exp)
    _assert_same_state(_state(resumed), _state(full))
    assert resumed.stats() == full.stats()
    for ent in ("u0", "u7", "u24"):
        assert resumed.features(ent) == full.features(ent)


def test_batch_applied_before_the_snapshot_is_not_applied_again():
    batches = _batches(4)
    shard = FeatureShard(STREAM_FEATURES)
    for b, d, w in batches:
        shard.process(b, d, w)
    resumed = FeatureShard(STREAM_FEATURES)
    resumed.restore(shard.snapshot())
    before = _state(resumed)
    res = resumed.process(3, batches[2][1], batches[2][2])  # a retry that reaches the restarted shard
    assert res.accepted == 0 and res.events == 0 and len(res.training_rows) == 0
    _assert_same_state(_state(resumed), before)


# == checkpoints ===============================================================================


def test_checkpoint_store_round_trip(tmp_path):
    batches = _batches(12)
    shard = FeatureShard(STREAM_FEATURES)
    for b, d, w in batches:
        shard.process(b, d, w)
    store = CheckpointStore(str(tmp_path / "ckpt"))
    assert store.latest_manifest() is None
    assert store.load_shard_state(0, 1, STREAM_FEATURES) is None
    store.write_shard(1, 0, shard.snapshot())
    # a shard part without its manifest is not a checkpoint
    assert store.latest_manifest() is None
    store.write_manifest(1, batch_id=12, position=12, num_shards=1)
    m = store.latest_manifest()
    assert (m["checkpoint_id"], m["batch_id"], m["position"], m["num_shards"]) == (1, 12, 12, 1)

    resumed = FeatureShard(STREAM_FEATURES)
    resumed.restore(store.load_shard_state(0, 1, STREAM_FEATURES))
    _assert_same_state(_state(resumed), _state(shard))
    assert resumed.pending.event_ids.dtype == object and len(resumed.pending) == len(shard.pending) > 0

    more = _batches(20)[12:]
    for b, d, w in more:
        pd.testing.assert_frame_equal(resumed.process(b, d, w).training_rows, shard.process(b, d, w).training_rows)
    _assert_same_state(_state(resumed), _state(shard))


def test_checkpoint_store_keeps_latest_complete_checkpoints(tmp_path):
    store = CheckpointStore(str(tmp_path))
    shard = FeatureShard(STREAM_FEATURES)
    for cid, (b, d, w) in enumerate(_batches(4), start=1):
        shard.process(b, d, w)
        store.write_shard(cid, 0, shard.snapshot())
        store.write_shard(cid, 0, shard.snapshot())  # a retried write replaces the part
        store.write_manifest(cid, batch_id=b, position=b, num_shards=1)
    assert store.checkpoint_ids() == [3, 4]
    assert store.latest_manifest()["batch_id"] == 4
    assert store.load_shard_state(0, 1, STREAM_FEATURES)["meta"]["last_batch_id"] == 4
    # a newer checkpoint whose manifest was never written is ignored
    store.write_shard(5, 0, FeatureShard(STREAM_FEATURES).snapshot())
    assert store.load_shard_state(0, 1, STREAM_FEATURES)["meta"]["last_batch_id"] == 4


def test_repartition_two_shards_into_three_continues_like_three_fresh_shards(tmp_path):
    batches = _batches(N_BATCHES)
    cut = 20
    two, moved, fresh = reshard_two_into_three(lambda: CheckpointStore(str(tmp_path)), STREAM_FEATURES, batches, cut)

    # every entity's pending rows end up in exactly one new shard, unchanged (windows: checked above)
    for i in range(3):
        pa_, pb = moved[i].pending.snapshot(), fresh[i].pending.snapshot()
        order_a, order_b = np.argsort(pa_["ids"]), np.argsort(pb["ids"])
        for k in pa_:
            a_, b_ = pa_[k][order_a], pb[k][order_b]
            if k == "feats":  # computed at event time in batches of other shard mixes: equal up to rounding
                assert np.allclose(a_, b_, rtol=1e-9, atol=1e-12, equal_nan=True), (i, "pending", k)
            else:
                assert np.array_equal(a_, b_), (i, "pending", k)

    rows_moved = _feed(moved, batches[cut:])
    rows_fresh = _feed(fresh, batches[cut:])
    key = lambda d: d.sort_values("event_id").reset_index(drop=True)  # noqa: E731
    assert len(rows_moved) > 500
    pd.testing.assert_frame_equal(key(rows_moved), key(rows_fresh))
    # and the dedup memory came along: a resent old event is still a duplicate
    old_bid, old_df, _ = batches[3]
    owner = Partitioner(3).split(old_df)
    last_wm = batches[-1][2]
    for i in range(3):
        res = moved[i].process(N_BATCHES + 1, owner[i][owner[i]["kind"] == "event"].assign(event_time=1e10), last_wm)
        assert set(res.reasons) <= {"duplicate"} and res.accepted == 0


def test_repartition_function_splits_by_entity_hash():
    batches = _batches(10)
    two = [FeatureShard(STREAM_FEATURES, i) for i in range(2)]
    _feed(two, batches)
    snaps = [s.snapshot() for s in two]
    parts = [repartition(snaps, i, 3, batch_id=10) for i in range(3)]
    all_keys = np.concatenate([s["events"]["keys"] for s in snaps])
    assert sum(len(p["events"]["keys"]) for p in parts) == len(all_keys)
    for i, p in enumerate(parts):
        assert (p["events"]["keys"] % np.uint64(3) == i).all()
        assert (shard_of(np.asarray(p["pending"]["entities"], object), 3) == i).all()
        assert p["meta"]["last_batch_id"] == 10 and p["meta"]["shard_id"] == i


def test_current_features_do_not_depend_on_shard_count():
    # /features/{entity} must give the same answer whether the stream runs on 1 or 3 shards
    # (and after re-partitioning): shards share one stream clock.
    batches = _batches(15)
    one = [FeatureShard(STREAM_FEATURES)]
    three = [FeatureShard(STREAM_FEATURES, i) for i in range(3)]
    _feed(one, batches)
    _feed(three, batches)
    entities = sorted(pd.concat([b[1] for b in batches])["entity"].unique())
    owner = shard_of(np.array(entities, dtype=object), 3)
    diffs = []
    for ent, i in zip(entities, owner):
        a, b = one[0].features(ent), three[i].features(ent)
        if a != b:
            diffs.append((ent, {k: (a[k], b[k]) for k in a if a[k] != b[k]}))
    assert not diffs, diffs[:3]
