"""What ``POST /predict`` answers, per task: the response bodies and the plain ``TaskAnswers`` that builds them.

Binary (unchanged): ``prediction`` 0/1 and ``probability`` (batch: ``predictions``, ``probabilities``).
Regression: ``prediction`` is the value (batch: ``predictions``), no probability. Multiclass:
``prediction`` is the class name, ``class_index`` its index in ``model.classes`` and
``probabilities`` every class's, by name (batch: ``predictions``, ``class_indices``,
``probabilities``, one per row). Every answer names ``model_version`` and ``slot``; a raw event's
also ``version``, ``features_as_of`` and the rest of ``bodies.EventContext``. The OpenAPI
schema lists only the deployed task's answers (``TaskAnswers.models``).

``TaskAnswers`` also says what the rest of serving keeps of a prediction: the prediction log's
value (contract 4: a float, or k class probabilities), the value the slot's request figures bin
(``stats_values``: binary the probability, multiclass the predicted class as a bin, regression the
value's bin on the live version's scale)
and whether two slots' answers agree (shadow comparison).

Example:
    >>> import numpy as np
    >>> ans = TaskAnswers("multiclass", ["low", "high"])
    >>> ans.row(np.array([[0.2, 0.8]]), 3, "blue").model_dump()
    {'prediction': 'high', 'class_index': 1, 'probabilities': {'low': 0.2, 'high': 0.8}, 'model_version': 3, 'slot': 'blue'}
    >>> TaskAnswers("regression").entry(np.float64(41.5)), TaskAnswers("binary").entry(np.float64(0.75))
    ({'prediction': 41.5}, {'prediction': 1, 'probability': 0.75})
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, Field, create_model

from streamfit.serve.bodies import (BatchPrediction, EventBatchPrediction, EventContext, EventPrediction,
                                    IngestResponse, Prediction, RejectedEvent)
from streamfit.task import Task


class ValuePrediction(BaseModel):
    """One regression prediction: the predicted value, with the version and slot that made it."""

    prediction: float = Field(description="the predicted value")
    model_version: int
    slot: str


class ValueBatchPrediction(BaseModel):
    """Regression predictions for a batch of rows, all made by one version."""

    predictions: list[float]
    model_version: int
    slot: str


class ClassPrediction(BaseModel):
    """One multiclass prediction: the most probable class, its index, and every class's probability."""

    prediction: str = Field(description="the most probable class (its name in model.classes)")
    class_index: int = Field(description="its position in model.classes")
    probabilities: dict[str, float] = Field(description="each class's probability, by class name")
    model_version: int
    slot: str


class ClassBatchPrediction(BaseModel):
    """Multiclass predictions for a batch of rows (one entry per row in each list), all made by one version."""

    predictions: list[str]
    class_indices: list[int]
    probabilities: list[dict[str, float]]
    model_version: int
    slot: str


class ValueEventPrediction(EventContext):
    """One raw event's regression prediction."""

    prediction: float = Field(description="the predicted value")


class ClassEventPrediction(EventContext):
    """One raw event's multiclass prediction."""

    prediction: str = Field(description="the most probable class (its name in model.classes)")
    class_index: int
    probabilities: dict[str, float]


def _event_batch(name: str, item: type[BaseModel]) -> type[BaseModel]:
    return create_model(name, __doc__="Raw events' predictions, one per scored event, and the rejected ones.",
                        predictions=(list[item], ...), rejected=(list[RejectedEvent], ...),  # type: ignore[valid-type]
                        ingested=(IngestResponse | None, None))


MODELS: dict[Task, tuple[type[BaseModel], ...]] = {
    Task.BINARY: (Prediction, BatchPrediction, EventPrediction, EventBatchPrediction),
    Task.REGRESSION: (ValuePrediction, ValueBatchPrediction, ValueEventPrediction,
                      _event_batch("ValueEventBatchPrediction", ValueEventPrediction)),
    Task.MULTICLASS: (ClassPrediction, ClassBatchPrediction, ClassEventPrediction,
                      _event_batch("ClassEventBatchPrediction", ClassEventPrediction)),
}


class TaskAnswers:
    """The answers of one task (``classes``: multiclass class names, in index order)."""

    def __init__(self, task: Task | str = Task.BINARY, classes: Sequence[str] | None = None) -> None:
        self.task = Task(task)
        self.classes = [str(c) for c in classes or []]
        if self.task is Task.MULTICLASS and len(self.classes) < 2:
            raise ValueError("multiclass answers need the class names")
        self.models = MODELS[self.task]
        self._inner: tuple[Any, np.ndarray] = (None, np.empty(0))  # a regression scale and its distinct inner edges

    def response_model(self) -> Any:
        """The union OpenAPI documents for ``/predict``: this task's four answers."""
        one, batch, event, events = self.models
        return one | batch | event | events

    def entry(self, p: np.ndarray) -> dict[str, Any]:
        """The prediction fields of one row's answer (``p``: its probability, value or class probabilities)."""
        if self.task is Task.BINARY:
            return {"prediction": int(p >= 0.5), "probability": float(p)}
        if self.task is Task.REGRESSION:
            return {"prediction": float(p)}
        probs = np.asarray(p, dtype=float).tolist()
        i = int(np.argmax(p))
        return {"prediction": self.classes[i], "class_index": i, "probabilities": dict(zip(self.classes, probs))}

    def row(self, preds: np.ndarray, version: int, slot: str) -> BaseModel:
        """The answer to one row (``features``)."""
        return self.models[0](**self.entry(preds[0]), model_version=version, slot=slot)

    def batch(self, preds: np.ndarray, version: int, slot: str) -> BaseModel:
        """The answer to a batch (``rows``)."""
        if self.task is Task.BINARY:
            return BatchPrediction(predictions=[int(p >= 0.5) for p in preds], probabilities=[float(p) for p in preds],
                                   model_version=version, slot=slot)
        if self.task is Task.REGRESSION:
            return ValueBatchPrediction(predictions=preds.tolist(), model_version=version, slot=slot)
        idx = np.argmax(preds, axis=1).tolist()  # once per batch, not per row
        return ClassBatchPrediction(predictions=[self.classes[i] for i in idx], class_indices=idx,
                                    probabilities=[dict(zip(self.classes, p)) for p in np.asarray(preds, float).tolist()],
                                    model_version=version, slot=slot)

    @staticmethod
    def logged(preds: np.ndarray) -> list[Any]:
        """Per row, what the prediction log keeps (contract 4): a float, or the k class probabilities."""
        return np.asarray(preds, dtype=float).tolist()

    def stats_values(self, preds: np.ndarray | None, scale: Sequence[float] | None = None) -> np.ndarray | None:
        """What a slot's request figures bin in [0, 1) (their histogram feeds the canary's prediction shift):
        binary the probability; multiclass the predicted class i of k as (i + 0.5) / k (one bin per class, so
        the shift test compares class mixes); regression the value's bin among ``scale``'s quantile edges (the
        same edges for both slots: ``RouterCore.value_scale``), as (bin + 0.5) / bins; none without a scale.

        >>> TaskAnswers("regression").stats_values(np.array([5.0, 15.0, 99.0]), [0.0, 10.0, 20.0]).tolist()
        [0.25, 0.75, 0.75]
        """
        if preds is None or self.task is Task.BINARY:
            return preds
        if self.task is Task.REGRESSION:
            if scale is None or len(scale) <= 2:
                return None
            if self._inner[0] is not scale:  # the scale changes when a slot does, not per request: dedup it once
                self._inner = (scale, np.unique(np.asarray(scale[1:-1], dtype=float)))
            inner = self._inner[1]
            return (np.searchsorted(inner, np.asarray(preds, dtype=float), side="right") + 0.5) / (len(inner) + 1)
        k = preds.shape[1]
        return (np.argmax(preds, axis=1) + 0.5) / k

    def agreed(self, served: np.ndarray, shadow: np.ndarray) -> tuple[int, float]:
        """(rows on which two slots agree, summed difference): the same class (binary at 0.5, multiclass by
        argmax) or, for regression, values within 1 %; the difference is |a - b| (multiclass: half the L1
        distance of the probabilities)."""
        if self.task is Task.BINARY:
            return int(((shadow >= 0.5) == (served >= 0.5)).sum()), float(np.abs(shadow - served).sum())
        if self.task is Task.REGRESSION:
            return int(np.isclose(shadow, served, rtol=0.01).sum()), float(np.abs(shadow - served).sum())
        same = int((np.argmax(shadow, axis=1) == np.argmax(served, axis=1)).sum())
        return same, float(0.5 * np.abs(shadow - served).sum())
