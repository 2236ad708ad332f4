"""The built-in task streams (scripts/task_streams.py): the same frame as DriftingStream's, labels that
follow the concept in force, categorical fields as strings. No Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamfit.dictionaries import CategoryDictionary, LabelDictionary, check_categories
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL, LABEL_KIND, validate
from streamfit.scripts.quality_streams import BUILT_IN, DriftingStream, in_batches
from streamfit.scripts.task_streams import (AGRAWAL_FUNCTIONS, TASK_STREAMS, AgrawalStream, FriedmanStream,
                                            RbfStream)
from streamfit.task import Task, check_labels

ONE_CHANGE = ((0.5, 0.5),)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {name: cls(rows=1200, seed=5, label_delay=30, changes=ONE_CHANGE).frame()
            for name, cls in TASK_STREAMS.items()}


@pytest.mark.parametrize("name", sorted(TASK_STREAMS))
def test_frame_is_laid_out_like_the_drifting_streams(name: str, frames: dict[str, pd.DataFrame]) -> None:
    f = frames[name]
    stream = TASK_STREAMS[name](rows=1200, seed=5, label_delay=30, changes=ONE_CHANGE)
    reference = DriftingStream(rows=1200, seed=5, label_delay=30).frame()
    assert list(f.columns) == [KIND, EVENT_ID, ENTITY, EVENT_TIME, *stream.fields, LABEL]
    # The same events at the same times with the same ids; only the entities are drawn per stream.
    for col in (KIND, EVENT_ID, EVENT_TIME):
        assert f[col].tolist() == reference[col].tolist(), col
    assert f[ENTITY].str.match(r"^u\d+$").all() and f[ENTITY].nunique() <= 200
    events, labels = f[f[KIND] == EVENT], f[f[KIND] == LABEL_KIND]
    assert len(events) == len(labels) == 1200 and f[EVENT_TIME].is_monotonic_increasing
    assert events[LABEL].isna().all() and labels[list(stream.fields)].isna().all().all()
    assert events[list(stream.fields)].notna().all().all()
    # Each label names its event, with the event's entity, label_delay events (3 s) later.
    joined = labels.merge(events, on=EVENT_ID, suffixes=("", "_event"))
    assert len(joined) == 1200 and (joined[ENTITY] == joined[f"{ENTITY}_event"]).all()
    assert np.allclose(joined[EVENT_TIME] - joined[f"{EVENT_TIME}_event"], 3.0)
    # Batches as the bench cuts them.
    assert sum(len(b) for b in in_batches(f, 500)) == 2400


@pytest.mark.parametrize("name", sorted(TASK_STREAMS))
def test_frame_is_deterministic_per_seed(name: str, frames: dict[str, pd.DataFrame]) -> None:
    again = TASK_STREAMS[name](rows=1200, seed=5, label_delay=30, changes=ONE_CHANGE).frame()
    pd.testing.assert_frame_equal(again, frames[name])
    other = TASK_STREAMS[name](rows=1200, seed=6, label_delay=30, changes=ONE_CHANGE).frame()
    assert not other[LABEL].equals(frames[name][LABEL])


@pytest.mark.parametrize("name", sorted(TASK_STREAMS))
def test_events_pass_validation_with_the_streams_features(name: str, frames: dict[str, pd.DataFrame]) -> None:
    stream = TASK_STREAMS[name]()
    cfg = stream.features()
    assert [s.name for s in cfg.fields] == list(stream.fields)
    assert cfg.categorical_fields() == list(stream.categorical)
    assert cfg.aggregates == [] and not cfg.count and not cfg.age
    assert stream.model().task == stream.task.value
    f = frames[name]
    _clean, reason = validate(f, cfg)
    assert (reason[(f[KIND] == EVENT).to_numpy()] == "").all()
    _clean, reason = validate(f, cfg, model=stream.model())  # the labels too fit the stream's task
    assert (reason == "").all()
    assert stream.task.value in stream.describe() and "1 concept changes" in TASK_STREAMS[name](
        changes=ONE_CHANGE).describe()


def test_the_task_streams_are_named_apart_from_the_binary_ones() -> None:
    assert not set(TASK_STREAMS) & set(BUILT_IN)


def test_regression_labels_follow_the_concept_in_force(frames: dict[str, pd.DataFrame]) -> None:
    s = FriedmanStream(rows=4000, seed=2, changes=((0.25, 0.25), (0.5, 0.75)))
    ent, cols, y = s.draw()
    _, concept = s.concepts()
    assert np.bincount(concept).tolist()[0] == 1000 and set(concept[1000:2000].tolist()) == {1}
    assert set(concept[2000:3000].tolist()) == {1, 2} and set(concept[3000:].tolist()) == {2}  # a blend, then 2
    x = np.column_stack([cols[f] for f in s.fields])
    assert ((x >= 0) & (x <= 1)).all()
    for k in range(3):
        rows = concept == k
        own = np.std(y[rows] - s.target(k, x[rows], ent[rows]))
        assert 0.8 < own < 1.2  # only the noise is left
        for other in set(range(3)) - {k}:
            assert np.std(y[rows] - s.target(other, x[rows], ent[rows])) > 3 * own
    labels = frames["friedman"][LABEL].dropna()
    assert (check_labels(Task.REGRESSION, labels)[1] == "").all()


def test_multiclass_labels_and_their_dictionary(frames: dict[str, pd.DataFrame]) -> None:
    labels = frames["rbf"][LABEL].dropna()
    d = LabelDictionary.fit(labels)
    assert d.classes == ["0", "1", "2", "3", "4"]  # class k is index k
    codes, why = check_labels(Task.MULTICLASS, labels, d)
    assert (why == "").all() and np.array_equal(codes, labels.to_numpy())
    named = RbfStream(rows=300, seed=5, n_classes=3, class_names=True, changes=()).frame()[LABEL].dropna()
    assert LabelDictionary.fit(named).classes == ["c0", "c1", "c2"]


def test_multiclass_concepts_have_their_own_centroids() -> None:
    xgb = pytest.importorskip("xgboost")
    s = RbfStream(rows=6000, seed=3, changes=ONE_CHANGE)
    _ent, cols, y = s.draw()
    x = np.column_stack([cols[f] for f in s.fields])
    model = xgb.train({"objective": "multi:softprob", "num_class": 5, "max_depth": 6, "nthread": 1},
                      xgb.DMatrix(x[:2000], y[:2000]), num_boost_round=40)

    def accuracy(rows: slice) -> float:
        return float((model.predict(xgb.DMatrix(x[rows])).argmax(axis=1) == y[rows]).mean())

    # Measured 0.88 on the same concept and 0.21 (chance) on the next one.
    assert accuracy(slice(2000, 3000)) > 0.7 and accuracy(slice(3000, 6000)) < 0.4


def test_categorical_fields_are_strings_and_labels_follow_the_function(frames: dict[str, pd.DataFrame]) -> None:
    f = frames["agrawal"]
    events = f[f[KIND] == EVENT]
    cats = CategoryDictionary.fit(events, list(AgrawalStream.categorical))
    assert cats.categories["elevel"] == [f"edu{i}" for i in range(5)]
    assert set(cats.categories["zipcode"]) <= {f"zip{i}" for i in range(9)} and len(cats.categories["car"]) > 15
    for field in AgrawalStream.categorical:
        assert (check_categories(events[field], field) == "").all()
    assert (check_labels(Task.BINARY, f[LABEL].dropna())[1] == "").all()
    # Concept 0 labels with function 2 (age and education), concept 1 with function 7 (disposable income).
    assert AGRAWAL_FUNCTIONS[:2] == (2, 7)
    s = AgrawalStream(rows=4000, seed=5, changes=ONE_CHANGE)
    _ent, cols, y = s.draw()
    _, concept = s.concepts()
    age, edu = cols["age"], np.char.lstrip(cols["elevel"].astype(str), "edu").astype(int)
    f2 = np.where(age < 40, np.isin(edu, [0, 1]), np.where(age < 60, np.isin(edu, [1, 2, 3]), np.isin(edu, [2, 3, 4])))
    f7 = 2 * (cols["salary"] + cols["commission"]) / 3 - 5000 * edu - 20000 <= 1
    first, second = concept == 0, concept == 1
    # Measured 0.97 / 0.46 and 0.46 / 1.00: the perturbation blurs the rule near its edges.
    assert (f2[first] == y[first]).mean() > 0.9 and (f2[second] == y[second]).mean() < 0.7
    assert (f7[second] == y[second]).mean() > 0.9 and (f7[first] == y[first]).mean() < 0.7


def test_too_many_changes_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 9"):
        AgrawalStream(changes=tuple((i / 20, i / 20) for i in range(1, 11)))
    assert len(FriedmanStream(rows=100, changes=tuple((i / 20, i / 20) for i in range(1, 11))).changes) == 10
