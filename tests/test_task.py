"""The task vocabulary (streamfit.task) and the label/category dictionaries (streamfit.dictionaries),
and real XGBoost boosters trained with each task's objective on dictionary-encoded frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamfit.dictionaries import CategoryDictionary, LabelDictionary, check_categories, label_keys
from streamfit.metrics import binary_metrics
from streamfit.stateful import Stateful
from streamfit.task import (METRICS, REGRESSION_OBJECTIVES, Task, TaskSpec, check_labels, higher_is_better,
                            row_error, task_metrics)

# -- the vocabulary ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, objective, eval_metric, gate", [
    (TaskSpec(Task.BINARY), "binary:logistic", "logloss", "logloss"),
    (TaskSpec("multiclass"), "multi:softprob", "mlogloss", "logloss"),
    (TaskSpec(Task.REGRESSION), "reg:squarederror", "rmse", "rmse"),
    (TaskSpec(Task.REGRESSION, objective="reg:absoluteerror"), "reg:absoluteerror", "mae", "mae"),
    (TaskSpec(Task.REGRESSION, objective="reg:quantileerror", quantile_alpha=0.9), "reg:quantileerror", "quantile",
     "pinball"),
])
def test_objective_eval_metric_and_gate_metric_per_task(spec: TaskSpec, objective: str, eval_metric: str,
                                                        gate: str) -> None:
    params = spec.xgb_params(n_classes=4)
    assert params["objective"] == objective and params["eval_metric"] == eval_metric
    assert spec.gate_metric == gate and gate in METRICS[spec.task]
    assert higher_is_better(gate) is False  # every gate metric is a loss
    assert ("num_class" in params) == (spec.task is Task.MULTICLASS)
    assert params.get("quantile_alpha") == (0.9 if objective == "reg:quantileerror" else None)


def test_metric_directions_and_bad_specs() -> None:
    assert higher_is_better("accuracy") and higher_is_better("auc")
    assert not higher_is_better("logloss") and not higher_is_better("rmse") and not higher_is_better("mae")
    with pytest.raises(ValueError, match="unknown metric"):
        higher_is_better("f1")
    with pytest.raises(ValueError, match="one of"):
        TaskSpec(Task.REGRESSION, objective="reg:tweedie")
    with pytest.raises(ValueError, match="regression only"):
        TaskSpec(Task.BINARY, objective="reg:squarederror")
    with pytest.raises(ValueError, match="quantile_alpha"):
        TaskSpec(Task.REGRESSION, objective="reg:quantileerror", quantile_alpha=1.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        TaskSpec(Task.MULTICLASS).xgb_params()
    with pytest.raises(ValueError):
        Task("ranking")
    assert set(REGRESSION_OBJECTIVES) == {"reg:squarederror", "reg:absoluteerror", "reg:quantileerror"}


def test_prediction_shapes() -> None:
    assert TaskSpec(Task.BINARY).prediction_shape(5) == (5,)
    assert TaskSpec(Task.MULTICLASS).prediction_shape(5, n_classes=3) == (5, 3)
    assert TaskSpec(Task.REGRESSION).prediction_shape(5) == (5,)


def test_row_errors_per_task() -> None:
    assert row_error(Task.BINARY, np.array([1, 0, 1]), np.array([0.7, 0.6, 0.2])).tolist() == [0.0, 1.0, 1.0]
    probs = np.array([[0.1, 0.8, 0.1], [0.4, 0.3, 0.3], [0.2, 0.2, 0.6]])
    assert row_error(Task.MULTICLASS, np.array([1, 2, 2]), probs).tolist() == [0.0, 1.0, 0.0]
    assert row_error(Task.REGRESSION, np.array([1.0, -2.0]), np.array([1.5, 1.0])).tolist() == [0.5, 3.0]
    assert TaskSpec(Task.REGRESSION).row_error(np.array([2.0]), np.array([0.0])).tolist() == [2.0]


def test_task_metrics() -> None:
    y, p = np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.4, 0.1])
    assert task_metrics(Task.BINARY, y, p) == binary_metrics(y, p)  # binary is streamfit.metrics' own
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]])
    m = task_metrics(Task.MULTICLASS, np.array([0, 2, 1]), probs)
    assert m["n"] == 3 and m["accuracy"] == pytest.approx(2 / 3)
    assert m["logloss"] == pytest.approx(-(math.log(0.7) + math.log(0.8) + math.log(0.5)) / 3)
    zero = task_metrics(Task.MULTICLASS, np.array([2]), np.array([[0.5, 0.5, 0.0]]))
    assert zero["accuracy"] == 0.0 and math.isfinite(zero["logloss"])  # a zero probability is clamped
    r = task_metrics(Task.REGRESSION, np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
    assert r == {"rmse": pytest.approx(math.sqrt(5 / 3)), "mae": pytest.approx(1.0), "n": 3}
    q = TaskSpec(Task.REGRESSION, objective="reg:quantileerror", quantile_alpha=0.9).metrics(
        np.array([10.0, 0.0]), np.array([0.0, 10.0]))
    assert q["pinball"] == pytest.approx((0.9 * 10 + 0.1 * 10) / 2)
    for task in Task:
        empty = task_metrics(task, np.array([]), np.zeros((0, 2)) if task is Task.MULTICLASS else np.array([]))
        assert empty["n"] == 0 and math.isnan(empty["accuracy" if task is not Task.REGRESSION else "rmse"])


# -- label checks --------------------------------------------------------------------------------


def test_binary_labels_as_schema_validate_names_them() -> None:
    y, why = check_labels(Task.BINARY, pd.Series([0, 1, 2.0, np.nan, "yes", "1", True], dtype=object))
    assert why.tolist() == ["", "", "bad_label", "bad_label", "bad_label", "", ""]
    assert y[[0, 1, 5, 6]].tolist() == [0.0, 1.0, 1.0, 1.0] and np.isnan(y[[2, 3, 4]]).all()
    assert check_labels(Task.BINARY, np.array([True, False]))[0].tolist() == [1.0, 0.0]


def test_regression_labels_reason_per_row() -> None:
    values = [1.5, "2", None, float("nan"), float("-inf"), "abc", True, {"v": 1}, [3]]
    y, why = check_labels(Task.REGRESSION, values)
    assert why.tolist() == ["", "", "bad_label:missing", "bad_label:missing", "bad_label:non_finite",
                            "bad_label:wrong_type", "bad_label:wrong_type", "bad_label:wrong_type",
                            "bad_label:wrong_type"]
    assert y[:2].tolist() == [1.5, 2.0] and np.isnan(y[2:]).all()
    # Typed columns take the fast path: a float array, a str column, a bool array.
    y, why = check_labels(Task.REGRESSION, np.array([0.5, np.inf, np.nan]))
    assert why.tolist() == ["", "bad_label:non_finite", "bad_label:missing"]
    assert check_labels(Task.REGRESSION, pd.Series(["1.5", "x"]))[1].tolist() == ["", "bad_label:wrong_type"]
    assert check_labels(Task.REGRESSION, np.array([True]))[1].tolist() == ["bad_label:wrong_type"]


def test_multiclass_labels_reason_per_row() -> None:
    d = LabelDictionary.fit(["a", "b", "c"])
    y, why = check_labels(Task.MULTICLASS, ["c", "a", "z", None, float("inf"), False, ["a"]], d)
    assert why.tolist() == ["", "", "bad_label:unknown_class", "bad_label:missing", "bad_label:non_finite",
                            "bad_label:wrong_type", "bad_label:wrong_type"]
    assert y[:2].tolist() == [2.0, 0.0] and np.isnan(y[2:]).all()
    with pytest.raises(ValueError, match="LabelDictionary"):
        check_labels(Task.MULTICLASS, ["a"])


def test_typed_columns_are_checked_without_a_call_per_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a column mixing types is looked at value by value (Series.map); typed ones never are."""
    def per_value(*_a, **_k):
        raise AssertionError("a per-value pass on a typed column")

    monkeypatch.setattr(pd.Series, "map", per_value)
    monkeypatch.setattr(pd.Series, "apply", per_value)
    rng = np.random.default_rng(0)
    floats, names = rng.normal(size=10_000), pd.Series(rng.choice(["x", "y", "z"], 10_000))
    d = LabelDictionary.fit(names)
    assert (check_labels(Task.REGRESSION, floats)[1] == "").all()
    assert (check_labels(Task.REGRESSION, names.astype(object))[1] == "bad_label:wrong_type").all()
    assert (d.encode(names)[1] == "").all() and (d.encode(np.array([0, 1]))[1] == "bad_label:unknown_class").all()
    assert (check_categories(names, "c") == "").all()
    assert (CategoryDictionary.fit({"c": names}, ["c"]).encode(pd.DataFrame({"c": names}))["c"].cat.codes >= 0).all()
    with pytest.raises(AssertionError, match="per-value"):
        check_labels(Task.REGRESSION, [1.0, {"v": 1}])


# -- the label dictionary ------------------------------------------------------------------------


def test_label_keys_are_canonical() -> None:
    keys, why = label_keys(pd.Series([1, 1.0, "1", "1.0", 2.5, "b"], dtype=object))
    assert keys.tolist() == ["1", "1", "1", "1", "2.5", "b"] and (why == "").all()
    assert label_keys(np.array([0.0, 3.0]))[0].tolist() == ["0", "3"]


def test_label_dictionary_order_is_stable_and_extends_without_renumbering() -> None:
    d = LabelDictionary.fit([10, 2, "b", 2, "a", None, float("inf")])
    assert d.classes == ["2", "10", "a", "b"] and len(d) == 4  # numbers by value, then names; bad ones left out
    assert LabelDictionary.fit(["b", "a", 10, 2]).classes == d.classes  # arrival order does not matter
    assert LabelDictionary.fit(["nan", "b", "1"]).classes == ["1", "b", "nan"]  # text that is no finite number: a name
    assert d.extend(["c", 1, "a"]) == ["1", "c"]
    assert d.classes == ["2", "10", "a", "b", "1", "c"]  # old indices kept
    codes, why = d.encode([10.0, "c", "nope"])
    assert codes[:2].tolist() == [1.0, 5.0] and why.tolist() == ["", "", "bad_label:unknown_class"]
    assert d.decode(np.array([5, 0])).tolist() == ["c", "2"]


def test_label_dictionary_diff_and_stateful() -> None:
    a, b = LabelDictionary(["x", "y"]), LabelDictionary(["y", "x"])
    assert a.diff(LabelDictionary(["x", "y"])) == ""
    assert a.diff(b) == "the same classes in another order" and b.classes == ["y", "x"]  # the given order kept
    with pytest.raises(ValueError, match="not a class"):
        LabelDictionary(["x", None])
    assert "only there: ['z']" in a.diff(LabelDictionary(["x", "y", "z"]))
    assert isinstance(a, Stateful)
    fresh = LabelDictionary(["q"])
    fresh.restore(a.snapshot())
    assert fresh.classes == a.classes and fresh.diff(a) == ""
    fresh.extend(["w"])
    assert a.classes == ["x", "y"]  # a snapshot is a copy


# -- the category dictionary ---------------------------------------------------------------------


def frame() -> pd.DataFrame:
    return pd.DataFrame({"country": ["fr", "de", None, "fr", "it"], "device": ["ios", "web", "web", "android", None],
                         "x": [1.0, 2.0, 3.0, 4.0, 5.0]})


def test_category_dictionary_fit_and_encode() -> None:
    d = CategoryDictionary.fit(frame(), ["country", "device"])
    assert d.categories == {"country": ["de", "fr", "it"], "device": ["android", "ios", "web"]}
    assert d.fields == ["country", "device"]
    serving = pd.DataFrame({"country": ["it", "es", "fr", None], "device": ["web", "web", "tv", "ios"],
                            "x": [0.0, 1.0, 2.0, 3.0]})
    out = d.encode(serving)
    assert out["country"].cat.codes.tolist() == [2, -1, 1, -1]
    assert out["device"].cat.codes.tolist() == [2, 2, -1, 1]
    assert list(out["country"].cat.categories) == ["de", "fr", "it"]  # the same codes at training and serving
    assert out["x"].tolist() == [0.0, 1.0, 2.0, 3.0] and serving["country"].tolist()[1] == "es"  # input untouched
    assert d.unseen == {"country": 1, "device": 1}  # a missing value is not an unseen one
    d.encode(serving)
    assert d.unseen == {"country": 2, "device": 2}
    absent = d.encode(pd.DataFrame({"x": [1.0, 2.0]}))
    assert absent["device"].cat.codes.tolist() == [-1, -1] and d.unseen == {"country": 2, "device": 2}


def test_category_dictionary_leaves_out_non_text_when_fitting() -> None:
    d = CategoryDictionary.fit({"c": pd.Series(["a", 3, None, "b"], dtype=object)}, ["c"])
    assert d.categories == {"c": ["a", "b"]}
    out = d.encode(pd.DataFrame({"c": pd.Series([3, "b"], dtype=object)}))
    assert out["c"].cat.codes.tolist() == [-1, 1] and d.unseen == {"c": 1}


def test_category_dictionary_diff_and_stateful() -> None:
    d = CategoryDictionary.fit(frame(), ["country", "device"])
    d.encode(pd.DataFrame({"country": ["xx"], "device": ["web"]}))
    assert isinstance(d, Stateful)
    other = CategoryDictionary({"zzz": ["1"]})
    other.restore(d.snapshot())
    assert other.categories == d.categories and other.unseen == {"country": 1, "device": 0} and other.diff(d) == ""
    assert other.dtype("country") == d.dtype("country")
    changed = CategoryDictionary({"country": ["de", "fr"], "route": ["a"]})
    why = d.diff(changed)
    assert "country: 1 categories only here ['it']" in why and "device: categorical here only" in why
    assert "route: categorical there only" in why


def test_check_categories() -> None:
    values = pd.Series(["fr", 7, None, "zz", True, 1.5], dtype=object)
    assert check_categories(values, "c").tolist() == ["", "not_categorical:c", "", "", "not_categorical:c",
                                                      "not_categorical:c"]
    assert check_categories(values, "c", allowed=["fr"]).tolist()[3] == "unknown_category:c"
    assert check_categories(np.array([1.0, np.nan]), "c").tolist() == ["not_categorical:c", ""]
    assert (check_categories(pd.Series(["a", "b"]), "c") == "").all()


# -- real XGBoost boosters -----------------------------------------------------------------------


def training_frame(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, CategoryDictionary]:
    """Rows with a numeric and a categorical field (strings), the category dictionary, and a hidden score."""
    rng = np.random.default_rng(seed)
    raw = pd.DataFrame({"x": rng.normal(size=n), "colour": rng.choice(["red", "green", "blue", "grey"], n)})
    cats = CategoryDictionary.fit(raw, ["colour"])
    effect = raw["colour"].map({"red": 2.0, "green": -1.0, "blue": 0.5, "grey": -2.0}).to_numpy()
    return cats.encode(raw), raw["x"].to_numpy() + effect, cats


@pytest.mark.parametrize("spec", [TaskSpec(Task.BINARY), TaskSpec(Task.MULTICLASS), TaskSpec(Task.REGRESSION),
                                  TaskSpec(Task.REGRESSION, objective="reg:absoluteerror"),
                                  TaskSpec(Task.REGRESSION, objective="reg:quantileerror", quantile_alpha=0.8)],
                         ids=lambda s: s.objective or s.task.value)
def test_xgboost_trains_each_task_on_categories_and_keeps_them_in_its_own_formats(spec: TaskSpec,
                                                                                  tmp_path: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    X, score, cats = training_frame()
    labels = None
    if spec.task is Task.BINARY:
        y = (score > 0).astype(float)
    elif spec.task is Task.MULTICLASS:
        labels = LabelDictionary.fit(np.array(["low", "mid", "high"], dtype=object))
        y, why = check_labels(spec.task, np.where(score < -1, "low", np.where(score < 1, "mid", "high")), labels)
        assert (why == "").all()
    else:
        y, why = check_labels(spec.task, score * 10.0)
    params = {**spec.xgb_params(n_classes=len(labels) if labels else None), "max_depth": 3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(X, y, enable_categorical=True), num_boost_round=20)
    # Serving rows: one unseen category (-> missing, counted) and the categories in another order.
    serve_raw = pd.DataFrame({"x": [0.0, 0.0, 0.0], "colour": ["red", "grey", "purple"]})
    served = cats.encode(serve_raw)
    assert cats.unseen == {"colour": 1}
    pred = booster.predict(xgb.DMatrix(served, enable_categorical=True))
    assert pred.shape == spec.prediction_shape(3, len(labels) if labels else None)
    if spec.task is Task.MULTICLASS:
        assert np.allclose(pred.sum(axis=1), 1.0)
        assert labels.decode(pred.argmax(axis=1)[:2]).tolist() == ["high", "low"]  # red -> 2, grey -> -2
    elif spec.task is Task.BINARY:
        assert pred[0] > 0.5 > pred[1]
    else:
        assert pred[0] > pred[1]  # red's effect above grey's
    assert np.isfinite(spec.metrics(y, booster.predict(xgb.DMatrix(X, enable_categorical=True)))[spec.gate_metric])
    for fmt in ("json", "ubj"):
        path = tmp_path / f"model.{fmt}"
        booster.save_model(path)
        loaded = xgb.Booster(model_file=str(path))
        stored = dict(loaded.get_categories(export_to_arrow=True).to_arrow())
        assert stored["x"] is None and stored["colour"].to_pylist() == cats.categories["colour"]
        assert loaded.feature_types == ["float", "c"] and loaded.feature_names == ["x", "colour"]
        assert np.allclose(loaded.predict(xgb.DMatrix(served, enable_categorical=True)), pred)
