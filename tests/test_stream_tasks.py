"""The stream plane per task (issue 15), no Ray: regression and multiclass labels and label history against a
naive reference, categorical fields as text through shard -> checkpoint -> restore -> row and through a reshard,
lookups and served vectors with text, bad input reasons and counts per task, checkpoints of another task refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shard_streams import feed, make_batches
from streamfit.actors.stream.checkpoint import CheckpointError, CheckpointStore
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.local_runner import LocalRunner
from streamfit.actors.stream.shard_checkpoint import load_shard_checkpoint, write_shard_checkpoint
from streamfit.actors.stream.sources import FramesSource
from streamfit.config import (AggregateSpec, Config, FeaturesConfig, FieldSpec, LabelHistoryConfig, ModelConfig,
                              StreamConfig, window_tag)

CLASSES = ["low", "mid", "high"]
CITIES = ["paris", "rome", "oslo", None]
REGRESSION = ModelConfig(task="regression")
MULTICLASS = ModelConfig(task="multiclass", classes=CLASSES)
STREAM = StreamConfig(batch_size=60, entities=20, label_delay_events=40, events_per_second=2.0, bad_row_rate=0.0,
                      seed=5)
NUMERIC = FeaturesConfig(windows_s=[30.0, 300.0], aggregates=[AggregateSpec(field="x0", ops=["mean"], last=True)],
                         label_history=LabelHistoryConfig(windows_s=[60.0, 600.0]))
FEATURES = NUMERIC.model_copy(update={"fields": [*NUMERIC.fields, FieldSpec(name="city", type="categorical",
                                                                          required=False)]})


def _n(event_ids: pd.Series) -> np.ndarray:
    return event_ids.astype(str).str[2:].astype(int).to_numpy()


def task_batches(n: int, model: ModelConfig | None, city: bool = True,
                 cities: list = CITIES) -> list[tuple[int, pd.DataFrame, float]]:
    """The binary synthetic stream with the task's labels (regression: a value, multiclass: a class name) and a
    categorical ``city`` on events (text, one in four missing)."""
    out = []
    for bid, df, wm in make_batches(n, STREAM, NUMERIC):
        df = df.copy()
        k, is_label = _n(df["event_id"]), (df["kind"] == "label").to_numpy()
        if model is not None and model.task == "regression":
            df["label"] = np.where(is_label, (k % 7) * 1.5 - 3.0 + k / 1000.0, np.nan)
        elif model is not None and model.task == "multiclass":
            df["label"] = pd.Series(np.where(is_label, np.asarray(CLASSES, object)[k % 3], None), dtype=object)
        if city:
            df["city"] = pd.Series(np.where(is_label, None, np.asarray(cities, object)[k % len(cities)]), dtype=object)
        out.append((bid, df, wm))
    return out


def naive_label_history(stream: pd.DataFrame, model: ModelConfig, windows: list[float]) -> pd.DataFrame:
    """Label-history columns of every event from the definitions: the entity's labels that arrived in [t - W, t)."""
    events, labels = stream[stream["kind"] == "event"], stream[stream["kind"] == "label"]
    us = lambda t: np.round(np.asarray(t, dtype=np.float64) * 1e6).astype(np.int64)  # noqa: E731
    out = {}
    for entity, g in events.groupby("entity", sort=False):
        lg = labels[labels["entity"] == entity]
        lt = us(lg["event_time"])
        lv = (lg["label"].map(CLASSES.index).to_numpy(float) if model.task == "multiclass"
              else lg["label"].to_numpy(float))
        for eid, t in zip(g["event_id"], us(g["event_time"])):
            before = np.flatnonzero(lt < t)
            row = {"label_last": lv[before[np.argmax(lt[before])]] if len(before) else np.nan}
            for w in windows:
                tag, v = window_tag(w), lv[(lt >= t - us(w)) & (lt < t)]
                if model.task == "regression":
                    row[f"label_mean_{tag}"] = v.mean() if len(v) else np.nan
                    row[f"label_std_{tag}"] = np.std(v, ddof=1) if len(v) > 1 else np.nan
                else:
                    for i in range(len(CLASSES)):
                        row[f"label_rate_c{i}_{tag}"] = (v == i).mean() if len(v) else np.nan
                row[f"label_count_{tag}"] = float(len(v))
            out[eid] = row
    return pd.DataFrame.from_dict(out, orient="index")


@pytest.mark.parametrize("model", [REGRESSION, MULTICLASS], ids=["regression", "multiclass"])
def test_label_history_per_task_equals_a_naive_reference(model: ModelConfig) -> None:
    batches = task_batches(40, model)
    stream = pd.concat([b[1] for b in batches], ignore_index=True)
    shard = FeatureShard(FEATURES, model=model)
    rows = feed([shard], batches)
    names = FEATURES.feature_names(model)
    assert list(rows.columns) == ["event_id", "entity", "event_time", *names, "label"]
    assert len(rows) > 1500 and shard.stats()["rejected"] == 0
    ref = naive_label_history(stream, model, FEATURES.label_history.windows_s)
    label_cols = [c for c in names if c.startswith("label_")]
    assert sorted(label_cols) == sorted(ref.columns)
    got = rows.set_index("event_id")
    for name in label_cols:
        g, e = got[name].to_numpy(float), ref.loc[got.index, name].to_numpy(float)
        ok = np.isclose(g, e, rtol=1e-6, atol=1e-9, equal_nan=True)
        assert ok.all(), (name, list(got.index[~ok][:5]), g[~ok][:5], e[~ok][:5])
    # the label column is the value (regression) or the class index (multiclass), as the trainer takes it
    labels = stream[stream["kind"] == "label"].set_index("event_id")["label"]
    want = labels.loc[got.index]
    want = want.map(CLASSES.index).astype(float) if model.task == "multiclass" else want.astype(float)
    assert np.array_equal(got["label"].to_numpy(float), want.to_numpy())
    assert (got[f"label_count_{window_tag(600)}"] > 1).any()  # the windows really hold several labels
    if model.task == "multiclass":
        rates = got[[f"label_rate_c{i}_10m" for i in range(3)]].dropna()
        assert np.allclose(rates.sum(axis=1), 1.0) and len(rates) > 1000


def test_categorical_fields_are_the_events_own_text_in_training_rows() -> None:
    batches = task_batches(20, REGRESSION)
    stream = pd.concat([b[1] for b in batches], ignore_index=True)
    rows = feed([FeatureShard(FEATURES, model=REGRESSION)], batches)
    events = stream[stream["kind"] == "event"].set_index("event_id")
    assert rows["city"].dtype == object
    assert rows["city"].tolist() == events.loc[rows["event_id"], "city"].tolist()
    assert rows["city"].isna().any() and set(rows["city"].dropna()) == {"paris", "rome", "oslo"}
    assert FeatureShard(FEATURES, model=REGRESSION).empty_rows()["city"].dtype == object


def _rows_by_id(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values("event_id").reset_index(drop=True)


def _assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = _rows_by_id(a), _rows_by_id(b)
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for c in a.columns:
        if not (pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c])):  # text (object or str)
            assert a[c].tolist() == b[c].tolist(), c
        else:
            assert np.allclose(a[c].to_numpy(float), b[c].to_numpy(float), equal_nan=True, rtol=1e-9), c


@pytest.mark.parametrize("model", [REGRESSION, MULTICLASS], ids=["regression", "multiclass"])
def test_kill_and_recover_through_a_checkpoint_gives_the_same_rows(tmp_path, model: ModelConfig) -> None:
    batches, cut = task_batches(30, model), 12
    whole = feed([FeatureShard(FEATURES, model=model)], batches)
    first = FeatureShard(FEATURES, model=model)
    before = feed([first], batches[:cut])
    # a served vector recorded with text before the checkpoint is restored with it
    pending = first.recent_events(1000)
    assert pending["city"].notna().any()  # rows waiting for a label hold their text
    store = CheckpointStore(str(tmp_path))
    write_shard_checkpoint(store, 1, first)
    store.write_manifest(1, batch_id=cut, position=cut, num_shards=1)
    again = FeatureShard(FEATURES, model=model)
    assert load_shard_checkpoint(CheckpointStore(str(tmp_path)), again, num_shards=1)
    assert again.recent_events(1000)["city"].tolist() == pending["city"].tolist()
    after = feed([again], batches)  # batches up to the cut are answered as applied before: no rows
    _assert_same_rows(pd.concat([before, after], ignore_index=True), whole)


def test_categorical_text_survives_a_reshard_two_into_three(tmp_path) -> None:
    batches, cut = task_batches(30, MULTICLASS), 15
    fresh = [FeatureShard(FEATURES, i, model=MULTICLASS) for i in range(3)]
    whole = feed(fresh, batches)
    two = [FeatureShard(FEATURES, i, model=MULTICLASS) for i in range(2)]
    before = feed(two, batches[:cut])
    store = CheckpointStore(str(tmp_path))
    for s in two:
        write_shard_checkpoint(store, 1, s)
    store.write_manifest(1, batch_id=cut, position=cut, num_shards=2)
    three = [FeatureShard(FEATURES, i, model=MULTICLASS) for i in range(3)]
    for s in three:
        assert load_shard_checkpoint(CheckpointStore(str(tmp_path)), s, num_shards=3)
    assert sum(len(s.pending) for s in three) == sum(len(s.pending) for s in two) > 0
    after = feed(three, batches)
    _assert_same_rows(pd.concat([before, after], ignore_index=True), whole)


def test_lookups_answer_text_and_served_vectors_keep_it_for_the_training_row() -> None:
    batches = task_batches(6, REGRESSION)
    shard = FeatureShard(FEATURES, model=REGRESSION)
    feed([shard], batches)
    t = float(batches[-1][1]["event_time"].max())
    ev = pd.DataFrame({"entity": ["u1", "u2", "u3"], "event_time": [t, t, t], "x0": [0.0] * 3, "x1": [0.0] * 3,
                       "x2": [0.0] * 3, "city": pd.Series(["rome", None, 5], dtype=object),
                       "event_id": ["s1", "s2", "s3"]})
    res = shard.lookup(ev, record=True)
    assert res.reasons == ["", "", "not_categorical:city"]
    assert res.text["city"].tolist() == ["rome", None, None]
    assert np.isnan(res.features[:, res.feature_names.index("city")]).all()
    assert res.rows()["city"].tolist() == ["rome", None, None]
    assert list(res.rows().columns) == FEATURES.feature_names(REGRESSION)
    # the stream then brings event s1 with another city, and its label: the training row has the served text
    later = pd.DataFrame({"kind": ["event", "label"], "event_id": ["s1", "s1"], "entity": ["u1", "u1"],
                          "event_time": [t, t + 1], "x0": [0.0, np.nan], "x1": [0.0, np.nan],
                          "x2": [0.0, np.nan], "city": pd.Series(["oslo", None], dtype=object),
                          "label": [np.nan, 2.5]})
    out = shard.process(len(batches) + 1, later, watermark=t - 10, clock=t + 1)
    assert out.training_rows["city"].tolist() == ["rome"]
    assert out.skew["features"]["city"]["differing"] == 1 and out.skew["features"]["x0"]["differing"] == 0


def test_local_runner_lookup_merges_text_from_every_shard() -> None:
    batches = task_batches(4, REGRESSION)
    runner = LocalRunner(FEATURES, FramesSource([b[1] for b in batches]), num_shards=2, model=REGRESSION)
    runner.run()
    ev = pd.DataFrame({"entity": [f"u{i}" for i in range(6)], "x0": 0.0, "x1": 0.0, "x2": 0.0,
                       "city": pd.Series(["rome", "oslo", None, "paris", "rome", "oslo"], dtype=object)})
    res = runner.lookup(ev)
    assert res.reasons == [""] * 6 and res.text["city"].tolist() == ev["city"].tolist()


def _batch(**cols) -> pd.DataFrame:
    n = len(cols["kind"])
    base = {"event_id": [f"b{i}" for i in range(n)], "entity": ["u"] * n, "event_time": [10.0 + i for i in range(n)],
            "x0": [0.0] * n, "x1": [0.0] * n, "x2": [0.0] * n, "city": [None] * n, "label": [None] * n}
    base.update(cols)
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in base.items()})


@pytest.mark.parametrize("model, labels, why", [
    (REGRESSION, [3.5, "abc", float("inf"), None, True], ["", "bad_label:wrong_type", "bad_label:non_finite",
                                                          "bad_label:missing", "bad_label:wrong_type"]),
    (MULTICLASS, ["mid", "yak", 2, None, "low"], ["", "bad_label:unknown_class", "bad_label:unknown_class",
                                                  "bad_label:missing", ""]),
], ids=["regression", "multiclass"])
def test_bad_labels_are_rejected_with_their_reason_and_counted(model: ModelConfig, labels: list, why: list) -> None:
    shard = FeatureShard(FEATURES, model=model)
    events = _batch(kind=["event"] * 5, event_id=[f"e{i}" for i in range(5)])
    assert shard.process(1, events, watermark=0.0).accepted == 5
    res = shard.process(2, _batch(kind=["label"] * 5, event_id=[f"e{i}" for i in range(5)], label=labels,
                                  event_time=[20.0] * 5), watermark=0.0)
    bad = [w for w in why if w]
    assert res.rejected == len(bad) and res.accepted == 5 - len(bad)
    assert res.reasons == {w: bad.count(w) for w in set(bad)}
    assert len(res.training_rows) == 5 - len(bad)  # the rest of the batch goes on
    stats = shard.stats()
    assert all(stats[f"rejected:{w}"] == bad.count(w) for w in bad)


def test_bad_categories_are_rejected_with_their_reason_and_the_rest_applied() -> None:
    features = NUMERIC.model_copy(update={"fields": [*NUMERIC.fields, FieldSpec(
        name="city", type="categorical", allowed=["paris", "rome"])]})
    shard = FeatureShard(features, model=REGRESSION)
    res = shard.process(1, _batch(kind=["event"] * 5, city=["paris", 7, "lyon", None, "rome"]), watermark=0.0)
    assert res.reasons == {"not_categorical:city": 1, "unknown_category:city": 1, "missing:city": 1}
    assert res.accepted == 2 and res.nulls["city"] == 1 and res.events == 2
    assert shard.recent_events(10)["city"].tolist() == ["paris", "rome"]


def test_binary_labels_keep_their_single_reason() -> None:
    shard = FeatureShard(NUMERIC)
    shard.process(1, _batch(kind=["event"] * 2), watermark=0.0)
    res = shard.process(2, _batch(kind=["label"] * 2, label=[1.0, 0.5]), watermark=0.0)
    assert res.reasons == {"bad_label": 1}


def test_a_checkpoint_of_another_task_is_refused_by_name(tmp_path) -> None:
    store = CheckpointStore(str(tmp_path))
    binary = FeatureShard(NUMERIC)
    feed([binary], make_batches(3, STREAM, NUMERIC))
    write_shard_checkpoint(store, 1, binary)
    store.write_manifest(1, batch_id=3, position=3, num_shards=1)
    with pytest.raises(CheckpointError, match="written for task binary, this config is task multiclass"):
        load_shard_checkpoint(CheckpointStore(str(tmp_path)), FeatureShard(NUMERIC, model=MULTICLASS), 1)
    with pytest.raises(CheckpointError, match="with categorical fields"):
        load_shard_checkpoint(CheckpointStore(str(tmp_path)), FeatureShard(FEATURES), 1)
    assert load_shard_checkpoint(CheckpointStore(str(tmp_path)), FeatureShard(NUMERIC), 1)  # the same task: fine
    regression = FeatureShard(FEATURES, model=REGRESSION)
    with pytest.raises(CheckpointError, match="written for task regression with categorical fields"):
        FeatureShard(FEATURES, model=MULTICLASS).restore(regression.snapshot())
    assert "task" not in binary.snapshot()["meta"]  # a binary numeric snapshot is as it always was


def test_feature_names_and_schema_hash_per_task() -> None:
    cfg = FeaturesConfig()
    assert cfg.feature_names() == cfg.feature_names(ModelConfig())  # None = binary, today's names
    assert cfg.feature_names()[-5:] == ["label_last", "label_rate_5m", "label_count_5m", "label_rate_1h",
                                        "label_count_1h"]
    assert cfg.schema_hash(ModelConfig()) == cfg.schema_hash() == Config().schema_hash()
    assert len({cfg.schema_hash(), cfg.schema_hash(REGRESSION), cfg.schema_hash(MULTICLASS),
                cfg.schema_hash(ModelConfig(task="multiclass", classes=["a", "b"]))}) == 4
    whole = Config(model=MULTICLASS)
    assert whole.feature_names() == cfg.feature_names(MULTICLASS) and "label_rate_c2_1h" in whole.feature_names()


def test_a_file_reads_categorical_columns_as_text(tmp_path) -> None:
    from streamfit.actors.stream.file_source import FileReplaySource
    from streamfit.config import FileSourceConfig

    path = tmp_path / "events.csv"
    path.write_text("entity,ts,x0,x1,x2,city,y\nc1,1,0,0,0,75001,1.5\nc2,2,0,0,0,,2.5\nc1,3,0,0,0,paris,\n")
    cfg = FileSourceConfig(path=str(path), columns={"event_time": "ts", "label": "y"})
    src = FileReplaySource(cfg, FEATURES)
    df, _ = src.read(src.initial_position())
    events = df[df["kind"] == "event"]
    assert [None if pd.isna(c) else c for c in events["city"]] == ["75001", None, "paris"]
    res = FeatureShard(FEATURES, model=REGRESSION).process(1, df, watermark=0.0)
    assert res.rejected == 0 and res.training_rows["city"].tolist() == ["75001", None]


def test_distinct_categories_per_window_equal_a_naive_reference() -> None:
    cities = ["paris", "rome", "oslo", "lima", "kyiv"]
    features = NUMERIC.model_copy(update={
        "fields": [*NUMERIC.fields, FieldSpec(name="city", type="categorical")],
        "aggregates": [*NUMERIC.aggregates, AggregateSpec(field="city", ops=["distinct"])]})
    features = FeaturesConfig.model_validate(features.model_dump())
    batches = task_batches(25, REGRESSION, cities=cities)
    # city depends on the event number only: scramble it per entity so windows see repeats and variety
    rng = np.random.default_rng(3)
    for _, df, _ in batches:
        ev = (df["kind"] == "event").to_numpy()
        df.loc[ev, "city"] = rng.choice(cities, size=int(ev.sum()))
    stream = pd.concat([b[1] for b in batches], ignore_index=True)
    rows = feed([FeatureShard(features, model=REGRESSION)], batches).set_index("event_id")
    events = stream[stream["kind"] == "event"]
    us = lambda t: np.round(np.asarray(t, dtype=np.float64) * 1e6).astype(np.int64)  # noqa: E731
    checked = 0
    for _, g in events.groupby("entity"):
        t, c = us(g["event_time"]), g["city"].to_numpy(object)
        for eid, ti in zip(g["event_id"], t):
            if eid not in rows.index:  # its label has not arrived yet
                continue
            for w in features.windows_s:
                want = len(set(c[(t >= ti - us(w)) & (t < ti)]))
                assert rows.loc[eid, f"city_distinct_{window_tag(w)}"] == want, (eid, w)
                checked += want > 1
    assert checked > 100
    assert rows["city"].isin(cities).all()


@pytest.mark.parametrize("agg, why", [
    ({"field": "city", "ops": ["mean"]}, r"ops \[distinct\] only"),
    ({"field": "city", "ops": ["distinct", "max"], "last": True}, r"ops \[distinct\] only"),  # last is fine
    ({"field": "x0", "ops": ["distinct"]}, "distinct is for a categorical field"),
])
def test_window_ops_must_fit_the_field_type(agg: dict, why: str) -> None:
    from streamfit.errors import ConfigError
    from streamfit.config import config_from_dict

    with pytest.raises(ConfigError, match=why):
        config_from_dict({"features": {"fields": [{"name": "x0"}, {"name": "city", "type": "categorical"}],
                                       "aggregates": [agg]}})
