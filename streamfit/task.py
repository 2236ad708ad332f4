"""What a model predicts: the task vocabulary (binary, multiclass, regression) and its dictionaries.

Per task, one place says the XGBoost objective and eval metric, the prediction's shape, the
metric a gate or a canary analysis judges by (and whether higher is better), the per-row error
drift detectors watch (0/1 error for classes, absolute error for values), how a label is checked
(a reason per bad row, vectorised), and the metrics a version is reported with
(``task_metrics``; binary reuses ``streamfit.metrics``).

The label and category dictionaries a version keeps (``LabelDictionary``, ``CategoryDictionary``)
live in ``streamfit.dictionaries``. Nothing here imports Ray or XGBoost, and numpy and pandas only when
a function needs them: the config (``model.task``) speaks this vocabulary, and the CLI loads the
config without them.

Example:
    >>> import numpy as np
    >>> from streamfit.dictionaries import LabelDictionary
    >>> spec = TaskSpec(Task.REGRESSION, objective="reg:absoluteerror")
    >>> spec.xgb_params()["objective"], spec.gate_metric, higher_is_better(spec.gate_metric)
    ('reg:absoluteerror', 'mae', False)
    >>> y, why = check_labels(Task.REGRESSION, ["2.5", "abc", float("inf"), None])
    >>> float(y[0]), why.tolist()
    (2.5, ['', 'bad_label:wrong_type', 'bad_label:non_finite', 'bad_label:missing'])
    >>> check_labels(Task.MULTICLASS, ["dog", "yak"], LabelDictionary.fit(["cat", "dog"]))[1].tolist()
    ['', 'bad_label:unknown_class']
    >>> task_metrics(Task.REGRESSION, np.array([1.0, 3.0]), np.array([2.0, 3.0]))
    {'rmse': 0.7071067811865476, 'mae': 0.5, 'n': 2}
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from streamfit.dictionaries import LabelDictionary

__all__ = ["Task", "TaskSpec", "METRICS", "REGRESSION_OBJECTIVES", "higher_is_better", "predicted_class", "row_error",
           "row_values", "metric_of_mean", "task_metrics", "check_labels"]


class Task(str, Enum):
    """The kind of label a model learns: a 0/1 outcome, one of several classes, or a quantity."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


# metric name -> higher is better, per task (gates, canary analyses and refit triggers pick from these)
METRICS: dict[Task, dict[str, bool]] = {
    Task.BINARY: {"accuracy": True, "logloss": False, "auc": True},
    Task.MULTICLASS: {"accuracy": True, "logloss": False},
    Task.REGRESSION: {"rmse": False, "mae": False, "pinball": False},
}
# regression objective -> (the metric it minimises, XGBoost's eval_metric for it)
REGRESSION_OBJECTIVES: dict[str, tuple[str, str]] = {
    "reg:squarederror": ("rmse", "rmse"),
    "reg:absoluteerror": ("mae", "mae"),
    "reg:quantileerror": ("pinball", "quantile"),
}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is a better model (accuracy, AUC) or a worse one (losses)."""
    for per_task in METRICS.values():
        if metric in per_task:
            return per_task[metric]
    raise ValueError(f"unknown metric {metric!r}")


@dataclass(frozen=True)
class TaskSpec:
    """A task and, for regression, the objective (and the quantile a quantile objective fits)."""

    task: Task = Task.BINARY
    objective: str | None = None  # regression only; None = reg:squarederror
    quantile_alpha: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", Task(self.task))
        if self.task is Task.REGRESSION:
            obj = self.objective or "reg:squarederror"
            if obj not in REGRESSION_OBJECTIVES:
                raise ValueError(f"regression objective {obj!r}: one of {', '.join(REGRESSION_OBJECTIVES)}")
            object.__setattr__(self, "objective", obj)
        elif self.objective is not None:
            raise ValueError(f"objective {self.objective!r} is chosen for regression only, not {self.task.value}")
        if not 0.0 < self.quantile_alpha < 1.0:
            raise ValueError(f"quantile_alpha {self.quantile_alpha}: must be in (0, 1)")

    def xgb_params(self, n_classes: int | None = None) -> dict[str, Any]:
        """XGBoost's objective, eval metric (and num_class / quantile_alpha) for this task.

        >>> TaskSpec(Task.MULTICLASS).xgb_params(n_classes=3)
        {'objective': 'multi:softprob', 'eval_metric': 'mlogloss', 'num_class': 3}
        """
        if self.task is Task.BINARY:
            return {"objective": "binary:logistic", "eval_metric": "logloss"}
        if self.task is Task.MULTICLASS:
            if n_classes is None or n_classes < 2:
                raise ValueError(f"multiclass needs at least 2 classes, got {n_classes}")
            return {"objective": "multi:softprob", "eval_metric": "mlogloss", "num_class": int(n_classes)}
        params: dict[str, Any] = {"objective": self.objective, "eval_metric": REGRESSION_OBJECTIVES[self.objective][1]}
        if self.objective == "reg:quantileerror":
            params["quantile_alpha"] = self.quantile_alpha
        return params

    def metric_names(self) -> list[str]:
        """The metrics this task reports, a gate may judge by (pinball: only with the quantile objective).

        >>> TaskSpec(Task.REGRESSION).metric_names()
        ['rmse', 'mae']
        """
        return [m for m in METRICS[self.task] if m != "pinball" or self.objective == "reg:quantileerror"]

    @property
    def gate_metric(self) -> str:
        """The metric a gate and a canary analysis judge this task by (the objective's own loss)."""
        if self.task is Task.REGRESSION:
            return REGRESSION_OBJECTIVES[self.objective][0]
        return "logloss"

    @property
    def canary_metric(self) -> str:
        """The metric a rollout judges a candidate by on labelled requests: accuracy for classes (who was right
        on each request), the objective's loss for regression.

        >>> TaskSpec(Task.MULTICLASS).canary_metric, TaskSpec(Task.REGRESSION).canary_metric
        ('accuracy', 'rmse')
        """
        return self.gate_metric if self.task is Task.REGRESSION else "accuracy"

    def row_values(self, metric: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """``row_values`` for this task (the pinball loss at this spec's quantile)."""
        return row_values(self.task, metric, y, pred, self.quantile_alpha)

    def prediction_shape(self, n: int, n_classes: int | None = None) -> tuple[int, ...]:
        """Shape of ``Booster.predict`` on ``n`` rows: a probability per class for multiclass, else one number."""
        return (n, int(n_classes or 0)) if self.task is Task.MULTICLASS else (n,)

    def row_error(self, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Per-row error for drift detectors: 0/1 (wrong class) for classification, |y - pred| for regression."""
        return row_error(self.task, y, pred)

    def metrics(self, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        """``task_metrics`` for this task (with the pinball loss when the objective is a quantile's)."""
        alpha = self.quantile_alpha if self.objective == "reg:quantileerror" else None
        return task_metrics(self.task, y, pred, quantile_alpha=alpha)


# -- per-row errors and metrics ----------------------------------------------------------------

def predicted_class(pred: np.ndarray) -> np.ndarray:
    """Class index of each row of multiclass probabilities (n, k) (ties: the lowest index)."""
    import numpy as np

    return np.asarray(pred, dtype=float).argmax(axis=1)


def row_error(task: Task, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row error as floats: 0/1 error (binary at 0.5, multiclass by argmax), absolute error for regression.

    >>> import numpy as np
    >>> row_error(Task.MULTICLASS, np.array([0, 2]), np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3]])).tolist()
    [0.0, 1.0]
    """
    import numpy as np

    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    task = Task(task)
    if task is Task.BINARY:
        return ((pred >= 0.5) != (y >= 0.5)).astype(float)
    if task is Task.MULTICLASS:
        return (predicted_class(pred) != y).astype(float)
    return np.abs(y - pred)


def row_values(task: Task, metric: str, y: np.ndarray, pred: np.ndarray, quantile_alpha: float = 0.5) -> np.ndarray:
    """Per-row values whose mean is ``metric`` (``metric_of_mean`` takes the root for RMSE): 1/0 right for
    accuracy, -log p(true class) for logloss, squared, absolute or pinball error for rmse, mae, pinball.

    >>> import numpy as np
    >>> row_values(Task.REGRESSION, "rmse", np.array([1.0, 3.0]), np.array([2.0, 3.0])).tolist()
    [1.0, 0.0]
    >>> row_values(Task.MULTICLASS, "logloss", np.array([1]), np.array([[0.5, 0.5]])).round(3).tolist()
    [0.693]
    """
    import numpy as np

    from streamfit.metrics import CLIP

    task = Task(task)
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    if metric == "accuracy":
        return 1.0 - row_error(task, y, pred)
    if metric == "logloss":
        if task is Task.MULTICLASS:
            return -np.log(np.clip(pred[np.arange(len(y)), y.astype(np.int64)], CLIP, 1.0))
        pc = np.clip(pred, CLIP, 1 - CLIP)
        return -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    err = y - pred
    if metric == "rmse":
        return err ** 2
    if metric == "mae":
        return np.abs(err)
    if metric == "pinball":
        return np.maximum(quantile_alpha * err, (quantile_alpha - 1) * err)
    raise ValueError(f"no per-row values for metric {metric!r}")


def metric_of_mean(metric: str, mean: float) -> float:
    """The metric from the mean of its ``row_values`` (the root of the mean squared error for RMSE)."""
    import math

    return math.sqrt(mean) if metric == "rmse" and mean >= 0 else mean


def task_metrics(task: Task, y: np.ndarray, pred: np.ndarray, quantile_alpha: float | None = None) -> dict[str, float]:
    """How good ``pred`` is against labels ``y`` for ``task``: accuracy/logloss/AUC (binary), accuracy/logloss
    (multiclass, ``y`` class indices, ``pred`` (n, k) probabilities), RMSE/MAE (+ pinball at ``quantile_alpha``)."""
    import numpy as np

    from streamfit.metrics import CLIP, binary_metrics

    task = Task(task)
    if task is Task.BINARY:
        return binary_metrics(y, pred)
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    n = len(y)
    if task is Task.MULTICLASS:
        if n == 0:
            return {"accuracy": float("nan"), "logloss": float("nan"), "n": 0}
        p_true = np.clip(pred[np.arange(n), y.astype(np.int64)], CLIP, 1.0)
        return {"accuracy": float((predicted_class(pred) == y).mean()), "logloss": float(-np.log(p_true).mean()),
                "n": n}
    out: dict[str, float] = {"rmse": float("nan"), "mae": float("nan"), "n": n}
    if n:
        err = y - pred
        out.update(rmse=float(np.sqrt((err ** 2).mean())), mae=float(np.abs(err).mean()))
    if quantile_alpha is not None:
        out["pinball"] = float(np.maximum(quantile_alpha * err, (quantile_alpha - 1) * err).mean()) if n else float("nan")
    return out


def check_labels(task: Task, values: Any, labels: LabelDictionary | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(label per row as a float, NaN when bad; reason per row, '' when fine) for ``task``.

    Binary wants 0/1 (or booleans) and names every other value ``bad_label``, as ``schema.validate``
    does; regression wants a finite number; multiclass wants a class of ``labels`` and gives its
    index. Reasons: ``bad_label:missing``, ``:wrong_type``, ``:non_finite``, ``:unknown_class``.
    """
    import numpy as np
    import pandas as pd

    from streamfit.dictionaries import BAD_LABEL, as_series, first_reasons, label_reasons, screen_labels

    task = Task(task)
    if task is Task.MULTICLASS:
        if labels is None:
            raise ValueError("multiclass labels are checked against a LabelDictionary")
        return labels.encode(values)
    s = as_series(values)
    if task is Task.BINARY:  # as schema.validate parses labels: numbers, numeric text and booleans
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~((num == 0.0) | (num == 1.0))
        return np.where(bad, np.nan, num), first_reasons(len(s), [(bad, BAD_LABEL)])
    num, missing, wrong = screen_labels(s, text_ok=False)
    reason = label_reasons(num, missing, wrong)
    return np.where(reason == "", num, np.nan), reason
