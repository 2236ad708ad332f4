"""The binary streams ``streamfit bench quality`` replays: the built-in drifting generators (a CSV in file order:
``quality_csv``; streams of the other tasks: ``task_streams``).

Every stream gives the same thing: events and their labels as ``kind="label"`` rows in arrival order
(``frame()``), cut into source batches (``batches()``), plus the feature spec to replay them with.

Example:
    >>> parts = list(in_batches(DriftingStream(rows=200, label_delay=10).frame(), 150))
    >>> [len(p) for p in parts], [p.index[0] for p in parts]  # 200 events and their 200 labels
    ([150, 150, 100], [0, 0, 0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL, LABEL_KIND

START_TIME = 1_700_000_000.0
SYNTHETIC_FIELDS = ("x0", "x1", "x2")


def in_batches(df: pd.DataFrame, batch_rows: int) -> Iterator[pd.DataFrame]:
    """``df`` in consecutive source batches of ``batch_rows`` rows, each indexed from 0."""
    for i in range(0, len(df), batch_rows):
        yield df.iloc[i:i + batch_rows].reset_index(drop=True)


def concept_index(idx: np.ndarray, changes: Sequence[tuple[int, int]], u: np.ndarray | None = None) -> np.ndarray:
    """Concept number of each event index under ``changes`` ((start, end) event indices; start == end is
    abrupt, else each row of [start, end) follows the next concept when its ``u`` is below the blend's share).

    >>> concept_index(np.arange(6), [(2, 2), (4, 6)], u=np.full(6, 0.4)).tolist()
    [0, 0, 1, 1, 1, 2]
    """
    idx = np.asarray(idx)
    u = np.full(len(idx), 0.5) if u is None else u
    concept = np.zeros(len(idx), dtype=np.int64)
    for k, (a, b) in enumerate(changes):
        if b <= a:
            concept[idx >= a] = k + 1
        else:
            share = np.clip((idx - a) / (b - a), 0.0, 1.0)
            concept[(idx >= b) | ((idx >= a) & (u < share))] = k + 1
    return concept


def stream_frame(ent: np.ndarray, columns: dict[str, np.ndarray], label: np.ndarray, label_delay: int,
                 events_per_second: float) -> pd.DataFrame:
    """Event ``i`` (entity ``u<ent>``, id ``ev<i>``, at ``START_TIME + i / events_per_second``) with its
    field ``columns``, and its ``label`` as a ``kind="label"`` row ``label_delay`` events later, in arrival order."""
    idx = np.arange(len(ent))
    t = START_TIME + idx / events_per_second
    ids = np.char.add("ev", idx.astype(str)).astype(object)
    ents = np.char.add("u", np.asarray(ent).astype(str)).astype(object)
    events = pd.DataFrame({KIND: EVENT, EVENT_ID: ids, ENTITY: ents, EVENT_TIME: t})
    for name, values in columns.items():
        events[name] = values
    events[LABEL] = np.nan
    labels = pd.DataFrame({KIND: LABEL_KIND, EVENT_ID: ids, ENTITY: ents,
                           EVENT_TIME: START_TIME + (idx + label_delay) / events_per_second})
    for name in columns:
        labels[name] = np.nan
    labels[LABEL] = label
    both = pd.concat([events, labels], ignore_index=True)
    # Arrival order is time order; a label due at the same instant as an event comes after it.
    return both.sort_values(EVENT_TIME, kind="stable", ignore_index=True)


# -- the built-in drifting stream ------------------------------------------------------------

@dataclass(frozen=True)
class Concept:
    """One labelling rule: weights on the row's own signal, on the entity's level, and an interaction."""

    w: tuple[float, float, float]
    level: float  # weight of the entity's level (visible only through x0's window mean)
    inter: float = 0.0  # weight of z1 * z2


# Five concepts: every change moves both the row weights and the role of the entity level.
CONCEPTS = (
    Concept((2.0, 1.0, 0.0), +1.5),
    Concept((-1.0, 2.0, 0.5), -1.5),
    Concept((0.5, -2.0, 1.5), +1.0, 1.0),
    Concept((-2.0, 0.0, -1.5), -1.0),
    Concept((1.0, -1.0, -2.0), +1.5, 1.5),
)

# (start, end) as fractions of the stream; start == end is an abrupt change, otherwise the
# labelling rule blends linearly from the old concept to the next one over [start, end).
DEFAULT_CHANGES = ((0.2, 0.2), (0.4, 0.4), (0.6, 0.6), (0.74, 0.86))


class DriftingStream:
    """Deterministic synthetic stream with per-entity structure, abrupt and gradual concept drift.

    Each entity has a hidden level ``b`` (x0 = z0 + 2 b, so only the entity's window mean of
    x0 recovers ``b``) and a hidden two-state mood ``s`` that flips now and then (seen only in
    its own recent labels: the label-history features). The label of event ``i`` is
    ``1[w·z + level·b + inter·z1·z2 + 1.2 s + noise > 0]`` under the concept in force at ``i``;
    inside a gradual change each row follows the new concept with a probability rising from
    0 to 1. Labels arrive ``label_delay`` events after their event, as ``kind="label"`` rows.

    >>> s = DriftingStream(rows=1000, changes=((0.5, 0.5),))
    >>> frames = list(s.batches(400))
    >>> sum(len(f) for f in frames), int(sum((f["kind"] == "label").sum() for f in frames))
    (2000, 1000)
    >>> s.concept_of(np.array([0, 499, 500, 999])).tolist()
    [0, 0, 1, 1]
    """

    def __init__(self, rows: int = 50_000, seed: int = 7, entities: int = 200, events_per_second: float = 10.0,
                 label_delay: int = 100, changes: Sequence[tuple[float, float]] = DEFAULT_CHANGES,
                 noise: float = 0.5, mood_weight: float = 1.2, mood_flip: float = 0.01) -> None:
        if len(changes) >= len(CONCEPTS):
            raise ValueError(f"at most {len(CONCEPTS) - 1} concept changes")
        self.rows, self.seed, self.entities = rows, seed, entities
        self.events_per_second, self.label_delay = events_per_second, label_delay
        self.changes = [(int(a * rows), int(b * rows)) for a, b in changes]
        self.noise, self.mood_weight, self.mood_flip = noise, mood_weight, mood_flip

    def concept_of(self, idx: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        """Concept number labelling each event index (``u``: uniform draws that pick a side in a blend)."""
        return concept_index(idx, self.changes, u)

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each event's entity number, fields and 0/1 label, in event order."""
        n = self.rows
        rng = np.random.default_rng([self.seed, 20_240_611])
        level = rng.normal(0.0, 1.0, size=self.entities)
        ent = rng.integers(0, self.entities, size=n)
        z = rng.normal(0.0, 1.0, size=(n, 3))
        x = z.copy()
        x[:, 0] += 2.0 * level[ent]
        # Hidden per-entity mood: flips with probability mood_flip at each of the entity's events.
        flips = (rng.random(n) < self.mood_flip).astype(np.int64)
        cum = pd.Series(flips).groupby(ent).cumsum().to_numpy()  # the entity's flips so far
        start_mood = rng.integers(0, 2, size=self.entities)
        mood = np.where((cum + start_mood[ent]) % 2 == 0, 1.0, -1.0)
        concept = self.concept_of(np.arange(n), rng.random(n))
        w = np.array([c.w for c in CONCEPTS])[concept]
        lv = np.array([c.level for c in CONCEPTS])[concept]
        inter = np.array([c.inter for c in CONCEPTS])[concept]
        logit = (w * z).sum(axis=1) + lv * level[ent] + inter * z[:, 1] * z[:, 2] + self.mood_weight * mood
        label = (logit + rng.normal(0.0, self.noise, size=n) > 0).astype(np.float64)
        return ent, x, label

    def frame(self) -> pd.DataFrame:
        """The whole stream (events and their labels) in arrival order."""
        ent, x, label = self.draw()
        columns = {name: x[:, j] for j, name in enumerate(SYNTHETIC_FIELDS)}
        return stream_frame(ent, columns, label, self.label_delay, self.events_per_second)

    def batches(self, batch_rows: int = 200) -> Iterator[pd.DataFrame]:
        """The stream in source batches of ``batch_rows`` rows (events and labels together)."""
        return in_batches(self.frame(), batch_rows)

    @staticmethod
    def features() -> FeaturesConfig:
        """The feature spec the stream is replayed with: the built-in default."""
        return FeaturesConfig()

    def describe(self) -> str:
        """One line for the bench's header."""
        return f"synthetic: {self.rows:,} rows, {len(self.changes)} concept changes, seed {self.seed}"


class PersistentStream(DriftingStream):
    """The drifting stream with labels that persist: an event keeps its entity's previous label with
    probability ``persistence`` (drawn per seed in [0.8, 0.9] unless given), else it takes the label
    the drifting stream's concept gives its fields (the same concepts and changes).

    The fields explain only the fresh labels; the entity's previous label (``label_last``, once it
    has arrived) explains most of them, so ``no_change`` is a strong baseline here.

    >>> s = PersistentStream(rows=4000, seed=3)
    >>> ent, _x, y = s.draw()
    >>> round(s.persistence, 3), 0.8 <= same_as_previous(ent, y) <= 0.97
    (0.855, True)
    """

    def __init__(self, rows: int = 50_000, seed: int = 7, persistence: float | None = None, **kw) -> None:
        super().__init__(rows, seed, **kw)
        drawn = float(np.random.default_rng([seed, 31_337]).uniform(0.8, 0.9))
        self.persistence = drawn if persistence is None else float(persistence)

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As the drifting stream, then each label replaced by the entity's previous one with ``persistence``."""
        ent, x, fresh = super().draw()
        keep = np.random.default_rng([self.seed, 31_338]).random(len(ent)) < self.persistence
        label = fresh.copy()
        last = np.full(self.entities, np.nan)
        for i, e in enumerate(ent.tolist()):  # sequential: a kept label may itself have been kept
            if keep[i] and last[e] == last[e]:
                label[i] = last[e]
            last[e] = label[i]
        return ent, x, label

    def describe(self) -> str:
        """One line for the bench's header."""
        return (f"persistent: {self.rows:,} rows, {len(self.changes)} concept changes, a label kept with "
                f"p={self.persistence:.2f}, seed {self.seed}")


def same_as_previous(ent: np.ndarray, label: np.ndarray) -> float:
    """Share of events whose label equals their entity's previous label (the entity's first events left out).

    >>> same_as_previous(np.array([0, 1, 0, 0, 1]), np.array([1.0, 0.0, 1.0, 0.0, 0.0]))
    0.6666666666666666
    """
    prev = pd.Series(label).groupby(ent).shift(1).to_numpy()
    has = ~np.isnan(prev)
    return float((prev[has] == label[has]).mean()) if has.any() else float("nan")


# The built-in streams ``--dataset`` names; ``all`` runs each of them.
BUILT_IN = {"synthetic": DriftingStream, "persistent": PersistentStream}
