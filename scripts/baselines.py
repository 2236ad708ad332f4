"""The trivial baselines of ``streamfit bench quality``, and the clock every online learner is replayed on.

- ``no_change``: predict the entity's previous label as the feature store knew it at the event's
  time (its ``label_last`` feature: the newest of its labels that had arrived); without one, the
  newest label the baseline has learnt for the entity, else what ``majority`` (``mean`` for
  regression) predicts (the trainer's no_change model does the same for an entity without a label);
- ``majority`` (binary, multiclass): predict the most frequent label among the newest
  ``MAJORITY_WINDOW`` labelled rows learnt (a tie: the newest label if it is among the most
  frequent, else the lowest of them; no label yet: 0);
- ``mean`` (regression): the running mean of the newest ``MAJORITY_WINDOW`` labels (0 before any).

Labels are 0/1 (binary), class indices (multiclass) or values (regression); ``label_last`` is a
float of the same (``TASK_BASELINES`` and ``baseline`` give each task's pair).

Both learn on River's ARF clock in the bench: a row is predicted at its event time and learnt
when its chunk reaches the trainer (a prediction at the same instant as a learning step comes
first), so no row is ever predicted by a learner that has seen its label. Each row's input is
``(entity, label_last)`` (``label_last`` NaN when unknown).

Example (entities a, b; labels learnt right after each prediction, no label_last known):
    >>> nc, mj = NoChange(), Majority(window=3)
    >>> out = []
    >>> for ent, y in [("a", 1), ("a", 0), ("b", 1), ("a", 1), ("b", 0)]:
    ...     out.append((nc.predict_one((ent, NAN)), mj.predict_one((ent, NAN))))
    ...     nc.learn_one((ent, NAN), y); mj.learn_one((ent, NAN), y)
    >>> out
    [(0, 0), (1, 1), (0, 0), (0, 1), (1, 1)]
    >>> nc.predict_one(("a", 0.0))  # the feature store's newer knowledge wins
    0
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, Callable, Protocol

import numpy as np

from streamfit.task import Task

MAJORITY_WINDOW = 1000  # labelled rows: the trainer's accuracy window (a concept lasts several thousand rows)


NAN = float("nan")


class OnlineLearner(Protocol):
    """What the replay drives: predict a row, then learn its label when it arrives."""

    def predict_one(self, x: Any) -> Any: ...

    def learn_one(self, x: Any, y: Any) -> None: ...


class NoChange:
    """The entity's previous label: ``label_last`` when known, else the newest learnt, else ``fallback``'s."""

    def __init__(self, fallback: OnlineLearner | None = None, value: Callable[[float], Any] | None = None) -> None:
        self.last: dict[Any, Any] = {}
        self.majority = fallback if fallback is not None else Majority()
        self.value = value or binary_class

    def predict_one(self, x: tuple[Any, float]) -> Any:
        """The label to predict for a row ``(entity, label_last)``."""
        entity, known = x
        if known == known:  # not NaN
            return self.value(known)
        return self.last[entity] if entity in self.last else self.majority.predict_one()

    def learn_one(self, x: tuple[Any, float], y: Any) -> None:
        """A label arrived."""
        self.last[x[0]] = y
        self.majority.learn_one(x, y)


def binary_class(known: float) -> int:
    """A binary ``label_last`` as the class it says."""
    return int(known >= 0.5)


class Majority:
    """The most frequent of the newest ``window`` labels (a tie: the newest label, if it is among them).

    >>> m = Majority(window=4)
    >>> for y in (2, 0, 2, 1, 0):
    ...     m.learn_one(None, y)
    >>> m.predict_one()  # 0, 2, 1, 0: class 0
    0
    """

    def __init__(self, window: int = MAJORITY_WINDOW) -> None:
        self.recent: deque[int] = deque(maxlen=window)
        self.counts: Counter[int] = Counter()

    def predict_one(self, x: Any = None) -> int:
        """The majority label (the row does not matter)."""
        if not self.recent:
            return 0
        top = max(self.counts.values())
        tied = [k for k, c in self.counts.items() if c == top]
        if len(tied) == 1:
            return tied[0]
        return self.recent[-1] if self.counts[self.recent[-1]] == top else min(tied)

    def learn_one(self, x: Any, y: int) -> None:
        """A label arrived."""
        if len(self.recent) == self.recent.maxlen:
            self.counts[self.recent[0]] -= 1
        self.recent.append(int(y))
        self.counts[int(y)] += 1


class RunningMean:
    """The mean of the newest ``window`` labels (0 before any).

    >>> m = RunningMean(window=2)
    >>> for y in (1.0, 2.0, 4.0):
    ...     m.learn_one(None, y)
    >>> m.predict_one()
    3.0
    """

    def __init__(self, window: int = MAJORITY_WINDOW) -> None:
        self.recent: deque[float] = deque(maxlen=window)
        self.total = 0.0

    def predict_one(self, x: Any = None) -> float:
        """The running mean (the row does not matter)."""
        return self.total / len(self.recent) if self.recent else 0.0

    def learn_one(self, x: Any, y: float) -> None:
        """A label arrived."""
        if len(self.recent) == self.recent.maxlen:
            self.total -= self.recent[0]
        self.recent.append(float(y))
        self.total += float(y)


BASELINES = {"no_change": NoChange, "majority": Majority}  # binary
TASK_BASELINES = {Task.BINARY: ("no_change", "majority"), Task.MULTICLASS: ("no_change", "majority"),
                  Task.REGRESSION: ("no_change", "mean")}


def baseline(name: str, task: Task = Task.BINARY) -> OnlineLearner:
    """A fresh baseline ``name`` (one of ``TASK_BASELINES[task]``) for ``task``'s labels."""
    if name not in TASK_BASELINES[Task(task)]:
        raise ValueError(f"no baseline {name!r} for {Task(task).value} (known: {TASK_BASELINES[Task(task)]})")
    task = Task(task)
    simple = RunningMean() if task is Task.REGRESSION else Majority()
    if name != "no_change":
        return simple
    if task is Task.BINARY:
        return NoChange(simple)
    return NoChange(simple, float if task is Task.REGRESSION else int)


def timeline(event_time: np.ndarray, bounds: np.ndarray, arrival: np.ndarray) -> np.ndarray:
    """Steps of the online replay: ``i < n`` predicts row i at its event time, ``n + i`` learns it at
    its chunk's arrival; ties put predictions first, then row order.

    >>> timeline(np.array([0.0, 1.0, 2.0]), np.array([0, 2, 3]), np.array([1.0, 2.0])).tolist()
    [0, 1, 3, 4, 2, 5]
    """
    n = len(event_time)
    chunk_of = np.repeat(np.arange(len(arrival)), np.diff(bounds))
    learn_t = arrival[chunk_of] if n else np.zeros(0)
    times = np.r_[event_time, learn_t]
    kind = np.r_[np.zeros(n, int), np.ones(n, int)]
    seq = np.r_[np.arange(n), np.arange(n)]
    return np.lexsort((seq, kind, times))


def replay_predictions(order: np.ndarray, inputs: list[Any], y: np.ndarray, model: Any,
                       label: Callable[[Any], Any] = int) -> np.ndarray:
    """Drive ``model`` (``predict_one(x)``, ``learn_one(x, label(y))``) along ``order``; each row's prediction
    as a float (a class, or a value; NaN when the model had none)."""
    n = len(y)
    pred = np.full(n, np.nan)
    for o in order.tolist():
        if o < n:
            p = model.predict_one(inputs[o])
            pred[o] = np.nan if p is None else p
        else:
            model.learn_one(inputs[o - n], label(y[o - n]))
    return pred


def replay_online(order: np.ndarray, inputs: list[Any], y: np.ndarray, model: Any) -> np.ndarray:
    """Drive ``model`` (``predict_one(x)``, ``learn_one(x, y)``) along ``order``; whether each row was predicted right."""
    return replay_predictions(order, inputs, y, model) == y
