"""`streamfit bench quality` on the other tasks (no Ray): regression, multiclass, categorical fields.

- a CSV target's task is inferred from the column (or ``--task`` says it); text columns become
  categorical fields, an id-like text column is dropped; labels go out as the task wants them;
- the trivial baselines per task: majority over k classes, the running mean, no_change on values;
- the task's metrics and the verdict (beats the baselines, reaches ARF, CPU share);
- each built-in task stream, replayed small: the JSON has the task's metrics for every method and
  baseline; the regression stream's drift hurts a never-updated model and the policy recovers;
- the CLI on a regression CSV (``--task``, ``--methods``) and the report of task streams.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from streamfit.errors import ConfigError
from streamfit.schema import EVENT, KIND, LABEL, LABEL_KIND
from streamfit.scripts import quality
from streamfit.scripts.baselines import NAN, Majority, NoChange, RunningMean, baseline, replay_predictions, timeline
from streamfit.scripts.quality_csv import MAX_CLASSES, CsvStream, infer_task
from streamfit.scripts.quality_scores import task_scores, task_verdict
from streamfit.scripts.task_streams import TASK_STREAMS, FriedmanStream
from streamfit.task import Task

SMALL = dict(rows=2500, warmup=500, methods=["static", "default", "river_arf"], log=lambda _m: None)


# -- CSV: the task from the target column ------------------------------------------------------

@pytest.mark.parametrize("values, task", [
    ([0, 1, 1, 0], Task.BINARY), ([True, False, True], Task.BINARY), (["up", "down", None], Task.BINARY),
    (["cat", "dog", "emu", "cat"], Task.MULTICLASS), ([1, 2, 3, 2], Task.MULTICLASS),
    ([1.0, 2.0, 5.0, np.nan], Task.MULTICLASS),  # whole numbers read as floats (a gap makes them floats)
    ([0.5, 1.25, 3.0], Task.REGRESSION), (list(range(MAX_CLASSES + 1)), Task.REGRESSION),
])
def test_the_task_is_inferred_from_the_target_column(values, task) -> None:
    assert infer_task(pd.Series(values), "y") is task


def test_many_distinct_texts_need_an_explicit_task() -> None:
    with pytest.raises(ConfigError, match=f"at most {MAX_CLASSES}"):
        infer_task(pd.Series([f"k{i}" for i in range(MAX_CLASSES + 1)]), "y")


def write_task_csv(path, n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """A number, a city (a text field whose effect flips half-way), an id-like text column, four targets."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    city = rng.choice(["paris", "oslo", "rome"], size=n)
    effect = pd.Series(city).map({"paris": 2.0, "oslo": 0.0, "rome": -2.0}).to_numpy()
    sign = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    value = a + sign * effect + 0.3 * rng.normal(size=n)
    df = pd.DataFrame({"a": a, "city": city, "ref": [f"r{i}" for i in range(n)], "amount": value,
                       "level": np.digitize(value, [-1.0, 1.0]).astype(int),
                       "size": np.array(["small", "mid", "large"])[np.digitize(value, [-1.0, 1.0])],
                       "flag": (value > 0).astype(int)})
    df.to_csv(path, index=False)
    return df


def test_text_columns_become_categorical_fields_and_ids_are_dropped(tmp_path, monkeypatch) -> None:
    from streamfit.scripts import quality_csv

    path = tmp_path / "t.csv"
    write_task_csv(path)
    monkeypatch.setattr(quality_csv, "MAX_CATEGORIES", 100)
    s = CsvStream(str(path), "amount")
    assert s.fields == ["a", "level", "flag"] and s.categorical == ["city", "size"] and s.dropped == ["ref"]
    assert s.task is Task.REGRESSION and s.model().task == "regression"
    cfg = s.features()
    assert cfg.categorical_fields() == ["city", "size"]
    f = s.frame()
    events, labels = f[f[KIND] == EVENT], f[f[KIND] == LABEL_KIND]
    assert set(events["city"]) == {"paris", "oslo", "rome"} and labels["city"].isna().all()
    assert labels[LABEL].dtype == float and events[LABEL].isna().all()
    assert "categorical city, size" in s.describe() and "(regression)" in s.describe()


def test_multiclass_targets_keep_their_values_and_name_the_classes(tmp_path) -> None:
    path = tmp_path / "t.csv"
    df = write_task_csv(path)
    named = CsvStream(str(path), "size")
    assert named.task is Task.MULTICLASS and named.model().classes == ["large", "mid", "small"]
    labels = named.frame()
    assert labels.loc[labels[KIND] == LABEL_KIND, LABEL].tolist() == df["size"].tolist()
    numbered = CsvStream(str(path), "level")
    assert numbered.task is Task.MULTICLASS and numbered.model().classes == ["0", "1", "2"]
    # --task says otherwise: the same column as a quantity; a binary target keeps the report of before tasks.
    assert CsvStream(str(path), "level", task="regression").model().task == "regression"
    assert CsvStream(str(path), "flag").model() is None
    with pytest.raises(ConfigError, match="a binary label is needed"):
        CsvStream(str(path), "level", task="binary")
    with pytest.raises(ConfigError, match="needs numbers"):
        CsvStream(str(path), "size", task="regression")
    with pytest.raises(ConfigError, match="--task: one of"):
        CsvStream(str(path), "size", task="ranking")


# -- baselines per task -----------------------------------------------------------------------

def test_majority_over_several_classes_and_the_running_mean() -> None:
    m = Majority(window=5)
    assert m.predict_one() == 0
    for y in (2, 1, 2, 1):
        m.learn_one(None, y)
    assert m.predict_one() == 1  # 2 and 1 tie: the newest
    m.learn_one(None, 0)
    m.learn_one(None, 0)  # window: 1, 2, 1, 0, 0 -> 1 and 0 tie, the newest (0) wins
    assert m.predict_one() == 0
    m.learn_one(None, 2)  # 2, 1, 0, 0, 2 -> 0 and 2 tie, the newest (2)
    assert m.predict_one() == 2
    m.learn_one(None, 1)  # 1, 0, 0, 2, 1 -> 0 and 1 tie, the newest (1)
    assert m.predict_one() == 1
    r = RunningMean(window=3)
    assert r.predict_one() == 0.0
    for y in (3.0, 6.0, 9.0, 12.0):
        r.learn_one(None, y)
    assert r.predict_one() == 9.0


def test_no_change_per_task_uses_label_last_as_the_task_reads_it() -> None:
    reg, multi = baseline("no_change", Task.REGRESSION), baseline("no_change", Task.MULTICLASS)
    assert reg.predict_one(("a", 3.5)) == 3.5 and multi.predict_one(("a", 2.0)) == 2
    assert reg.predict_one(("a", NAN)) == 0.0  # nothing known: the running mean of nothing
    reg.learn_one(("b", NAN), 4.0)
    reg.learn_one(("c", NAN), 8.0)
    assert reg.predict_one(("b", NAN)) == 4.0 and reg.predict_one(("z", NAN)) == 6.0
    assert isinstance(baseline("mean", Task.REGRESSION), RunningMean)
    assert isinstance(baseline("no_change"), NoChange) and isinstance(baseline("majority"), Majority)
    with pytest.raises(ValueError, match="no baseline 'majority' for regression"):
        baseline("majority", Task.REGRESSION)


def test_online_predictions_are_made_before_each_label_arrives() -> None:
    order = timeline(np.arange(4.0), np.array([0, 2, 4]), np.array([1.5, 3.5]))
    pred = replay_predictions(order, [("a", NAN)] * 4, np.array([1.0, 2.0, 3.0, 4.0]), RunningMean(), float)
    assert pred.tolist() == [0.0, 0.0, 1.5, 1.5]


# -- metrics and the verdict ------------------------------------------------------------------

def test_scores_count_rows_without_a_model_as_wrong() -> None:
    y = np.array([1, 0, 1])
    assert task_scores(Task.BINARY, y, np.array([0.9, np.nan, 0.2]), hard=False, scored=np.ones(3, bool)) == \
        {"accuracy": 0.33333, "logloss": 0.80265, "auc": 0.5}  # ln .9, ln .5 (no model: 1/2), ln .2
    assert task_scores(Task.MULTICLASS, np.array([0, 2]), np.array([0.0, 2.0]), hard=True,
                       scored=np.array([False, True])) == {"accuracy": 1.0}


def result(task: str, metric: str, default: float, arf: float, base: dict[str, float], cpu: float = 10.0) -> dict:
    return {"task": task, "methods": {"default": {metric: default, "seconds": cpu}, "river_arf": {metric: arf, "seconds": 40.0}},
            "baselines": {b: {metric: v, "seconds": 0.1} for b, v in base.items()}}


def test_the_verdict_judges_by_the_tasks_metric_and_direction() -> None:
    v = task_verdict(result("regression", "rmse", 2.0, 2.5, {"no_change": 4.0, "mean": 3.0}))
    assert v == {"metric": "rmse", "default": 2.0, "best_baseline": "mean", "baseline": 3.0, "river_arf": 2.5,
                 "beats_baselines": True, "reaches_arf": True, "cpu_share_of_arf": 0.25, "accepted": True}
    worse = task_verdict(result("regression", "rmse", 2.0, 1.5, {"no_change": 4.0, "mean": 3.0}))
    assert not worse["reaches_arf"] and not worse["accepted"]
    multi = result("multiclass", "accuracy", 0.9, 0.8, {"no_change": 0.3, "majority": 0.4}, cpu=20.0)
    slow = task_verdict(multi)
    assert slow["beats_baselines"] and slow["reaches_arf"] and slow["cpu_share_of_arf"] == 0.5 and not slow["accepted"]
    assert quality.verdict(multi) == slow  # the bench's verdict of a task stream is this one


# -- the task streams through the bench -------------------------------------------------------

@pytest.fixture(scope="module")
def small_runs() -> dict[str, dict]:
    return {name: quality.bench_quality(name, **SMALL) for name in TASK_STREAMS}


@pytest.mark.parametrize("name, task, metrics", [
    ("friedman", "regression", {"rmse", "mae"}), ("rbf", "multiclass", {"accuracy", "logloss"}),
    ("agrawal", "binary", {"accuracy", "logloss", "auc"})])
def test_each_task_stream_reports_its_tasks_metrics(small_runs, name, task, metrics) -> None:
    res = small_runs[name]
    assert res["task"] == task and res["metric"] == ("rmse" if task == "regression" else "accuracy")
    assert res["rows"] == 2500 and res["rejected"] == 0 and 0 < res["scored_rows"] < 2500
    assert res["categorical"] == (["elevel", "car", "zipcode"] if name == "agrawal" else [])
    assert list(res["methods"]) == ["static", "default", "river_arf"]
    for m in ("static", "default"):
        assert set(res["methods"][m]) == metrics | {"refits", "seconds"}, m
    primary = res["metric"]
    assert set(res["methods"]["river_arf"]) == {primary, "refits", "seconds"} | ({"mae"} if task == "regression" else set())
    assert set(res["baselines"]) == ({"no_change", "mean"} if task == "regression" else {"no_change", "majority"})
    for v in [*res["methods"].values(), *res["baselines"].values()]:
        assert np.isfinite(v[primary]) and v["seconds"] >= 0.0
    assert res["methods"]["river_arf"]["seconds"] > 0.0 and res["verdict"]["metric"] == primary
    json.dumps(res)  # what --json prints


def test_the_regression_streams_drift_hurts_a_model_that_is_never_refit() -> None:
    stream = FriedmanStream(rows=4000, seed=3, changes=((0.5, 0.5),))
    replay = quality.feature_pass(stream.batches(200), stream.features(), stream.model())
    assert "label_mean_5m" in replay.feature_names and replay.task is Task.REGRESSION
    configs = quality.method_configs(quality.TrainerConfig())
    static, live = quality.replay_trainer(replay, configs["static"], warmup=1000)
    default, _ = quality.replay_trainer(replay, configs["default"], warmup=1000)
    t, y = replay.rows["event_time"].to_numpy(), replay.rows["label"].to_numpy()
    change = quality.START_TIME + 2000 / stream.events_per_second
    before, after = (t > live) & (t < change), t > change + 100
    err = {name: np.abs(r.pred - y) for name, r in (("static", static), ("default", default))}
    assert err["static"][after].mean() > 1.5 * err["static"][before].mean()
    assert err["default"][after].mean() < 0.8 * err["static"][after].mean()


def test_the_cli_takes_a_csv_target_as_the_task_says(tmp_path) -> None:
    from streamfit.scripts.cli import app

    path = tmp_path / "t.csv"
    write_task_csv(path, n=1500)
    res = CliRunner().invoke(app, ["bench", "quality", "--dataset", str(path), "--target", "level", "--task",
                                   "regression", "--methods", "static,default", "--warmup", "300", "--json"])
    assert res.exit_code == 0, res.stdout
    out = json.loads(res.stdout)
    assert out["task"] == "regression" and out["categorical"] == ["city", "size"]
    assert set(out["methods"]) == {"static", "default"} and set(out["baselines"]) == {"no_change", "mean"}
    bad = CliRunner().invoke(app, ["bench", "quality", "--dataset", "friedman", "--task", "binary"])
    assert bad.exit_code == 2 and "--task: for a CSV dataset only" in bad.stdout


def test_the_report_of_task_streams_and_their_summary(small_runs) -> None:
    from rich.console import Console

    console = Console(record=True, width=100)
    quality.print_report({"streams": small_runs}, console)
    text = console.export_text()
    assert text.count("prequential regression") == 1 and text.count("prequential multiclass") == 1
    assert "per task" in text and text.count("x its CPU time") == 3
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert any(line.startswith("friedman regression rmse ") for line in lines)


def test_class_names_reach_the_trainer_as_class_indices() -> None:
    from streamfit.scripts.task_streams import RbfStream

    s = RbfStream(rows=1500, n_classes=3, class_names=True, changes=())
    replay = quality.feature_pass(s.batches(200), s.features(), s.model())
    assert replay.stats["rejected"] == 0 and sorted(replay.rows["label"].unique()) == [0.0, 1.0, 2.0]
    names = s.frame().query("kind == 'label'")["label"].to_numpy()
    by_id = dict(zip(s.frame().query("kind == 'label'")["event_id"], names))
    assert all(by_id[e] == f"c{int(y)}" for e, y in zip(replay.rows["event_id"], replay.rows["label"]))
