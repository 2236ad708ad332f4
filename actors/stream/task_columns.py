"""What the model's task changes in a shard: label-history columns per task, and categorical fields as text.

``TaskColumns`` is the one place a ``FeatureShard`` asks about ``model.task`` and the
categorical fields (issue 15):

- **Labels.** Binary and regression labels go in the label store as one value; a multiclass
  label (its class index, as ``check_columns`` gives it) as the index followed by one 0/1
  indicator per class, so the window mean of indicator ``i`` is class ``i``'s rate. Label-history
  columns (``FeaturesConfig.feature_names(model)``) are read from the same point-in-time window
  query as the binary ones: binary ``label_last``, rate and count; regression ``label_last``,
  mean, std (sample, like ``<f>_std_<w>``) and count; multiclass ``label_last`` (the index),
  a rate per class and count. Only labels that arrived before the event count, in ``[t - W, t)``.
- **Categorical fields travel as text.** Design choice: the float matrices the shard keeps
  (window values, pending vectors, served vectors) hold NaN in a categorical field's raw
  column, and the text rides beside them in an object matrix (one column per categorical
  field, None = missing): ``PendingRows.cats``, ``ServedLog``'s ``cats``, checkpoint columns
  ``c0``, ``c1``… of ``pending.arrow``/``served.arrow``, and the lookup's ``LookupResult.text``.
  A row leaving the shard (training row, lookup answer, recent events) has the event's own text
  in that column. Chosen over interning codes in the float matrix: no dictionary to share
  between the batch thread and lookup threads, to merge and renumber on a reshard, or to
  prune; and a config without categorical fields carries an empty (n, 0) matrix: nothing. For a window's
  ``<field>_distinct_<w>`` the window store keeps a categorical field as a stable hash of its text (a
  float: codes are only ever compared, never read back, so no dictionary either).
- **Checkpoints of another task are refused.** A shard's snapshot meta says its task and
  categorical fields (``fingerprint``, absent for binary without categorical fields, as
  every checkpoint written before); ``check`` refuses a snapshot of another task, class list or
  categorical-field set, naming both, instead of reading label rows of another width.

Example:
    >>> import numpy as np
    >>> from streamfit.config import FeaturesConfig, ModelConfig
    >>> tc = TaskColumns(FeaturesConfig(), ModelConfig(task="multiclass", classes=["a", "b", "c"]))
    >>> tc.label_values(np.array([2.0, 0.0])).tolist()
    [[2.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]
    >>> tc.check({"task": {"task": "binary", "classes": None, "categorical": []}})
    Traceback (most recent call last):
    ...
    streamfit.actors.stream.checkpoint.CheckpointError: the checkpoint was written for task binary, this config is task multiclass (classes ['a', 'b', 'c']): start from an empty checkpoint store (or use the config it was written with)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig, ModelConfig
from streamfit.schema import ENTITY, EVENT_ID, EVENT_TIME, LABEL, hash_keys


class TaskColumns:
    """The task's label layout and the categorical fields' text columns of one shard's config."""

    def __init__(self, cfg: FeaturesConfig, model: ModelConfig | None = None) -> None:
        self.task = "binary" if model is None else model.task
        self.classes = [str(c) for c in model.classes] if model is not None and model.classes else []
        self.fields = [f.name for f in cfg.fields]
        self.cat_fields = cfg.categorical_fields()
        self.numeric = [not f.categorical for f in cfg.fields]
        self.feature_names = cfg.feature_names(model)
        self.cat_pos = [self.feature_names.index(f) for f in self.cat_fields]  # their columns in a model row
        # Window values of a categorical field (for ``distinct``): a stable hash of its text as a float, NaN = missing.
        self.coded = [(j, f) for j, f in enumerate(cfg.aggregated_fields()) if f in self.cat_fields]
        self.label_width = 1 + len(self.classes) if self.task == "multiclass" else 1
        self.label_std: bool | list[int] = [0] if self.task == "regression" else False
        self._empty: pd.DataFrame | None = None

    @property
    def n_cats(self) -> int:
        """How many categorical fields (text columns) rows carry."""
        return len(self.cat_fields)

    # -- labels ----------------------------------------------------------------------------------
    def label_values(self, labels: np.ndarray) -> np.ndarray:
        """The label store's rows for clean labels (multiclass: the index, then one indicator per class)."""
        labels = np.asarray(labels, np.float64)
        if self.task != "multiclass":
            return labels.reshape(-1, 1)
        onehot = (labels[:, None] == np.arange(len(self.classes))[None, :]).astype(np.float64)
        return np.column_stack([labels, onehot])

    def label_columns(self, lq: dict[str, Any], n_windows: int) -> list[np.ndarray]:
        """The label-history columns (feature-name order) from a label-store query."""
        cols = [lq["last"][:, 0]]
        for wi in range(n_windows):
            if self.task == "regression":
                cols += [lq["mean"][wi][:, 0], lq["std"][wi][:, 0]]
            elif self.task == "multiclass":
                cols += [lq["mean"][wi][:, 1 + i] for i in range(len(self.classes))]
            else:
                cols.append(lq["mean"][wi][:, 0])
            cols.append(lq["count"][wi].astype(np.float64))
        return cols

    # -- raw fields --------------------------------------------------------------------------------
    def raw(self, clean: dict[str, Any], rows: np.ndarray) -> np.ndarray:
        """The fields' float matrix of the ``rows`` (a mask) of the clean columns, NaN in categorical columns."""
        n = int(np.count_nonzero(rows))
        if not self.fields:
            return np.zeros((n, 0))
        return np.column_stack([clean[f][rows] if num else np.full(n, np.nan)
                                for f, num in zip(self.fields, self.numeric)])

    def text(self, clean: dict[str, Any], rows: np.ndarray) -> np.ndarray:
        """The categorical fields' text matrix (n, n_cats) of the ``rows`` (a mask), object (None = missing)."""
        if not self.cat_fields:
            return np.empty((int(np.count_nonzero(rows)), 0), dtype=object)
        return np.column_stack([np.asarray(clean[f], dtype=object)[rows] for f in self.cat_fields]).astype(object)

    def window_values(self, values: np.ndarray, clean: dict[str, Any], rows: np.ndarray) -> np.ndarray:
        """The window store's rows (the aggregated fields of ``rows``): a categorical field's column gets codes."""
        for j, f in self.coded:
            text = np.asarray(clean[f], dtype=object)[rows]
            missing = pd.isna(text)
            values[:, j] = np.where(missing, np.nan, hash_keys(np.where(missing, "", text)).astype(np.float64))
        return values

    def nulls(self, clean: dict[str, Any], is_event: np.ndarray) -> dict[str, int]:
        """Missing values per field among event rows."""
        return {f: int(np.isnan(clean[f][is_event]).sum()) if num else
                int(pd.isna(np.asarray(clean[f], dtype=object)[is_event]).sum())
                for f, num in zip(self.fields, self.numeric)}

    def text_columns(self, cats: np.ndarray) -> dict[str, np.ndarray]:
        """Field -> text per row of a text matrix."""
        return {f: np.asarray(cats[:, i], dtype=object) for i, f in enumerate(self.cat_fields)}

    def text_series(self, cats: np.ndarray) -> dict[str, pd.Series]:
        """Field -> text per row as object Series: None stays None (pandas would make str columns with NaN)."""
        return {f: pd.Series(cats[:, i], dtype=object) for i, f in enumerate(self.cat_fields)}

    def frame(self, front: dict[str, Any], feats: np.ndarray, cats: np.ndarray,
              back: dict[str, Any] | None = None) -> pd.DataFrame:
        """Rows: the ``front`` columns, the model row (categorical columns as text), then ``back``."""
        cols = dict(front)
        cols.update(zip(self.feature_names, feats.T))
        cols.update(self.text_series(cats))
        cols.update(back or {})
        return pd.DataFrame(cols)  # one constructor: no inserts

    def row_columns(self) -> list[str]:
        """A training row's columns."""
        return [EVENT_ID, ENTITY, EVENT_TIME, *self.feature_names, LABEL]

    def empty_rows(self) -> pd.DataFrame:
        """A training-row frame with no rows (a copy of one built once: building it costs ~5 ms)."""
        if self._empty is None:
            text = {EVENT_ID, ENTITY, *self.cat_fields}
            self._empty = pd.DataFrame({c: pd.Series(dtype=object if c in text else float)
                                        for c in self.row_columns()})
        return self._empty.copy()

    # -- checkpoints -----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any] | None:
        """What a snapshot's rows mean beyond numbers: None for binary without categorical fields (as always)."""
        if self.task == "binary" and not self.cat_fields:
            return None
        return {"task": self.task, "classes": self.classes or None, "categorical": list(self.cat_fields)}

    def check(self, meta: dict[str, Any]) -> None:
        """Refuse (``CheckpointError``) a snapshot whose meta was written for another task or categorical fields."""
        from streamfit.actors.stream.checkpoint import CheckpointError

        theirs = meta.get("task") or {"task": "binary", "classes": None, "categorical": []}
        mine = self.fingerprint() or {"task": "binary", "classes": None, "categorical": []}
        if theirs == mine:
            return
        raise CheckpointError(f"the checkpoint was written for {_describe(theirs)}, this config is {_describe(mine)}: "
                              "start from an empty checkpoint store (or use the config it was written with)")


def _describe(fp: dict[str, Any]) -> str:
    out = f"task {fp['task']}"
    if fp.get("classes"):
        out += f" (classes {fp['classes']})"
    if fp.get("categorical"):
        out += f" with categorical fields {fp['categorical']}"
    return out
