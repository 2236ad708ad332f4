"""The trivial baselines of ``streamfit bench quality``, and the clock every online learner is replayed on.

- ``no_change``: predict the entity's previous label as the feature store knew it at the event's
  time (its ``label_last`` feature: the newest of its labels that had arrived); without one, the
  newest label the baseline has learnt for the entity, else what ``majority`` predicts (the
  trainer's no_change model does the same for an entity without a label);
- ``majority``: predict the most frequent label among the newest ``MAJORITY_WINDOW`` labelled
  rows learnt (a tie, or no label yet, predicts the newest label, else 0).

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

from collections import deque
from typing import Any, Protocol

import numpy as np

MAJORITY_WINDOW = 1000  # labelled rows: the trainer's accuracy window (a concept lasts several thousand rows)


NAN = float("nan")


class OnlineLearner(Protocol):
    """What the replay drives: predict a row, then learn its label when it arrives."""

    def predict_one(self, x: Any) -> int: ...

    def learn_one(self, x: Any, y: int) -> None: ...


class NoChange:
    """The entity's previous label: ``label_last`` when known, else the newest learnt, else the majority."""

    def __init__(self) -> None:
        self.last: dict[Any, int] = {}
        self.majority = Majority()

    def predict_one(self, x: tuple[Any, float]) -> int:
        """The label to predict for a row ``(entity, label_last)``."""
        entity, known = x
        if known == known:  # not NaN
            return int(known >= 0.5)
        return self.last[entity] if entity in self.last else self.majority.predict_one()

    def learn_one(self, x: tuple[Any, float], y: int) -> None:
        """A label arrived."""
        self.last[x[0]] = int(y)
        self.majority.learn_one(x, y)


class Majority:
    """The most frequent of the newest ``window`` labels (a tie: the newest label)."""

    def __init__(self, window: int = MAJORITY_WINDOW) -> None:
        self.recent: deque[int] = deque(maxlen=window)
        self.ones = 0

    def predict_one(self, x: Any = None) -> int:
        """The majority label (the row does not matter)."""
        zeros = len(self.recent) - self.ones
        if self.ones == zeros:
            return self.recent[-1] if self.recent else 0
        return int(self.ones > zeros)

    def learn_one(self, x: Any, y: int) -> None:
        """A label arrived."""
        if len(self.recent) == self.recent.maxlen:
            self.ones -= self.recent[0]
        self.recent.append(int(y))
        self.ones += int(y)


BASELINES = {"no_change": NoChange, "majority": Majority}


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


def replay_online(order: np.ndarray, inputs: list[Any], y: np.ndarray, model: Any) -> np.ndarray:
    """Drive ``model`` (``predict_one(x)``, ``learn_one(x, y)``) along ``order``; whether each row was predicted right."""
    n = len(y)
    correct = np.zeros(n, dtype=bool)
    for o in order.tolist():
        if o < n:
            correct[o] = model.predict_one(inputs[o]) == y[o]
        else:
            model.learn_one(inputs[o - n], int(y[o - n]))
    return correct
