"""How the trainer fits, scores and describes a model of its task (binary, multiclass, regression) with
numeric and categorical fields: ``TaskFit``.

The binary task without categorical fields (``TaskFit.plain``) keeps the trainer's original path
exactly: rows cast to floats, boosters fed a float matrix. Otherwise labels are checked for the
task (rows whose label does not fit are dropped and counted), categorical fields are kept as
text in the window, and each full refit fits a ``CategoryDictionary`` on its training rows: the
booster gets pandas categoricals with ``enable_categorical`` and the version keeps the
dictionary (an incremental update keeps its base version's, so codes never move under a booster).

Example:
    >>> import pandas as pd
    >>> from streamfit.config import ModelConfig
    >>> fit = TaskFit(["x", "colour"], ModelConfig(task="multiclass", classes=["a", "b"]), categorical=["colour"])
    >>> part, keep = fit.rows(pd.DataFrame({"event_time": [1.0, 2.0], "x": [0.5, 1.5], "colour": ["red", 3],
    ...                                     "label": ["b", "zebra"]}))
    >>> part["colour"].tolist(), part["label"].tolist(), keep.tolist()
    (['red'], [1.0], [True, False])
    >>> fit.params_for(max_depth=3)["objective"], fit.describe(None)["labels"]
    ('multi:softprob', {'classes': ['a', 'b']})
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import xgboost as xgb

from streamfit.config import ModelConfig
from streamfit.dictionaries import CategoryDictionary, as_series, not_of_type
from streamfit.psi import reference_quantiles
from streamfit.registry import version_task
from streamfit.schema import EVENT_TIME, LABEL
from streamfit.task import Task, TaskSpec, check_labels, predicted_class, row_error


class TaskFit:
    """The task's side of training: row coercion, XGBoost params, inputs, metrics, drift errors, version meta."""

    def __init__(self, feature_names: Sequence[str], model: ModelConfig | None = None,
                 categorical: Sequence[str] = ()) -> None:
        self.spec: TaskSpec = model.task_spec() if model is not None else TaskSpec()
        self.labels = model.label_dictionary() if model is not None else None
        self.features = list(feature_names)
        unknown = sorted(set(categorical) - set(self.features))
        if unknown:
            raise ValueError(f"categorical fields {unknown} are not among the features")
        self.categorical = [f for f in self.features if f in set(categorical)]
        self.numeric = [f for f in self.features if f not in set(categorical)]
        self.plain = self.spec.task is Task.BINARY and not self.categorical
        self.bad_labels = 0  # rows dropped: their label did not fit the task

    @property
    def columns(self) -> list[str]:
        """The window's columns: event time, features, label."""
        return [EVENT_TIME, *self.features, LABEL]

    @property
    def n_classes(self) -> int | None:
        """Classes of a multiclass task (None otherwise)."""
        return len(self.labels) if self.labels is not None else None

    def params_for(self, **tree: Any) -> dict[str, Any]:
        """XGBoost params: the task's objective and eval metric, then ``tree`` (depth, eta …), one thread."""
        return {**self.spec.xgb_params(self.n_classes), **tree, "nthread": 1}

    # -- rows --------------------------------------------------------------------------
    def window(self, columns: dict[str, Any] | None = None) -> pd.DataFrame:
        """A window frame from plain columns (a snapshot's, a row log's); empty without them."""
        columns = columns or {}
        return pd.DataFrame({c: np.asarray(columns.get(c, []), dtype=object if c in self.categorical else float)
                             for c in self.columns})

    def rows(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """(the rows as window columns, which input rows were kept): numbers as floats, categories as text
        (anything else missing), labels per task (the class index for multiclass; unfit labels dropped)."""
        if self.plain:
            return rows[self.columns].astype(float).reset_index(drop=True), np.ones(len(rows), dtype=bool)
        out = {EVENT_TIME: pd.to_numeric(as_series(rows[EVENT_TIME]), errors="coerce").to_numpy(dtype=float)}
        for f in self.features:
            s = as_series(rows[f])
            if f in self.categorical:
                missing = s.isna().to_numpy(dtype=bool)
                bad = missing | not_of_type(s, missing, text_only=True)
                out[f] = np.where(bad, None, s.to_numpy(dtype=object))
            else:
                out[f] = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        out[LABEL], keep = self.labels_of(rows[LABEL])
        self.bad_labels += int((~keep).sum())
        return pd.DataFrame(out)[keep].reset_index(drop=True), keep

    def labels_of(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """(label per row as a float, which rows fit the task): a numeric multiclass column holds class
        indices (what ``schema.check_columns`` gives), a text one class names (encoded against the classes)."""
        s = as_series(values)
        if self.spec.task is Task.MULTICLASS and pd.api.types.is_numeric_dtype(s.dtype):
            y = s.to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(y) & (y == np.floor(y)) & (y >= 0) & (y < len(self.labels))
            return np.where(ok, y, np.nan), ok
        y, why = check_labels(self.spec.task, s, self.labels)
        return y, why == ""

    # -- models ------------------------------------------------------------------------
    def dictionary(self, train: pd.DataFrame, base_meta: dict[str, Any] | None = None) -> CategoryDictionary | None:
        """The category dictionary of a new version: its base version's (incremental), else fitted on ``train``."""
        if not self.categorical:
            return None
        if base_meta is not None and version_task(base_meta).categories is not None:
            return version_task(base_meta).categories
        return CategoryDictionary.fit(train, self.categorical)

    def mismatch(self, meta: dict[str, Any]) -> str:
        """Why a version cannot be scored as this task's live model ('' when it can): task, objective, classes,
        categorical fields (a version from before tasks is binary without categories)."""
        got = version_task(meta)
        if (got.spec.task, got.spec.objective) != (self.spec.task, self.spec.objective):
            return f"task {_named(got.spec)} != {_named(self.spec)}"
        if self.labels is not None and (got.labels is None or got.labels.diff(self.labels)):
            return f"classes: {'no label dictionary' if got.labels is None else got.labels.diff(self.labels)}"
        fields = got.categories.fields if got.categories is not None else []
        return "" if sorted(fields) == sorted(self.categorical) else f"categorical fields {fields} != {self.categorical}"

    def inputs(self, frame: pd.DataFrame, cats: CategoryDictionary | None) -> Any:
        """A booster's input: a float matrix, or a frame with fixed-category columns (unseen -> missing)."""
        if cats is None:
            return frame[self.features].to_numpy(dtype=float)
        return cats.encode(frame[self.features])

    def predict(self, booster: xgb.Booster, frame: pd.DataFrame, cats: CategoryDictionary | None) -> np.ndarray:
        """Probabilities (binary: (n,), multiclass: (n, k)) or values (regression: (n,))."""
        return np.asarray(booster.inplace_predict(self.inputs(frame, cats)), dtype=float)

    def metrics(self, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        """The task's holdout metrics."""
        return self.spec.metrics(y, pred)

    def live_errors(self, y: np.ndarray, pred: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        """Per-row errors for the drift detector: 0/1 for classes; for regression the absolute error in units of
        the version's holdout MAE, so the detector's threshold means the same for any label scale."""
        errors = row_error(self.spec.task, y, pred)
        if self.spec.task is Task.REGRESSION:
            scale = ((meta.get("metrics") or {}).get("holdout") or {}).get("mae")
            if scale is not None and np.isfinite(scale) and scale > 0:
                errors = errors / scale
        return errors

    # -- what a version keeps ------------------------------------------------------------
    def describe(self, cats: CategoryDictionary | None) -> dict[str, Any]:
        """The task, objective, label dictionary (multiclass) and category dictionary of a version's meta."""
        out: dict[str, Any] = {"task": self.spec.task.value, "objective": self.spec.xgb_params(self.n_classes)["objective"]}
        if self.spec.objective == "reg:quantileerror":
            out["quantile_alpha"] = self.spec.quantile_alpha
        if self.labels is not None:
            out["labels"] = self.labels.snapshot()
        if cats is not None:
            out["categories"] = {"categories": cats.snapshot()["categories"]}
        return out

    def reference_prediction(self, pred: np.ndarray) -> dict[str, Any]:
        """What the monitor compares live predictions with: quantiles of the predicted value (binary,
        regression), or each class's share of the predicted classes (multiclass)."""
        if self.spec.task is not Task.MULTICLASS:
            return {"reference_prediction": reference_quantiles(pred)}
        shares = np.bincount(predicted_class(pred), minlength=self.n_classes) / max(len(pred), 1)
        return {"reference_prediction": [], "reference_class_shares": shares.tolist()}

    def verify_sample(self, frame: pd.DataFrame, pred: np.ndarray) -> dict[str, Any]:
        """A fixed sample and its predictions a slot that loads the version must reproduce (categorical values
        as text, None when missing)."""
        if not self.categorical:
            x = frame[self.features].to_numpy(dtype=float).tolist()
        else:
            x = frame[self.features].astype(object).where(frame[self.features].notna(), None).to_numpy().tolist()
        return {"x": x, "p": pred.tolist()}


def _named(spec: TaskSpec) -> str:
    return f"{spec.task.value} ({spec.objective})" if spec.objective else spec.task.value
