"""The embedded synthetic stream for every task: a quantity, one of several classes, or 0/1, with categorical fields.

``TaskSyntheticSource`` is ``SyntheticSource`` (same entities, per-entity level in the first numeric
field, abrupt concept drifts every ``drift_every`` events, labels ``label_delay_events`` later,
replayable by batch number) for configs the binary generator cannot feed: ``model.task`` regression
or multiclass, or categorical fields. Each concept weighs the numeric fields and every category of
every categorical field anew, so after a drift both the numbers and the categories mean something
else. Categorical values go on the wire as text (a field's ``allowed`` values, or
``<field>_0``…``<field>_5``); multiclass labels as the class names of ``model.classes``.

Bad rows are injected at ``bad_row_rate`` as the binary stream does (a missing or out-of-range
number), plus what only these tasks can get wrong: a number where a category is expected, and a
label that does not fit the task (a class outside ``model.classes``, text where a number is due).

Example:
    >>> from streamfit.config import FeaturesConfig, ModelConfig, StreamConfig
    >>> fields = [{"name": "x0"}, {"name": "x1"}, {"name": "country", "type": "categorical"}]
    >>> src = TaskSyntheticSource(StreamConfig(batch_size=200, label_delay_events=50, bad_row_rate=0),
    ...                           FeaturesConfig(fields=fields, aggregates=[{"field": "x0", "ops": ["mean"]}]),
    ...                           ModelConfig(task="multiclass", classes=["low", "mid", "high"]))
    >>> batch, _ = src.read(2)
    >>> events = batch[batch["kind"] == "event"]
    >>> sorted(set(events["country"]))[:2], sorted(set(batch.loc[batch["kind"] == "label", "label"]))
    (['country_0', 'country_1'], ['high', 'low', 'mid'])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from streamfit.actors.stream.sources import SyntheticSource
from streamfit.config import FeaturesConfig, ModelConfig, StreamConfig

_DEFAULT_CATEGORIES = 6


class TaskSyntheticSource(SyntheticSource):
    """Deterministic drifting stream whose label fits ``model.task`` and whose categorical fields carry text."""

    def __init__(self, stream: StreamConfig, features: FeaturesConfig, model: ModelConfig) -> None:
        super().__init__(stream, features)
        self.task = model.task
        self.classes: list[Any] = list(model.classes or [])
        specs = {f.name: f for f in features.fields}
        self.categorical = [j for j, name in enumerate(self.fields) if specs[name].categorical]
        self.numeric = [j for j in range(len(self.fields)) if j not in self.categorical]
        self.values = {j: list(specs[self.fields[j]].allowed or
                               [f"{self.fields[j]}_{c}" for c in range(_DEFAULT_CATEGORIES)])
                       for j in self.categorical}
        rng = np.random.default_rng([stream.seed, 2_000_003])
        k = max(len(self.classes), 1)
        n = len(self.fields)
        # Per concept: a weight per (numeric field, class) and an effect per (category, class).
        self.weights = [rng.normal(0.0, 1.0, size=(n, k)) for _ in self.concepts]
        self.effects = [{j: rng.normal(0.0, 1.5, size=(len(v), k)) for j, v in self.values.items()}
                        for _ in self.concepts]
        self.class_bias = rng.normal(0.0, 0.5, size=k)

    def _make_block(self, k: int) -> dict[str, np.ndarray]:
        b = self.cfg.batch_size
        rng = np.random.default_rng([self.cfg.seed, k, 17])
        idx = np.arange(k * b, (k + 1) * b, dtype=np.int64)
        ent = rng.integers(0, self.cfg.entities, size=b)
        x = rng.normal(0.0, 1.0, size=(b, len(self.fields)))
        codes = {j: rng.integers(0, len(v), size=b) for j, v in self.values.items()}
        for j, c in codes.items():
            x[:, j] = 0.0  # the category is the signal; its column carries the code below
        bias = self.entity_bias[ent]
        first = self.numeric[0] if self.numeric else None
        concept = self.concept_at(idx)
        score = np.zeros((b, max(len(self.classes), 1)))
        for c in np.unique(concept):
            rows = concept == c
            score[rows] = x[rows] @ self.weights[c]
            for j, cj in codes.items():
                score[rows] += self.effects[c][j][cj[rows]]
            # The entity's level enters each class with the concept's sign: only window means reveal it.
            score[rows] += 2.0 * self.concept_bias_sign[c] * np.outer(bias[rows], np.sign(self.class_bias))
        if first is not None:
            x[:, first] += 2.0 * bias
        for j, c in codes.items():
            x[:, j] = c
        label = self._label(score, rng)
        x, label = self._inject_bad(x, label, rng)
        return {"idx": idx, "entity": ent, "x": x, "label": label}

    def _label(self, score: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.task == "regression":
            return 3.0 * score[:, 0] + rng.normal(0.0, 0.5, size=len(score))
        if self.task == "multiclass":
            noisy = score + self.class_bias + rng.gumbel(0.0, 0.5, size=score.shape)
            return np.asarray(self.classes, dtype=object)[noisy.argmax(axis=1)]
        return (score[:, 0] + rng.normal(0.0, 0.3, size=len(score)) > 0).astype(np.float64)

    def _inject_bad(self, x: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        bad = rng.random(len(x)) < self.cfg.bad_row_rate
        which = rng.integers(0, 4, size=len(x))
        num = self.numeric
        if len(num) > 1:
            x[bad & (which == 0), num[1]] = np.nan  # missing required field
        if num:
            x[bad & (which == 1), num[-1]] = 1e6  # out of range (when the field has a range)
        if self.categorical:
            x[bad & (which == 2), self.categorical[0]] = -1  # a number where a category is due
        if self.task != "binary":
            label = label.astype(object)
            label[bad & (which == 3)] = "not-a-class" if self.task == "multiclass" else "abc"
        return x, label

    def _event_frame(self, blk: dict[str, np.ndarray]) -> pd.DataFrame:
        df = super()._event_frame(blk)
        for j, values in self.values.items():
            codes = blk["x"][:, j].astype(np.int64)
            text = np.asarray(values, dtype=object)[np.clip(codes, 0, len(values) - 1)]
            df[self.fields[j]] = np.where(codes < 0, 7.0, text)  # the injected number stays a number
        return df

