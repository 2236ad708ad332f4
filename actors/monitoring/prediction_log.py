"""Served predictions joined with the labels that arrive later: accuracy, logloss and AUC per version.

Router replicas log each prediction with its event id; labels come later from the stream (or,
when the label overtook the prediction, earlier). ``PredictionLog`` joins them in either order
in bounded memory, and reports each version's outcomes on real requests — the canary analysis
reads ``accuracy_since`` per step.

Example:
    >>> log = PredictionLog()
    >>> log.record([("e1", 3, "blue", 0.9, 10.0), ("e2", 3, "blue", 0.2, 11.0)])
    >>> log.labels(["e1", "e2"], [1.0, 1.0], now=12.0)
    2
    >>> log.accuracy_since(3, since=0.0)
    (2, 0.5)
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, Iterable

import numpy as np

from streamfit.metrics import labelled_scores


class PredictionLog:
    """Predictions waiting for labels (and labels waiting for predictions), and per-version outcomes."""

    def __init__(self, capacity: int = 200_000, window: int = 5000) -> None:
        self.capacity = capacity
        self.window = window
        self.waiting: OrderedDict[str, tuple[int, str, float, float]] = OrderedDict()
        self.early_labels: OrderedDict[str, float] = OrderedDict()
        self.outcomes: dict[int, deque[tuple[float, float, float]]] = {}  # version -> (time, prob, label)
        self.predictions_logged = 0
        self.joined = 0

    def record(self, rows: Iterable[tuple[str, int, str, float, float]]) -> None:
        """Log predictions: (event_id, version, slot, probability, time)."""
        for event_id, version, slot, prob, t in rows:
            self.predictions_logged += 1
            label = self.early_labels.pop(event_id, None)
            if label is not None:
                self._outcome(version, t, prob, label)
                continue
            self.waiting[event_id] = (int(version), slot, float(prob), float(t))
            if len(self.waiting) > self.capacity:
                self.waiting.popitem(last=False)

    def labels(self, event_ids: Iterable[str], labels: Iterable[float], now: float | None = None) -> int:
        """Labels that arrived; returns how many matched a logged prediction."""
        now = time.time() if now is None else now
        matched = 0
        for event_id, label in zip(event_ids, labels):
            hit = self.waiting.pop(event_id, None)
            if hit is None:
                self.early_labels[event_id] = float(label)
                if len(self.early_labels) > self.capacity:
                    self.early_labels.popitem(last=False)
                continue
            version, _, prob, _ = hit
            self._outcome(version, now, prob, float(label))
            matched += 1
        return matched

    def _outcome(self, version: int, t: float, prob: float, label: float) -> None:
        self.joined += 1
        self.outcomes.setdefault(version, deque(maxlen=self.window)).append((t, prob, label))

    def accuracy_since(self, version: int, since: float) -> tuple[int, float] | None:
        """(labelled predictions, accuracy) of ``version`` joined at or after ``since``; None if none."""
        rows = [(p, y) for t, p, y in self.outcomes.get(version, ()) if t >= since]
        if not rows:
            return None
        p, y = np.array(rows).T
        return len(rows), float(((p >= 0.5) == (y >= 0.5)).mean())

    def per_version(self) -> dict[int, dict[str, Any]]:
        """Accuracy, logloss, AUC and labelled count of each version over the sliding window."""
        return scores_by_version(self.outcomes)


def scores_by_version(outcomes: dict[int, deque[tuple[float, ...]]]) -> dict[int, dict[str, Any]]:
    """``labelled_scores`` of each version's outcome rows, whose last two columns are (probability, label)."""
    out = {}
    for version, rows in outcomes.items():
        if rows:
            p, y = np.array(list(rows))[:, -2:].T
            out[version] = labelled_scores(y, p)
    return out
