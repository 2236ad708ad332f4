"""Issue 15, the training side: ``TrainerCore`` fits, gates and registers a regression and a multiclass version
with a categorical field (real XGBoost, a real local-directory registry, no Ray); the version's meta keeps the
task and dictionaries; the registry reads them back and names the difference from a config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamfit.config import FeaturesConfig, FieldSpec, ModelConfig, TrainerConfig
from streamfit.registry import Registry, task_difference, version_task
from streamfit.task import Task
from streamfit.actors.training import TrainerCore, better_or_close
from streamfit.actors.training.row_log import RowLog
from streamfit.actors.training.task_fit import TaskFit

COLOURS = {"red": 2.0, "green": -1.0, "blue": 0.5, "grey": -2.0}
CLASSES = ["low", "mid", "high"]


def cfg(**over) -> TrainerConfig:
    base = dict(refit_every_rows=600, num_boost_round=20, drift_detector=None, min_rows_between=0, window_rows=4000)
    return TrainerConfig(**{**base, **over})


def stream(n: int, seed: int, start: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows as the shards deliver them: a float field, a text categorical field (some missing), a hidden score."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(list(COLOURS), n).astype(object)
    colour[rng.random(n) < 0.05] = None
    x = rng.normal(size=n)
    score = x + pd.Series(colour).map(COLOURS).fillna(0.0).to_numpy() + rng.normal(scale=0.3, size=n)
    rows = pd.DataFrame({"event_time": start + np.arange(n, dtype=float), "event_id": [f"{seed}-{i}" for i in range(n)],
                         "x": x, "colour": pd.Series(colour, dtype=object)})
    return rows, score


def as_class(score: np.ndarray) -> np.ndarray:
    return np.where(score < -1, "low", np.where(score < 1, "mid", "high")).astype(object)


def predict_meta(registry: Registry, version: int, frame: pd.DataFrame) -> np.ndarray:
    booster, meta = registry.load(version)
    cats = version_task(meta).categories
    return booster.inplace_predict(cats.encode(frame[meta["features"]]))


def test_regression_version_with_a_categorical_field(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "reg"))
    core = TrainerCore(cfg(), ["x", "colour"], registry, model=ModelConfig(task="regression"), categorical=["colour"])
    assert core.gate_metric == "rmse" and core._params()["objective"] == "reg:squarederror"
    rows, score = stream(700, seed=1)
    y = (score * 10.0).astype(object)
    y[:5] = [float("inf"), None, "abc", True, float("nan")]  # labels that do not fit: dropped, counted
    rows["label"] = y
    v1 = core.add_rows(rows)
    assert v1 == 1 and core.stats()["bad_labels"] == 5 and core.stats()["rows_buffered"] == 695
    record = core.history[-1]
    assert record["accepted"] and "vs_no_change" not in record and record.get("model") is None  # no baseline here
    meta = registry.meta(v1)
    assert meta["task"] == "regression" and meta["objective"] == "reg:squarederror" and "labels" not in meta
    assert meta["categories"]["categories"] == {"colour": sorted(COLOURS)}
    assert meta["metrics"]["gate_metric"] == "rmse" and meta["metrics"]["holdout"]["rmse"] < np.std(score * 10.0)
    assert list(meta["reference"]) == ["x"] and len(meta["reference_prediction"]) > 2  # numeric fields only
    got = registry.task(v1)
    assert got.spec.task is Task.REGRESSION and got.labels is None and got.categories.fields == ["colour"]
    probe = pd.DataFrame({"x": [0.0, 0.0, 0.0, 0.0], "colour": ["red", "grey", "purple", None]})
    pred = predict_meta(registry, v1, probe)
    assert pred.shape == (4,) and pred[0] > pred[2] > pred[1]  # red +2, unseen -> missing, grey -2
    # The recorded sample holds the raw text; encoded by the version's dictionary, it reproduces the predictions.
    sample = meta["verify"]
    assert any(isinstance(v, str) for v in sample["x"][0])
    again = predict_meta(registry, v1, pd.DataFrame(sample["x"], columns=meta["features"]))
    assert np.allclose(again, sample["p"], atol=1e-6)
    # The live version's errors feed the policy in units of its holdout MAE; a second refit is gated on RMSE.
    more, score2 = stream(700, seed=2, start=1000.0)
    more["label"] = score2 * 10.0
    assert core.add_rows(more.iloc[:300]) is None
    assert core.stats()["live_accuracy"] is None and 0.5 < core.stats()["live_relative_error"] < 2.0
    core.add_rows(more.iloc[300:])
    second = core.history[-1]
    assert second["live"]["rmse"] > 0 and "rmse" in second["candidate"] and second["reason"] == "volume"


def test_multiclass_version_with_a_categorical_field(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "reg"))
    model = ModelConfig(task="multiclass", classes=CLASSES)
    core = TrainerCore(cfg(), ["x", "colour"], registry, model=model, categorical=["colour"])
    assert core.gate_metric == "logloss" and core._params()["num_class"] == 3
    rows, score = stream(400, seed=3)
    text = as_class(score)
    text[:3] = ["zebra", None, 7]  # unknown class, missing, not a class
    assert core.add_rows(rows.assign(label=text)) is None
    more, score2 = stream(400, seed=4, start=400.0)
    index = model.label_dictionary().encode(as_class(score2))[0]  # class indices, as check_columns gives them
    v1 = core.add_rows(more.assign(label=index))
    assert v1 == 1 and core.stats()["bad_labels"] == 3 and core.stats()["task"] == "multiclass"
    meta = registry.meta(v1)
    assert meta["task"] == "multiclass" and meta["objective"] == "multi:softprob"
    assert meta["labels"] == {"classes": CLASSES} and meta["categories"]["categories"]["colour"] == sorted(COLOURS)
    assert meta["metrics"]["holdout"]["accuracy"] > 0.6 and "auc" not in meta["metrics"]["holdout"]
    assert meta["reference_prediction"] == [] and sum(meta["reference_class_shares"]) == pytest.approx(1.0)
    got = registry.task(v1)
    assert got.labels.classes == CLASSES and got.spec.task is Task.MULTICLASS
    probe = pd.DataFrame({"x": [0.0, 0.0, 0.0], "colour": ["red", "grey", "teal"]})
    pred = predict_meta(registry, v1, probe)
    assert pred.shape == (3, 3) and np.allclose(pred.sum(axis=1), 1.0)
    assert got.labels.decode(pred.argmax(axis=1)[:2]).tolist() == ["high", "low"]
    assert np.asarray(meta["verify"]["p"]).shape[1] == 3
    # Rows scored by the live version give 0/1 errors to the policy (accuracy makes sense again).
    later, score3 = stream(300, seed=5, start=800.0)
    core.add_rows(later.assign(label=as_class(score3)))
    assert 0.5 < core.stats()["live_accuracy"] <= 1.0


@pytest.mark.parametrize("margin", [1.0, 0.0])
def test_incremental_update_keeps_the_base_versions_categories(tmp_path: Path, margin: float) -> None:
    registry = Registry(str(tmp_path / "reg"))
    core = TrainerCore(cfg(strategy="incremental", incremental_trees=5, gate_margin=margin), ["x", "colour"],
                       registry, model=ModelConfig(task="regression", objective="reg:absoluteerror"),
                       categorical=["colour"])
    rows, score = stream(700, seed=6)
    assert core.add_rows(rows.assign(label=score)) == 1
    more, score2 = stream(700, seed=7, start=1000.0)
    more.loc[::3, "colour"] = "violet"  # new after v1: an incremental update cannot move v1's codes
    v2 = core.add_rows(more.assign(label=score2))
    if margin == 0.0:  # violet reads as missing: the update is worse on the holdout's MAE (a loss: lower is better)
        assert v2 is None and core.history[-1]["why"].startswith("gate: candidate mae")
        assert core.history[-1]["candidate"]["mae"] > core.history[-1]["live"]["mae"]
        return
    meta = registry.meta(v2)
    assert meta["strategy"] == "incremental" and meta["objective"] == "reg:absoluteerror" and meta["parent"] == 1
    assert meta["categories"] == registry.meta(1)["categories"] and meta["metrics"]["gate_metric"] == "mae"
    assert "violet" not in meta["categories"]["categories"]["colour"]


def test_window_with_text_survives_snapshot_and_row_log(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "reg"))
    model = ModelConfig(task="multiclass", classes=CLASSES)

    def core(log: RowLog | None = None) -> TrainerCore:
        return TrainerCore(cfg(), ["x", "colour"], registry, model=model, categorical=["colour"], row_log=log)

    first = core(RowLog(str(tmp_path / "state"), 4000))
    rows, score = stream(700, seed=8)
    assert first.add_rows(rows.assign(label=as_class(score))) == 1
    twin = core()
    twin.restore(first.snapshot())
    pd.testing.assert_frame_equal(twin.window(), first.window())
    assert twin.champion_cats.categories == first.champion_cats.categories
    resumed = core(RowLog(str(tmp_path / "state"), 4000))
    assert resumed.resumed == {"rows": 700, "state": True}
    assert resumed.window()["colour"].tolist() == first.window()["colour"].tolist()
    assert resumed.champion_version == 1 and resumed.champion_cats.fields == ["colour"]


def test_binary_meta_is_unchanged_and_binary_with_categories_keeps_its_dictionary(tmp_path: Path) -> None:
    plain = TrainerCore(cfg(baseline_candidate=False), ["x"], Registry(str(tmp_path / "a")))
    rows, score = stream(700, seed=9)
    assert plain.fit.plain and plain.add_rows(rows.assign(label=(score > 0).astype(float))) == 1
    meta = plain.registry.meta(1)
    assert not {"task", "objective", "labels", "categories"} & set(meta)  # reads as binary, as before
    assert version_task(meta).spec.task is Task.BINARY and version_task(meta).categories is None
    cat = TrainerCore(cfg(), ["x", "colour", "label_last"], Registry(str(tmp_path / "b")), categorical=["colour"])
    frame = rows.assign(label=(score > 0).astype(float), label_last=np.nan)
    assert cat.add_rows(frame) == 1  # the no_change baseline masks a categorical column as missing categories
    meta = cat.registry.meta(1)
    assert meta["task"] == "binary" and meta["objective"] == "binary:logistic" and "labels" not in meta
    assert "vs_no_change" in cat.history[-1]


def test_gate_metric_direction_and_task_checks() -> None:
    assert better_or_close("rmse", 1.0, 1.2, 0.0) and not better_or_close("rmse", 1.3, 1.2, 0.05)
    assert better_or_close("mae", 1.24, 1.2, 0.05) and not better_or_close("accuracy", 0.7, 0.8, 0.05)
    assert better_or_close("pinball", 0.5, float("nan"), 0.0) and not better_or_close("rmse", float("nan"), 1.0, 0)
    with pytest.raises(ValueError, match="gate_metric 'rmse'"):
        TrainerCore(TrainerConfig(gate_metric="rmse"), ["x"], None)
    with pytest.raises(ValueError, match="not among the features"):
        TrainerCore(cfg(), ["x"], None, categorical=["colour"])
    fit = TaskFit(["x"], ModelConfig(task="regression"))
    errors = fit.live_errors(np.array([1.0, 5.0]), np.array([2.0, 1.0]), {"metrics": {"holdout": {"mae": 2.0}}})
    assert errors.tolist() == [0.5, 2.0]


def test_task_difference_names_what_differs() -> None:
    feats = FeaturesConfig(fields=[FieldSpec(name="x"), FieldSpec(name="colour", type="categorical",
                                                                  allowed=["red", "grey"])], aggregates=[])
    meta = {"version": 4, "task": "multiclass", "objective": "multi:softprob", "labels": {"classes": CLASSES},
            "categories": {"categories": {"colour": ["grey", "red"]}}}
    assert task_difference(meta, ModelConfig(task="multiclass", classes=CLASSES), feats) == ""
    why = task_difference(meta, ModelConfig(task="multiclass", classes=["low", "high"]), feats)
    assert why.startswith("v4 task differs from the serving config's: classes: classes only here: ['mid']")
    assert "task multiclass != serving regression" in task_difference(meta, ModelConfig(task="regression"), feats)
    reg = {"version": 5, "task": "regression", "objective": "reg:absoluteerror",
           "categories": {"categories": {"colour": ["blue", "red"]}}}
    why = task_difference(reg, ModelConfig(task="regression"), feats)
    assert "objective reg:absoluteerror != serving reg:squarederror" in why
    assert "colour: 1 categories the serving config does not allow ['blue']" in why
    old = {"version": 1, "features": ["x"]}  # before tasks: binary, no categories
    assert "categorical fields [] != serving ['colour']" in task_difference(old, ModelConfig(), feats)
    assert task_difference(old, ModelConfig(), FeaturesConfig()) == ""


def test_regression_drift_alarm_on_errors_in_units_of_the_holdout_mae(tmp_path: Path) -> None:
    core = TrainerCore(cfg(refit_every_rows=100_000, drift_detector="page_hinkley", drift_followups=0), ["x", "colour"],
                       Registry(str(tmp_path / "reg")), model=ModelConfig(task="regression"), categorical=["colour"])
    assert core.policy.detector.threshold == 75.0
    rows, score = stream(1000, seed=10)
    core.add_rows(rows.assign(label=score * 10.0))
    assert core.request_refit() == 1
    same, score2 = stream(3000, seed=11, start=1000.0)
    for i in range(0, 3000, 250):  # the same concept: no alarm
        core.add_rows(same.iloc[i:i + 250].assign(label=score2[i:i + 250] * 10.0))
    assert [r["reason"] for r in core.history] == ["manual"]
    moved, score3 = stream(1000, seed=12, start=4000.0)
    for i in range(0, 1000, 100):  # colour's effect reversed: errors several times the holdout MAE
        flipped = moved.iloc[i:i + 100]
        core.add_rows(flipped.assign(label=(2 * flipped["x"].to_numpy() - score3[i:i + 100]) * 10.0))
    assert "drift" in [r["reason"] for r in core.history]


def test_a_live_version_of_another_task_is_not_measured_against(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "reg"))
    rows, score = stream(700, seed=13)
    binary = TrainerCore(cfg(baseline_candidate=False), ["x"], registry)
    assert binary.add_rows(rows.assign(label=(score > 0).astype(float))) == 1
    registry.set_alias("live", 1)
    reg = TrainerCore(cfg(), ["x"], registry, model=ModelConfig(task="regression"))
    assert reg.champion is None and reg.champion_version == 1
    assert reg.stats()["live_mismatch"] == "task binary != regression (reg:squarederror)"
    assert reg.add_rows(rows.assign(label=score)) == 2 and reg.history[-1]["live"] is None  # no comparison
    assert reg.champion_version == 2 and reg.stats()["live_mismatch"] == ""
    registry.set_alias("live", 2)
    multi = TrainerCore(cfg(), ["x"], registry, model=ModelConfig(task="multiclass", classes=["a", "b"]))
    assert multi.live_mismatch == "task regression (reg:squarederror) != multiclass" and multi.champion is None
    cats = TrainerCore(cfg(), ["x", "colour"], registry, model=ModelConfig(task="regression"), categorical=["colour"])
    assert cats.live_mismatch == "categorical fields [] != ['colour']"


def test_quantile_regression_version(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "reg"))
    model = ModelConfig(task="regression", objective="reg:quantileerror", quantile_alpha=0.9)
    core = TrainerCore(cfg(num_boost_round=60), ["x", "colour"], registry, model=model, categorical=["colour"])
    assert core.gate_metric == "pinball" and core._params()["quantile_alpha"] == 0.9
    rows, score = stream(1500, seed=14)
    noisy = score + np.random.default_rng(15).normal(scale=1.0, size=len(score))
    assert core.add_rows(rows.assign(label=noisy)) == 1
    meta = registry.meta(1)
    assert meta["objective"] == "reg:quantileerror" and meta["quantile_alpha"] == 0.9
    assert meta["metrics"]["gate_metric"] == "pinball" and meta["metrics"]["holdout"]["pinball"] > 0
    assert registry.task(1).spec.quantile_alpha == 0.9
    later, score2 = stream(2000, seed=16, start=2000.0)
    truth = score2 + np.random.default_rng(17).normal(scale=1.0, size=len(score2))
    covered = float((truth <= predict_meta(registry, 1, later)).mean())
    assert 0.8 < covered < 0.97  # about 90 % of outcomes below the fitted 0.9 quantile


def test_rmse_above_refits_a_regression_model_whose_live_rmse_rose(tmp_path: Path) -> None:
    """The loss trigger measures the live version's answers on each labelled row the trainer gets."""
    core = TrainerCore(cfg(refit_every_rows=100_000, rmse_above=8.0, accuracy_window=200), ["x", "colour"],
                       Registry(str(tmp_path / "reg")), model=ModelConfig(task="regression"), categorical=["colour"])
    rows, score = stream(1000, seed=20)
    core.add_rows(rows.assign(label=score * 10.0))
    assert core.request_refit() == 1
    same, score2 = stream(600, seed=21, start=1000.0)
    for i in range(0, 600, 200):  # the same concept: live RMSE ~3 (noise 0.3 x 10), below the threshold
        core.add_rows(same.iloc[i:i + 200].assign(label=score2[i:i + 200] * 10.0))
    assert [r["reason"] for r in core.history] == ["manual"]
    moved, score3 = stream(600, seed=22, start=1600.0)
    for i in range(0, 600, 200):  # labels shifted by 15: live RMSE ~15
        core.add_rows(moved.iloc[i:i + 200].assign(label=score3[i:i + 200] * 10.0 + 15.0))
    assert "performance" in [r["reason"] for r in core.history], core.history
