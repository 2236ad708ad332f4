"""A categorical field's ``<field>_last`` (issue 15): the text of the entity's previous event, in training rows,
lookups, checkpoints and reshards, against a brute-force reference; the bounded code -> text map. No Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.partition import Partitioner, Watermark
from streamfit.actors.stream.shard_checkpoint import load_shard_checkpoint, write_shard_checkpoint
from streamfit.actors.stream.task_columns import CategoryTexts, text_codes
from streamfit.actors.stream.windows import to_us
from streamfit.config import AggregateSpec, FeaturesConfig, FieldSpec, LabelHistoryConfig, ModelConfig
from streamfit.errors import ConfigError

CITIES = [f"city-{i:03d}" for i in range(120)]  # many: after a restore, most do not come back soon
REGRESSION = ModelConfig(task="regression")


def features(late_policy: str = "apply", last: bool = True) -> FeaturesConfig:
    """x0, a categorical city aggregated with distinct (and last), and ``code``: the city's index as a number with
    ``last``, so ``code_last`` is the numeric ``last`` of the same events (the reference semantics)."""
    return FeaturesConfig(
        fields=[FieldSpec(name="x0"), FieldSpec(name="code"), FieldSpec(name="city", type="categorical")],
        windows_s=[20.0], aggregates=[AggregateSpec(field="x0", ops=["mean"]),
                                      AggregateSpec(field="code", ops=["max"], last=True),
                                      AggregateSpec(field="city", ops=["distinct"], last=last)],
        label_history=LabelHistoryConfig(windows_s=[20.0]), label_timeout_s=30.0, allowed_lateness_s=3.0,
        late_policy=late_policy)


def random_stream(n_batches: int, seed: int = 4, per_batch: int = 40) -> list[tuple[int, pd.DataFrame, float]]:
    """Events of 15 entities (some rarely seen: they expire between events), times out of order (some late),
    each labelled two batches later; (batch id, frame, watermark) as the coordinator sends them."""
    rng = np.random.default_rng(seed)
    weights = np.r_[np.full(10, 1.0), np.full(5, 0.04)]
    wm, batches, labels, clock, n = Watermark(3.0), [], {}, 0.0, 0
    for bid in range(1, n_batches + 1):
        ent = rng.choice(15, per_batch, p=weights / weights.sum())
        t = np.round(clock + np.sort(rng.uniform(0, 10, per_batch)) - (rng.random(per_batch) < 0.15) * 9.0, 3)
        clock += 10.0
        city = rng.choice(len(CITIES), per_batch)
        ids = [f"e{n + i}" for i in range(per_batch)]
        n += per_batch
        ev = pd.DataFrame({"kind": "event", "event_id": ids, "entity": [f"u{e}" for e in ent], "event_time": t,
                           "x0": rng.normal(size=per_batch), "code": city.astype(float),
                           "city": pd.Series(np.asarray(CITIES, object)[city], dtype=object)})
        labels[bid + 2] = ev.assign(kind="label", event_time=t + 0.5, label=rng.normal(size=per_batch),
                                    x0=np.nan, code=np.nan, city=None)[["kind", "event_id", "entity", "event_time",
                                                                        "label"]]
        df = pd.concat([ev, labels.pop(bid, ev.iloc[:0])], ignore_index=True)
        batches.append((bid, df, wm.observe(df)))
    return batches


def feed(shards: list[FeatureShard], batches: list, lookups: list | None = None) -> pd.DataFrame:
    """Batches through a Partitioner; with ``lookups``, each batch's events are looked up just before it."""
    part, rows, clock = Partitioner(len(shards)), [], float("-inf")
    for bid, df, wm in batches:
        clock = max(clock, float(df["event_time"].max()))
        for i, p in enumerate(part.split(df)):
            if lookups is not None:
                ev = p[p["kind"] == "event"].drop(columns=["kind", "label"], errors="ignore")
                lookups.append((ev["event_id"].tolist(), shards[i].lookup(ev)))
            rows.append(shards[i].process(bid, p, wm, clock).training_rows)
    return pd.concat(rows, ignore_index=True)


def brute_force_last(batches: list, cfg: FeaturesConfig) -> dict[str, str | None]:
    """Each accepted event's previous city from the definitions: per batch, late events dropped (or applied), the
    batch's events inserted, each event's latest row strictly before it (ties: the last to arrive), then rows
    behind the longest window dropped except each entity's newest, and entities idle past every horizon forgotten."""
    idle = to_us(max(max(cfg.windows_s), max(cfg.label_history.windows_s), cfg.label_timeout_s))
    rows: dict[str, list[tuple[int, str]]] = {}  # entity -> (time µs, city) in arrival order
    out: dict[str, str | None] = {}
    for _, df, wm in batches:
        ev = df[df["kind"] == "event"]
        if cfg.late_policy == "drop":
            ev = ev[ev["event_time"] >= wm]
        t_us = to_us(ev["event_time"].to_numpy(float))
        for e, t, c in zip(ev["entity"], t_us, ev["city"]):
            rows.setdefault(e, []).append((int(t), c))
        for eid, e, t in zip(ev["event_id"], ev["entity"], t_us):
            before = [(rt, i) for i, (rt, _) in enumerate(rows[e]) if rt < t]
            out[eid] = rows[e][max(before)[1]][1] if before else None
        if not np.isfinite(wm):
            continue
        horizon, expire = int(to_us(wm)) - int(to_us(max(cfg.windows_s))), int(to_us(wm)) - int(idle)
        for e in list(rows):
            newest = max(range(len(rows[e])), key=lambda i: (rows[e][i][0], i))
            kept = [r for i, r in enumerate(rows[e]) if r[0] >= horizon or (i == newest and r[0] >= min(expire, horizon))]
            rows[e] = kept
            if not kept:
                del rows[e]
    return out


# -- config -------------------------------------------------------------------------------------------------

def test_config_accepts_last_on_a_categorical_field_and_names_its_text_columns() -> None:
    cfg = features()
    names = cfg.feature_names(REGRESSION)
    assert "city_last" in names and "code_last" in names
    assert cfg.categorical_columns(REGRESSION) == ["city", "city_last"] == [n for n in names if n in
                                                                              ("city", "city_last")]
    assert cfg.categorical_fields() == ["city"]
    assert features(last=False).categorical_columns() == ["city"]
    only_last = FeaturesConfig(fields=[FieldSpec(name="city", type="categorical")], aggregates=[
        AggregateSpec(field="city", ops=[], last=True)])
    assert only_last.categorical_columns() == ["city", "city_last"]
    with pytest.raises(ValueError, match=r"ops \[distinct\] only"):
        FeaturesConfig(fields=[FieldSpec(name="city", type="categorical")],
                       aggregates=[AggregateSpec(field="city", ops=["mean"], last=True)])
    from streamfit.config import config_from_dict
    with pytest.raises(ConfigError, match="must be required"):
        config_from_dict({"features": {"fields": [{"name": "c", "type": "categorical", "required": False}],
                                       "aggregates": [{"field": "c", "ops": [], "last": True}]}})


# -- training rows ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("late_policy", ["apply", "drop"])
def test_training_rows_last_city_is_the_previous_events_city(late_policy: str) -> None:
    cfg = features(late_policy)
    batches = random_stream(40)
    shard = FeatureShard(cfg, model=REGRESSION, training_features="point_in_time")
    rows = feed([shard], batches)
    want = brute_force_last(batches, cfg)
    assert rows["city_last"].dtype == object and len(rows) > 800
    got = dict(zip(rows["event_id"], rows["city_last"]))
    assert got == {e: want[e] for e in got}
    # the numeric last of the same events (the city's index) says the same: the same semantics
    code = rows["code_last"].to_numpy(float)
    same = [CITIES[int(c)] if np.isfinite(c) else None for c in code]
    assert rows["city_last"].tolist() == same
    # the stream exercises what matters: late events, entities expired between events, repeats
    assert rows["city_last"].isna().sum() > 15 and shard.stats()["late_applied" if late_policy == "apply"
                                                                  else "rejected:late"] > 20
    assert all(v is None or isinstance(v, str) for v in rows["city_last"])
    assert shard.stats().get("category_text_over_cap", 0) == 0
    snap = shard.snapshot()
    assert snap["meta"]["task"]["categorical"] == ["city", "city_last"] and len(snap["texts"]["codes"]) > 50


def test_lookups_and_entity_features_equal_the_training_rows() -> None:
    batches = random_stream(30, seed=9, per_batch=12)  # few events per batch: most have no same-batch history
    shard = FeatureShard(features(), model=REGRESSION, training_features="point_in_time")
    looked: list = []
    rows = feed([shard], batches, looked).set_index("event_id")
    seen = {}
    for ids, res in looked:
        seen.update(zip(ids, res.rows()["city_last"].tolist()))
        assert np.isnan(res.features[:, res.feature_names.index("city_last")]).all()
        assert list(res.text) == ["city", "city_last"]
    # a lookup ran before its own batch: rows whose entity had an earlier event in that batch differ by design
    stream = pd.concat([b[1] for b in batches])
    ev = stream[stream["kind"] == "event"]
    ev = ev.assign(b=np.repeat([b for b, df, _ in batches], [int((df["kind"] == "event").sum()) for _, df, _ in batches]))
    first = ev.groupby(["b", "entity"])["event_time"].transform("min")
    alone = (ev["event_time"] == first) & ~ev.duplicated(["b", "entity", "event_time"], keep=False)
    ids = [e for e in ev["event_id"][alone.to_numpy()] if e in rows.index]
    assert len(ids) > 150 and sum(seen[e] is not None for e in ids) > 100
    assert [seen[e] for e in ids] == rows.loc[ids, "city_last"].tolist()
    # an entity's current features: its newest event's city
    last_ev = ev.sort_values("event_time", kind="stable").groupby("entity").tail(1).set_index("entity")
    for entity in ("u0", "u3"):
        got = shard.features(entity)
        if got is not None:
            assert got["city_last"] == last_ev.loc[entity, "city"] and isinstance(got["code_last"], float)


# -- checkpoints and reshards ---------------------------------------------------------------------------

def _probe(shards: list[FeatureShard]) -> list:
    """Every entity's lookup now, from the shard that owns it (text of city_last)."""
    part = Partitioner(len(shards))
    ev = pd.DataFrame({"entity": [f"u{i}" for i in range(15)], "x0": 0.0, "code": 0.0,
                       "city": pd.Series(["probe"] * 15, dtype=object)})
    out = {}
    for i, p in enumerate(part.split(ev)):
        res = shards[i].lookup(p)
        out.update(zip(p["entity"], res.text["city_last"].tolist()))
    return [out[f"u{i}"] for i in range(15)]


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = (x.sort_values("event_id").reset_index(drop=True) for x in (a, b))
    assert len(a) == len(b) > 0
    assert a["city_last"].tolist() == b["city_last"].tolist()
    assert np.allclose(a["code_last"].to_numpy(float), b["code_last"].to_numpy(float), equal_nan=True)


def through_checkpoint(path, cfg: FeaturesConfig, old: list[FeatureShard], cut: int, n: int) -> list[FeatureShard]:
    """``n`` new shards restored from a checkpoint the ``old`` ones wrote after batch ``cut``."""
    store = CheckpointStore(str(path))
    for s in old:
        write_shard_checkpoint(store, 1, s)
    store.write_manifest(1, batch_id=cut, position=cut, num_shards=len(old))
    new = [FeatureShard(cfg, i, model=REGRESSION) for i in range(n)]
    assert all(load_shard_checkpoint(CheckpointStore(str(path)), s, num_shards=n) for s in new)
    return new


def test_checkpoint_round_trip_keeps_last_city(tmp_path) -> None:
    cfg, batches, cut = features(), random_stream(30, seed=2), 14
    whole = feed([FeatureShard(cfg, model=REGRESSION)], batches)
    first = FeatureShard(cfg, model=REGRESSION)
    before = feed([first], batches[:cut])
    [again] = through_checkpoint(tmp_path, cfg, [first], cut, 1)
    assert again.texts.snapshot()["texts"].tolist() == first.texts.snapshot()["texts"].tolist()
    probe = _probe([first])
    assert _probe([again]) == probe and sum(p is not None for p in probe) > 5  # before any new batch
    _same_rows(pd.concat([before, feed([again], batches)], ignore_index=True), whole)


def test_reshard_two_into_three_keeps_last_city(tmp_path) -> None:
    cfg, batches, cut = features(), random_stream(30, seed=3), 15
    fresh = [FeatureShard(cfg, i, model=REGRESSION) for i in range(3)]
    whole = feed(fresh[:], batches[:cut])
    two = [FeatureShard(cfg, i, model=REGRESSION) for i in range(2)]
    before = feed(two, batches[:cut])
    three = through_checkpoint(tmp_path, cfg, two, cut, 3)
    probe = _probe(fresh)
    assert _probe(three) == probe and sum(p is not None for p in probe) > 5
    whole = pd.concat([whole, feed(fresh, batches[cut:])], ignore_index=True)
    _same_rows(pd.concat([before, feed(three, batches[cut:])], ignore_index=True), whole)


def test_a_checkpoint_written_before_restores(tmp_path) -> None:
    # a config without a categorical last: the snapshot has no category map and the meta it always had
    plain = features(last=False)
    shard = FeatureShard(plain, model=REGRESSION)
    feed([shard], random_stream(6))
    snap = shard.snapshot()
    assert "texts" not in snap and snap["meta"]["task"]["categorical"] == ["city"]
    store = CheckpointStore(str(tmp_path / "a"))
    part = write_shard_checkpoint(store, 1, shard)
    store.write_manifest(1, batch_id=6, position=6, num_shards=1)
    assert not store.store.exists(f"{part}/texts.arrow")
    again = FeatureShard(plain, model=REGRESSION)
    assert load_shard_checkpoint(CheckpointStore(str(tmp_path / "a")), again, num_shards=1)
    assert again.last_batch_id == 6 and len(again.texts) == 0
    # a part without texts.arrow (written before it existed) restores with an empty map: texts come back as
    # their categories arrive again
    cfg = features()
    shard = FeatureShard(cfg, model=REGRESSION)
    batches = random_stream(12)
    feed([shard], batches[:6])
    store = CheckpointStore(str(tmp_path / "b"))
    part = write_shard_checkpoint(store, 1, shard)
    store.write_manifest(1, batch_id=6, position=6, num_shards=1)
    store.store.delete_file(f"{part}/texts.arrow")
    again = FeatureShard(cfg, model=REGRESSION)
    assert load_shard_checkpoint(CheckpointStore(str(tmp_path / "b")), again, num_shards=1)
    assert len(again.texts) == 0 and all(p is None for p in _probe([again]))
    rows = feed([again], batches)
    assert rows["city_last"].notna().any()
    # a binary shard's snapshot as every earlier checkpoint holds it restores into today's shard
    old = FeatureShard(FeaturesConfig()).snapshot()
    FeatureShard(FeaturesConfig()).restore(old)


# -- the bounded map ------------------------------------------------------------------------------------

def test_category_texts_are_bounded_and_drop_what_no_row_holds() -> None:
    texts = CategoryTexts(cap=3)
    a = texts.add(np.array(["a", "b", "a"], dtype=object))
    assert texts.get(a).tolist() == ["a", "b", "a"] and texts.dropped == 0
    texts.add(np.array(["c", "d"], dtype=object), referenced=lambda: text_codes(np.array(["a", "b", "c"], object)))
    assert len(texts) == 3 and texts.dropped == 1  # full: a and b are held by rows, room for one of c and d
    kept = texts.get(text_codes(np.array(["c", "d"], object))).tolist()
    assert kept in (["c", None], [None, "d"])
    texts.restore({"codes": text_codes(np.array(["a", "b", "c"], object)), "texts": np.array(["a", "b", "c"])})
    view = texts.frozen()
    # the rows moved on: only c and e are held; a full map drops a and b (after its wait), keeps the new ones
    for _ in range(40):
        texts.add(np.array(["e", "f"], dtype=object), referenced=lambda: text_codes(np.array(["c"], object)))
        if texts.dropped == 0:
            break
    assert sorted(texts.get(texts.snapshot()["codes"]).tolist()) == ["c", "e", "f"]
    assert view.get(a).tolist() == ["a", "b", "a"]  # a published view keeps its map
    again = CategoryTexts()
    again.restore(texts.snapshot())
    assert again.snapshot()["texts"].tolist() == texts.snapshot()["texts"].tolist()


def test_a_full_map_counts_the_rows_whose_last_city_is_missing() -> None:
    shard = FeatureShard(features(), model=REGRESSION, training_features="point_in_time")
    shard.texts = CategoryTexts(cap=10)
    shard._publish()
    rows = feed([shard], random_stream(20))
    assert shard.stats()["category_text_over_cap"] > 0 and len(shard.texts) <= 10
    known = rows["city_last"].dropna()
    assert len(known) > 0 and known.isin(CITIES).all()
    assert rows["city_last"].isna().sum() > rows["code_last"].isna().sum()  # missing beyond the cap
