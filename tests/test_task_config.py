"""Issue 15, the config and validation side: the ``model`` section, categorical fields, the gate metric
per task (errors name the field path), and ``schema.validate``'s reasons per task and per categorical field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamfit.config import Config, FeaturesConfig, FieldSpec, ModelConfig, config_from_dict, load_config
from streamfit.errors import ConfigError
from streamfit.schema import check_columns, validate
from streamfit.task import Task

# -- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, path, words", [
    ({"trainer": {"gate_metric": "rmse"}}, "trainer.gate_metric", "no metric of task binary"),
    ({"model": {"task": "regression"}, "trainer": {"gate_metric": "auc"}}, "trainer.gate_metric", "rmse, mae"),
    ({"model": {"task": "regression"}, "trainer": {"gate_metric": "pinball"}}, "trainer.gate_metric", "rmse, mae"),
    ({"model": {"task": "multiclass", "classes": ["a", "b"]}, "trainer": {"gate_metric": "auc"}},
     "trainer.gate_metric", "accuracy, logloss"),
    ({"model": {"task": "multiclass"}}, "model.classes", "required for task multiclass"),
    ({"model": {"task": "multiclass", "classes": ["a"]}}, "model.classes", "at least 2 distinct"),
    ({"model": {"task": "multiclass", "classes": [2, "2.0", "b"]}}, "model.classes", "repeated class"),
    ({"model": {"task": "multiclass", "classes": ["a", None]}}, "model.classes.1", "valid string"),
    ({"model": {"task": "regression", "classes": ["a", "b"]}}, "model.classes", "only for task multiclass"),
    ({"model": {"task": "binary", "objective": "reg:absoluteerror"}}, "model.objective", "for task regression"),
    ({"model": {"task": "regression", "objective": "reg:tweedie"}}, "model.objective", ""),
    ({"model": {"task": "regression", "quantile_alpha": 0.3}}, "model.quantile_alpha", "reg:quantileerror"),
    ({"model": {"task": "regression", "objective": "reg:quantileerror", "quantile_alpha": 1.5}},
     "model.quantile_alpha", ""),
    ({"model": {"task": "ranking"}}, "model.task", ""),
    ({"model": {"task": "regression"}, "trainer": {"accuracy_below": 0.8}}, "trainer.accuracy_below", "no accuracy"),
    ({"features": {"fields": [{"name": "c", "type": "categorical", "max": 3}], "aggregates": []}},
     "features.fields.0.max", "no range"),
    ({"features": {"fields": [{"name": "c", "type": "categorical", "clip": True}], "aggregates": []}},
     "features.fields.0.clip", "no range"),
    ({"features": {"fields": [{"name": "x", "allowed": ["a"]}], "aggregates": []}},
     "features.fields.0.allowed", "only for a categorical field"),
    ({"features": {"fields": [{"name": "c", "type": "categorical", "allowed": []}], "aggregates": []}},
     "features.fields.0.allowed", ""),
    ({"features": {"fields": [{"name": "c", "type": "categorical", "allowed": ["a", "a"]}], "aggregates": []}},
     "features.fields.0.allowed", "repeated"),
    ({"features": {"fields": [{"name": "c", "type": "text"}], "aggregates": []}}, "features.fields.0.type", ""),
    ({"features": {"fields": [{"name": "x0", "type": "categorical"}, {"name": "x1"}]}},
     "features.aggregates.0.field", "categorical"),
])
def test_config_errors_name_the_field_path(data: dict, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert str(err.value).startswith(path) and words in str(err.value)


def test_defaults_change_nothing_for_existing_configs() -> None:
    cfg = Config()
    assert cfg.model.task == "binary" and cfg.trainer.gate_metric == "logloss" and cfg.task_spec().task is Task.BINARY
    assert all(f.type == "numeric" and f.allowed is None for f in cfg.features.fields)
    assert cfg.features.categorical_fields() == []
    assert config_from_dict({"trainer": {"gate_metric": "auc"}}).trainer.gate_metric == "auc"
    # The schema hash of a config without categorical fields is the one it had before fields had a type.
    assert cfg.features.schema_hash() == "9f33e57914fa85f3"


def test_gate_metric_defaults_to_the_tasks_loss_and_round_trips(tmp_path) -> None:
    cases = [({"task": "regression"}, "rmse"), ({"task": "regression", "objective": "reg:absoluteerror"}, "mae"),
             ({"task": "regression", "objective": "reg:quantileerror", "quantile_alpha": 0.9}, "pinball"),
             ({"task": "multiclass", "classes": ["a", "b", "c"]}, "logloss")]
    for model, metric in cases:
        cfg = config_from_dict({"model": model})
        assert cfg.trainer.gate_metric == metric == cfg.task_spec().gate_metric
        again = Config.model_validate(cfg.model_dump())
        assert again == cfg
    quantile = config_from_dict({"model": cases[2][0]}).task_spec()
    assert quantile.xgb_params()["quantile_alpha"] == 0.9
    assert config_from_dict({"model": {"task": "regression"}, "trainer": {"gate_metric": "mae"}}).trainer.gate_metric \
        == "mae"
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  task: multiclass\n  classes: [cat, dog, 3]\nfeatures:\n  fields:\n"
                    "    - {name: x0}\n    - {name: country, type: categorical, allowed: [de, fr], required: false}\n"
                    "  aggregates: [{field: x0}]\n")
    cfg = load_config(path)
    assert cfg.model.classes == ["cat", "dog", "3"] and cfg.model.label_dictionary().classes == ["cat", "dog", "3"]
    assert cfg.features.categorical_fields() == ["country"]
    assert cfg.features.schema_hash() != FeaturesConfig(fields=[FieldSpec(name="x0"), FieldSpec(name="country")],
                                                        aggregates=[{"field": "x0"}]).schema_hash()


def test_classes_are_canonical_label_keys() -> None:
    m = ModelConfig(task="multiclass", classes=[0, 1, "2.0"])
    assert m.classes == ["0", "1", "2"] and m.label_dictionary().encode([2, "1", 1.0])[0].tolist() == [2.0, 1.0, 1.0]


# -- validation ------------------------------------------------------------------------------------

FEATURES = FeaturesConfig(fields=[FieldSpec(name="x0", min=-50, max=50),
                                  FieldSpec(name="country", type="categorical", allowed=["de", "fr"]),
                                  FieldSpec(name="device", type="categorical", required=False)],
                          aggregates=[{"field": "x0", "ops": ["mean"]}])


def events(country: list, device: list | None = None, x0: list | None = None) -> pd.DataFrame:
    n = len(country)
    return pd.DataFrame({"kind": "event", "event_id": [f"e{i}" for i in range(n)], "entity": "u", "event_time": 1.0,
                         "x0": x0 or [1.0] * n, "country": pd.Series(country, dtype=object),
                         "device": pd.Series(device or ["ios"] * n, dtype=object)})


def test_categorical_fields_reasons_and_counts() -> None:
    frame = events(["fr", 3, None, "it", True, "de", "", 2.5, "fr"],
                   ["ios", "web", "web", "web", "web", 7, None, "web", ""], x0=[1, 1, 1, 1, 1, 1, 1, 1, 99])
    clean, why = validate(frame, FEATURES)
    assert why.tolist() == ["", "not_categorical:country", "missing:country", "unknown_category:country",
                            "not_categorical:country", "not_categorical:device", "missing:country",
                            "not_categorical:country", "out_of_range:x0"]
    counts = pd.Series(why[why != ""]).value_counts().to_dict()
    assert counts == {"not_categorical:country": 3, "missing:country": 2, "unknown_category:country": 1,
                      "not_categorical:device": 1, "out_of_range:x0": 1}
    assert clean["country"].tolist()[0] == "fr" and clean["device"].tolist()[8] is None  # '' is missing
    assert clean["x0"].dtype == float


def test_categorical_columns_from_typed_arrays_and_label_rows() -> None:
    cols = {"entity": np.array(["u", "u", "u"], dtype=object), "event_time": np.array([1.0, 1.0, 1.0]),
            "event_id": np.array(["a", "b", "c"], dtype=object), "x0": np.array([1.0, 2.0, 3.0]),
            "country": np.array([1.0, np.nan, 2.0]), "kind": np.array(["event", "event", "label"], dtype=object),
            "label": np.array([np.nan, np.nan, 1.0])}
    out, why = check_columns(cols, 3, FEATURES)
    # A float column where text is expected: every value a number (NaN missing); label rows are not checked.
    assert why.tolist() == ["not_categorical:country", "missing:country", ""]
    pyarrow_text = events(["de", "fr"]).astype({"country": "string[pyarrow]", "device": "string[pyarrow]"})
    assert (validate(pyarrow_text, FEATURES)[1] == "").all()


def labels(values: list) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({"kind": "label", "event_id": [f"e{i}" for i in range(n)], "entity": "u", "event_time": 1.0,
                         "label": pd.Series(values, dtype=object)})


def test_binary_labels_are_checked_as_before() -> None:
    values = [0, 1, 2, None, "yes", "1", 0.5]
    want = ["", "", "bad_label", "bad_label", "bad_label", "", "bad_label"]
    assert validate(labels(values), FEATURES)[1].tolist() == want
    assert validate(labels(values), FEATURES, ModelConfig())[1].tolist() == want


def test_regression_labels_reasons_and_counts() -> None:
    model = ModelConfig(task="regression")
    clean, why = validate(labels([1.5, "2.5", float("inf"), None, "abc", True, -3]), FEATURES, model)
    assert why.tolist() == ["", "", "bad_label:non_finite", "bad_label:missing", "bad_label:wrong_type",
                            "bad_label:wrong_type", ""]
    assert clean["label"].tolist()[:2] == [1.5, 2.5] and clean["label"].tolist()[6] == -3.0
    assert np.isnan(clean["label"].to_numpy()[2:6]).all()
    no_column = labels([1.0]).drop(columns="label")
    assert validate(no_column, FEATURES, model)[1].tolist() == ["bad_label:missing"]
    # Event rows carry no label: they are never checked for one.
    assert (validate(events(["de", "fr"]), FEATURES, model)[1] == "").all()


def test_multiclass_labels_carry_the_class_index() -> None:
    model = ModelConfig(task="multiclass", classes=["cat", "dog", 7])
    clean, why = validate(labels(["dog", "cow", 7, "7.0", None, 1.5, False, "cat"]), FEATURES, model)
    assert why.tolist() == ["", "bad_label:unknown_class", "", "", "bad_label:missing", "bad_label:unknown_class",
                            "bad_label:wrong_type", ""]
    assert clean["label"].tolist()[0] == 1.0 and clean["label"].tolist()[2:4] == [2.0, 2.0]
    assert clean["label"].tolist()[7] == 0.0
    mixed = pd.concat([events(["de"]), labels(["emu"])], ignore_index=True)
    assert validate(mixed, FEATURES, model)[1].tolist() == ["", "bad_label:unknown_class"]


def test_validation_is_vectorised_for_typed_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Python call per row for typed columns (issue 14's rule)."""
    def per_value(*_a, **_k):
        raise AssertionError("a per-value pass on a typed column")

    n = 5000
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"kind": np.where(np.arange(n) % 2 == 0, "event", "label"),
                          "event_id": np.arange(n).astype(str), "entity": "u", "event_time": 1.0,
                          "x0": rng.normal(size=n), "country": rng.choice(["de", "fr", "it"], n),
                          "device": rng.choice(["ios", "web"], n), "label": rng.choice(["cat", "dog"], n)})
    monkeypatch.setattr(pd.Series, "map", per_value)
    monkeypatch.setattr(pd.Series, "apply", per_value)
    clean, why = validate(frame, FEATURES, ModelConfig(task="multiclass", classes=["cat", "dog"]))
    event = frame["kind"].to_numpy() == "event"
    assert set(why[event & (frame["country"].to_numpy() == "it")]) == {"unknown_category:country"}
    assert (why[~event] == "").all() and set(clean["label"][~event]) == {0.0, 1.0}


@pytest.mark.parametrize("section, field", [
    ({"trainer": {"rmse_above": 2.0}}, "trainer.rmse_above"),
    ({"model": {"task": "multiclass", "classes": ["a", "b"]}, "trainer": {"mae_above": 1.0}}, "trainer.mae_above"),
    ({"model": {"task": "regression"}, "trainer": {"logloss_above": 0.7}}, "trainer.logloss_above"),
])
def test_a_loss_trigger_of_another_task_is_refused_at_load_naming_it(section, field):
    with pytest.raises(ConfigError, match=field):
        config_from_dict(section)
