"""Built-in drifting streams for the other tasks: a regression stream, a multiclass stream, and a binary
stream with categorical fields (``streamfit bench quality --dataset friedman|rbf|agrawal``).

Each gives what ``DriftingStream`` gives — ``frame()``: events (``kind="event"``, ids ``ev<i>``,
entities ``u<k>``, ten events a second) and their labels as ``kind="label"`` rows ``label_delay``
events later, in arrival order; ``batches()``, ``features()``, ``describe()`` — and says its
``task``, its ``categorical`` fields and the ``model()`` config the replay trains with. Concept changes are ``DriftingStream``'s: ``changes`` as
(start, end) fractions of the stream, abrupt when start == end, else a blend.

- ``FriedmanStream`` (regression, numpy): Friedman's function of five of ten uniform fields plus
  the entity's hidden level; each concept picks which five fields play which role (River's
  ``FriedmanDrift`` "global recurring abrupt" idea) and how much the entity level weighs.
- ``RbfStream`` (multiclass): River's ``RandomRBFDrift`` (centroids moving all the time); each
  concept has its own centroids.
- ``AgrawalStream`` (binary, categorical fields): River's ``Agrawal`` with its nominal attributes
  as strings (``elevel`` ``edu0``..``edu4``, ``car`` ``car1``..``car20``, ``zipcode``
  ``zip0``..``zip8``); each concept is another classification function.

River's generators assign no meaning to entities: in ``RbfStream`` and ``AgrawalStream`` an
event's entity is drawn at random and tells nothing.

Example:
    >>> s = FriedmanStream(rows=300, label_delay=10, changes=((0.5, 0.5),))
    >>> f = s.frame()
    >>> s.task.value, len(f), list(f.columns)[:4], int((f["kind"] == "label").sum())
    ('regression', 600, ['kind', 'event_id', 'entity', 'event_time'], 300)
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig, FieldSpec, ModelConfig
from streamfit.scripts.quality_streams import DEFAULT_CHANGES, concept_index, in_batches, stream_frame
from streamfit.task import Task


class TaskStream:
    """What every built-in task stream shares: entities, concepts per row, the frame; ``sample`` draws a concept's rows."""

    task: Task = Task.BINARY
    name = "task"
    fields: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    max_changes: int | None = None

    def __init__(self, rows: int = 50_000, seed: int = 7, entities: int = 200, events_per_second: float = 10.0,
                 label_delay: int = 100, changes: Sequence[tuple[float, float]] = DEFAULT_CHANGES) -> None:
        if self.max_changes is not None and len(changes) > self.max_changes:
            raise ValueError(f"at most {self.max_changes} concept changes")
        self.rows, self.seed, self.entities = rows, seed, entities
        self.events_per_second, self.label_delay = events_per_second, label_delay
        self.changes = [(int(a * rows), int(b * rows)) for a, b in changes]

    def sample(self, concept: int, ent: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Fields and labels of ``len(ent)`` consecutive events of ``concept`` (their entities ``ent``)."""
        raise NotImplementedError

    def concepts(self) -> tuple[np.ndarray, np.ndarray]:
        """Each event's entity number and concept number, in event order."""
        rng = np.random.default_rng([self.seed, 15_015])
        ent = rng.integers(0, self.entities, size=self.rows)
        return ent, concept_index(np.arange(self.rows), self.changes, rng.random(self.rows))

    def draw(self) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Each event's entity number, fields (by name) and label, in event order."""
        ent, concept = self.concepts()
        columns = {f: np.empty(self.rows, dtype=object) if f in self.categorical else np.full(self.rows, np.nan)
                   for f in self.fields}
        label = np.full(self.rows, np.nan)
        for k in np.unique(concept).tolist():
            rows = np.flatnonzero(concept == k)
            values, y = self.sample(k, ent[rows])
            for f in self.fields:
                columns[f][rows] = values[f]
            label[rows] = y
        return ent, columns, label

    def label_values(self, label: np.ndarray) -> np.ndarray:
        """The label column as the stream sends it (floats unless a stream says otherwise)."""
        return label

    def frame(self) -> pd.DataFrame:
        """The whole stream (events and their labels) in arrival order, as ``DriftingStream.frame()``."""
        ent, columns, label = self.draw()
        return stream_frame(ent, columns, self.label_values(label), self.label_delay, self.events_per_second)

    def batches(self, batch_rows: int = 200) -> Iterator[pd.DataFrame]:
        """The stream in source batches of ``batch_rows`` rows (events and labels together)."""
        return in_batches(self.frame(), batch_rows)

    def features(self) -> FeaturesConfig:
        """Every field (numeric, or categorical with its text values), the label history of the task, no
        per-entity window aggregates (the streams' fields carry no per-entity signal)."""
        fields = [FieldSpec(name=f, type="categorical") if f in self.categorical else FieldSpec(name=f)
                  for f in self.fields]
        return FeaturesConfig(fields=fields, aggregates=[], count=False, age=False)

    def model(self) -> ModelConfig:
        """What the replay trains: the stream's task (and classes)."""
        return ModelConfig(task=self.task.value)

    def describe(self) -> str:
        """One line for the bench's header."""
        cats = f", categorical {', '.join(self.categorical)}" if self.categorical else ""
        return (f"{self.name} ({self.task.value}): {self.rows:,} rows, {len(self.changes)} concept changes{cats}, "
                f"seed {self.seed}")


def river_rows(generator: Any, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The next ``n`` rows of a River generator: (fields as a frame, labels as floats)."""
    xs, ys = [], []
    for x, y in itertools.islice(generator, n):
        xs.append(x)
        ys.append(y)
    return pd.DataFrame.from_records(xs), np.asarray(ys, dtype=float)


class FriedmanStream(TaskStream):
    """Regression: ``y = 10 sin(pi x_a x_b) + 20 (x_c - 0.5)^2 + 10 x_d + 5 x_e + level_k b + N(0, noise)``.

    Fields ``x0``..``x9`` are uniform on [0, 1]; concept 0 is Friedman's own (a..e = x0..x4), each
    later concept draws another five fields for the roles, and a weight ``level_k`` of the entity's
    hidden level ``b`` (seen only through the entity's past labels).

    >>> s = FriedmanStream(seed=1)
    >>> s.concept(0), s.concept(1) != s.concept(0)
    (((0, 1, 2, 3, 4), 3.0), True)
    """

    task = Task.REGRESSION
    name = "friedman"
    fields = tuple(f"x{j}" for j in range(10))

    def __init__(self, rows: int = 50_000, seed: int = 7, noise: float = 1.0, **kw: Any) -> None:
        super().__init__(rows, seed, **kw)
        self.noise = noise
        self.level = np.random.default_rng([seed, 15_016]).normal(0.0, 1.0, size=self.entities)

    def concept(self, k: int) -> tuple[tuple[int, ...], float]:
        """(fields playing roles a..e, weight of the entity level) of concept ``k``."""
        if k == 0:
            return (0, 1, 2, 3, 4), 3.0
        rng = np.random.default_rng([self.seed, 15_017, k])
        return tuple(int(j) for j in rng.permutation(10)[:5]), float(rng.choice([-3.0, -1.5, 1.5, 3.0]))

    def target(self, k: int, x: np.ndarray, ent: np.ndarray) -> np.ndarray:
        """The noiseless label of rows ``x`` (n, 10) of entities ``ent`` under concept ``k``."""
        (a, b, c, d, e), level = self.concept(k)
        return (10 * np.sin(np.pi * x[:, a] * x[:, b]) + 20 * (x[:, c] - 0.5) ** 2 + 10 * x[:, d] + 5 * x[:, e]
                + level * self.level[ent])

    def sample(self, concept: int, ent: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Uniform fields and the concept's label plus noise."""
        rng = np.random.default_rng([self.seed, 15_018, concept])
        x = rng.random((len(ent), 10))
        y = self.target(concept, x, ent) + rng.normal(0.0, self.noise, size=len(ent))
        return {f: x[:, j] for j, f in enumerate(self.fields)}, y


class RbfStream(TaskStream):
    """Multiclass: River's ``RandomRBFDrift`` (``n_classes`` classes, ``n_features`` fields ``x0``..);
    each concept has its own centroids, and inside a concept ``n_drift_centroids`` of them move
    by ``change_speed`` per event. Labels are class indices 0..k-1 as floats, or ``c0``.. with ``class_names``.

    >>> s = RbfStream(rows=400, n_classes=3, class_names=True, changes=((0.5, 0.5),))
    >>> _ent, _cols, y = s.draw()
    >>> sorted(set(s.label_values(y).tolist()))
    ['c0', 'c1', 'c2']
    """

    task = Task.MULTICLASS
    name = "rbf"

    def __init__(self, rows: int = 50_000, seed: int = 7, n_classes: int = 5, n_features: int = 10,
                 n_centroids: int = 50, change_speed: float = 0.0001, n_drift_centroids: int = 25,
                 class_names: bool = False, **kw: Any) -> None:
        super().__init__(rows, seed, **kw)
        self.n_classes, self.n_features, self.n_centroids = n_classes, n_features, n_centroids
        self.change_speed, self.n_drift_centroids, self.class_names = change_speed, n_drift_centroids, class_names
        self.fields = tuple(f"x{j}" for j in range(n_features))

    def sample(self, concept: int, ent: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The next rows of the concept's own generator."""
        from river.datasets import synth  # imported on first use: only the bench needs River

        gen = synth.RandomRBFDrift(seed_model=self.seed * 1000 + concept, seed_sample=self.seed * 1000 + 500 + concept,
                                   n_classes=self.n_classes, n_features=self.n_features,
                                   n_centroids=self.n_centroids, change_speed=self.change_speed,
                                   n_drift_centroids=self.n_drift_centroids)
        x, y = river_rows(gen, len(ent))
        return {f: x[j].to_numpy(dtype=float) for j, f in enumerate(self.fields)}, y

    def model(self) -> ModelConfig:
        """Multiclass with the stream's classes: ``0``..``k-1``, or ``c0``.. with ``class_names``."""
        return ModelConfig(task="multiclass", classes=[f"c{k}" if self.class_names else k
                                                      for k in range(self.n_classes)])

    def label_values(self, label: np.ndarray) -> np.ndarray:
        """Class indices as floats, or as names ``c<k>`` with ``class_names``."""
        if not self.class_names:
            return label
        return np.char.add("c", label.astype(np.int64).astype(str)).astype(object)


# Agrawal's classification functions, one per concept: those that use the education level first.
AGRAWAL_FUNCTIONS = (2, 7, 3, 9, 8, 1, 5, 0, 4, 6)
AGRAWAL_NOMINAL = {"elevel": "edu", "car": "car", "zipcode": "zip"}


class AgrawalStream(TaskStream):
    """Binary with categorical fields: River's ``Agrawal`` (classification function ``AGRAWAL_FUNCTIONS[k]``
    in concept ``k``), the nominal attributes sent as strings, the numeric ones perturbed by ``perturbation``.

    >>> f = AgrawalStream(rows=200, changes=()).frame()
    >>> sorted(f["elevel"].dropna().unique())
    ['edu0', 'edu1', 'edu2', 'edu3', 'edu4']
    """

    task = Task.BINARY
    name = "agrawal"
    fields = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")
    categorical = tuple(AGRAWAL_NOMINAL)
    max_changes = len(AGRAWAL_FUNCTIONS) - 1

    def __init__(self, rows: int = 50_000, seed: int = 7, perturbation: float = 0.05, **kw: Any) -> None:
        super().__init__(rows, seed, **kw)
        self.perturbation = perturbation

    def sample(self, concept: int, ent: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The next rows of the concept's classification function, nominal attributes as strings."""
        from river.datasets import synth  # imported on first use: only the bench needs River

        gen = synth.Agrawal(classification_function=AGRAWAL_FUNCTIONS[concept], seed=self.seed * 1000 + concept,
                            perturbation=self.perturbation)
        x, y = river_rows(gen, len(ent))
        values = {f: x[f].to_numpy(dtype=float) for f in self.fields if f not in AGRAWAL_NOMINAL}
        for f, prefix in AGRAWAL_NOMINAL.items():
            values[f] = np.char.add(prefix, x[f].to_numpy(dtype=np.int64).astype(str)).astype(object)
        return values, y


# The task streams by name (``bench quality --dataset`` will offer them once the bench runs each task).
TASK_STREAMS = {"friedman": FriedmanStream, "rbf": RbfStream, "agrawal": AgrawalStream}
