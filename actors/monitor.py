"""Live performance per model version: served predictions joined with labels that arrive later.

Router replicas log each prediction that carries an ``event_id`` (version, slot, probability,
time); the coordinator sends the labels it joins. ``PredictionLog`` (plain) matches them in
either order within a bounded memory, and keeps per-version outcomes for accuracy, logloss
and AUC over a sliding window; ``MonitorActor`` is its named Ray shell, asked by the
rollout controller for each canary step and by the status page.

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
import ray

MONITOR_NAME = "streamfit-monitor"


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
        """Accuracy, logloss and labelled count of each version over the sliding window."""
        out = {}
        for version, rows in self.outcomes.items():
            if not rows:
                continue
            _, p, y = np.array(list(rows)).T
            pc = np.clip(p, 1e-7, 1 - 1e-7)
            out[version] = {"labelled": len(rows), "accuracy": float(((p >= 0.5) == (y >= 0.5)).mean()),
                            "logloss": float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean())}
        return out


@ray.remote(num_cpus=0, max_restarts=-1)
class MonitorActor:
    """Named actor around PredictionLog."""

    def __init__(self) -> None:
        self.log = PredictionLog()

    def record(self, rows: list[tuple[str, int, str, float, float]]) -> None:
        self.log.record(rows)

    def labels(self, event_ids: list[str], labels: list[float]) -> int:
        return self.log.labels(event_ids, labels)

    def accuracy_since(self, version: int, since: float) -> tuple[int, float] | None:
        return self.log.accuracy_since(version, since)

    def per_version(self) -> dict[int, dict[str, Any]]:
        return self.log.per_version()

    def stats(self) -> dict[str, Any]:
        return {"predictions_logged": self.log.predictions_logged, "joined": self.log.joined,
                "waiting": len(self.log.waiting), "per_version": self.log.per_version()}
