"""A CSV replayed by ``streamfit bench quality`` in file order, its task read from the target column.

``--target`` names the label column; its task is inferred (``infer_task``) unless ``--task`` says it:

- two distinct values (0/1, booleans, any two values: the larger is 1) -> **binary**;
- at most ``MAX_CLASSES`` distinct values that are not fractional numbers (text, integers) ->
  **multiclass**, the classes in their natural order (numbers by value, text alphabetically);
- numbers with fractions, or more integers than that -> **regression**.

Numeric (and boolean) columns are numeric fields; text columns are categorical fields (their
values as text, given to XGBoost as native categories), except one with more than
``MAX_CATEGORIES`` distinct values (an id, not a category), which is dropped and named.

Example:
    >>> import pandas as pd
    >>> [infer_task(pd.Series(v), "y").value for v in ([0, 1, 1], ["cat", "dog", "emu"], [1.5, 2.25, 3.0], [1, 2, 3])]
    ['binary', 'multiclass', 'regression', 'multiclass']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from streamfit.config import AggregateSpec, FeaturesConfig, FieldSpec, ModelConfig
from streamfit.errors import ConfigError
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL, LABEL_KIND
from streamfit.scripts.quality_streams import in_batches
from streamfit.task import Task

MAX_CLASSES = 20  # a target with more distinct whole numbers is a quantity (regression)
MAX_CATEGORIES = 1000  # a text column with more distinct values is an id: dropped


def infer_task(values: pd.Series, column: str) -> Task:
    """The task a target column asks for (see the module docstring)."""
    present = values.dropna()
    distinct = present.unique()
    if len(distinct) <= 2:
        return Task.BINARY
    if pd.api.types.is_numeric_dtype(present.dtype) and not pd.api.types.is_bool_dtype(present.dtype):
        x = present.to_numpy(dtype=float)
        whole = bool(np.all(np.isfinite(x) & (x == np.floor(x))))
        return Task.MULTICLASS if whole and len(distinct) <= MAX_CLASSES else Task.REGRESSION
    if len(distinct) <= MAX_CLASSES:
        return Task.MULTICLASS
    raise ConfigError(f"--target {column}: {len(distinct)} distinct text values; at most {MAX_CLASSES} are taken "
                      f"as classes without --task multiclass")


def binary_target(values: pd.Series, column: str) -> np.ndarray:
    """A two-valued column as 0/1 floats (NaN where missing): 0/1, booleans, or the larger of two values as 1.

    >>> binary_target(pd.Series(["up", "down", "up", None]), "y").tolist()
    [1.0, 0.0, 1.0, nan]
    """
    present = values.dropna()
    kinds = sorted(present.unique().tolist(), key=str)
    if len(kinds) > 2:
        raise ConfigError(f"--target {column}: {len(kinds)} distinct values; a binary label is needed")
    if pd.api.types.is_bool_dtype(present.dtype):
        mapping = {False: 0.0, True: 1.0}
    elif set(kinds) <= {0, 1}:
        mapping = {0: 0.0, 1: 1.0}
    else:
        try:
            kinds = sorted(kinds)
        except TypeError:
            pass
        mapping = {v: float(i) for i, v in enumerate(kinds[-2:] if len(kinds) == 2 else kinds)}
        if len(kinds) == 1:
            mapping = {kinds[0]: 1.0}
    return values.map(mapping).astype(float).to_numpy()


def task_target(values: pd.Series, column: str, task: Task) -> tuple[pd.Series, list[Any] | None]:
    """(the label of each row as the stream sends it, missing where there is none; the classes of a multiclass
    target): 0/1 floats (binary), the values themselves (multiclass), floats (regression).

    >>> y, classes = task_target(pd.Series(["b", "a", None, "c"]), "y", Task.MULTICLASS)
    >>> y.tolist(), classes
    (['b', 'a', None, 'c'], ['a', 'b', 'c'])
    """
    from streamfit.dictionaries import LabelDictionary

    if task is Task.BINARY:
        return pd.Series(binary_target(values, column), index=values.index), None
    if task is Task.MULTICLASS:
        present = values.dropna()
        return values.astype(object).where(values.notna(), None), LabelDictionary.fit(present).classes
    num = pd.to_numeric(values, errors="coerce")
    if num.notna().sum() < values.notna().sum():
        raise ConfigError(f"--target {column}: a regression target needs numbers; "
                          f"{int(values.notna().sum() - num.notna().sum())} values are not")
    return num.astype(float).where(np.isfinite(num.to_numpy(dtype=float)), np.nan), None


@dataclass
class CsvStream:
    """A CSV replayed in file order: numeric columns are numeric fields, text columns categorical fields,
    ``target`` the label (of ``task``, inferred from the column when not given).

    Without ``entity`` the whole stream is one entity; without ``time`` the row number is the
    event time (seconds). Each label arrives as a label row right after its event.
    """

    path: str
    target: str
    entity: str | None = None
    time: str | None = None
    fields: list[str] = field(default_factory=list)  # numeric
    dropped: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    task: Task | str | None = None

    def __post_init__(self) -> None:
        p = Path(self.path)
        if not p.is_file():
            raise ConfigError(f"--dataset: no such file: {self.path}")
        self.df = pd.read_csv(p)
        for opt, col in (("--target", self.target), ("--entity", self.entity), ("--time", self.time)):
            if col is not None and col not in self.df.columns:
                raise ConfigError(f"{opt}: no column {col!r} in {p.name} (columns: {list(self.df.columns)})")
        special = {self.target, self.entity, self.time} - {None}
        for c in self.df.columns:
            if c in special:
                continue
            if pd.api.types.is_numeric_dtype(self.df[c].dtype) or pd.api.types.is_bool_dtype(self.df[c].dtype):
                self.fields.append(str(c))
            elif self.df[c].nunique() <= MAX_CATEGORIES:
                self.categorical.append(str(c))
            else:
                self.dropped.append(str(c))
        if not self.fields and not self.categorical:
            raise ConfigError(f"{p.name}: no numeric or text columns besides the target")
        try:
            self.task = Task(self.task) if self.task is not None else infer_task(self.df[self.target], self.target)
        except ValueError:
            raise ConfigError(f"--task: one of {', '.join(t.value for t in Task)}, not {self.task!r}") from None
        self.labels, self.classes = task_target(self.df[self.target], self.target, self.task)

    def model(self) -> ModelConfig | None:
        """The target's task (None for binary: the bench reports it as it always did)."""
        if self.task is Task.BINARY:
            return None
        return ModelConfig(task=self.task.value, classes=self.classes)

    def features(self) -> FeaturesConfig:
        """Every numeric column a numeric field and every text column a categorical one, label history on;
        with an entity column, also per-entity event counts, age and window means of the complete numeric columns.

        Without an entity, window means of the whole stream were noise on River's SEA and Agrawal
        streams (measured: ARF lost 5-14 points with them, XGBoost 1-2), so there are none.
        """
        complete = [c for c in self.fields if self.df[c].notna().all()]
        per_entity = self.entity is not None
        cats = [FieldSpec(name=c, type="categorical", required=False) for c in self.categorical]
        return FeaturesConfig(
            fields=[FieldSpec(name=c, required=c in complete) for c in self.fields] + cats,
            aggregates=[AggregateSpec(field=c, ops=["mean"]) for c in complete] if per_entity else [],
            count=per_entity,
            age=per_entity,
        )

    def frame(self) -> pd.DataFrame:
        """Events and their labels, interleaved in file order."""
        n = len(self.df)
        if self.time is None:
            t = np.arange(n, dtype=np.float64)
        else:
            col = self.df[self.time]
            if pd.api.types.is_numeric_dtype(col.dtype):
                t = col.astype(float).to_numpy()
            else:
                stamps = pd.to_datetime(col, errors="coerce", utc=True)
                t = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=float)
        ids = np.char.add("row-", np.arange(n).astype(str)).astype(object)
        ents = self.df[self.entity].astype(str).to_numpy(dtype=object) if self.entity else np.full(n, "all", object)
        events = pd.DataFrame({KIND: EVENT, EVENT_ID: ids, ENTITY: ents, EVENT_TIME: t})
        for c in self.fields:
            events[c] = self.df[c].astype(float).to_numpy()
        for c in self.categorical:
            events[c] = self.df[c].map(str, na_action="ignore").astype(object).where(self.df[c].notna(), None)
        events[LABEL] = np.nan
        labels = pd.DataFrame({KIND: LABEL_KIND, EVENT_ID: ids, ENTITY: ents, EVENT_TIME: t})
        for c in self.fields:
            labels[c] = np.nan
        for c in self.categorical:
            labels[c] = None
        labels[LABEL] = self.labels.to_numpy()
        labels = labels[self.labels.notna().to_numpy()]
        both = pd.concat([events, labels])
        # File order: each row's label right after its event.
        both["_row"] = np.r_[np.arange(n), labels.index.to_numpy()]
        both["_lab"] = np.r_[np.zeros(n, int), np.ones(len(labels), int)]
        return both.sort_values(["_row", "_lab"], kind="stable").drop(columns=["_row", "_lab"]).reset_index(drop=True)

    def batches(self, batch_rows: int = 200) -> Iterator[pd.DataFrame]:
        """The stream in source batches of ``batch_rows`` rows."""
        return in_batches(self.frame(), batch_rows)

    def describe(self) -> str:
        """One line for the bench's header."""
        cats = f", categorical {', '.join(self.categorical)}" if self.categorical else ""
        return (f"{Path(self.path).name}: {len(self.df):,} rows, {len(self.fields)} numeric fields{cats}, "
                f"target {self.target} ({self.task.value})")
