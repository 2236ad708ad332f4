"""How good a model's predictions are: the metrics every plane judges a model by (gate, canary, monitor, bench).

Which library computes what, and why:

- AUC is the Mann-Whitney U statistic over ``n_pos * n_neg`` pairs, ties counted half:
  ``scipy.stats.mannwhitneyu`` computes exactly that (scipy is already installed with XGBoost).
  scikit-learn is not a dependency; river's ``ROCAUC`` discretises the curve over a few
  thresholds and its ``RollingROCAUC`` does not average ties, so neither gives the same figure.
- Accuracy (threshold 0.5) and logloss stay one numpy line each: river's ``Accuracy`` wants
  labels, not probabilities, and its ``LogLoss`` clamps at 1e-15 where this module clamps at
  1e-7 (a confident wrong prediction would weigh twice as much), and both update row by row
  in Python where numpy scores a whole window at once.

Example:
    >>> import numpy as np
    >>> m = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.4, 0.1]))
    >>> m["accuracy"], m["auc"], m["n"]
    (0.75, 1.0, 4)
    >>> labelled_scores(np.array([0, 1]), np.array([0.3, 0.6]))["labelled"]
    2
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamfit.task import TaskSpec

CLIP = 1e-7  # logloss clamps probabilities into [CLIP, 1 - CLIP]


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Accuracy, logloss and AUC of probabilities ``p`` against 0/1 labels ``y``."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0:
        return {"accuracy": float("nan"), "logloss": float("nan"), "auc": float("nan"), "n": 0}
    pc = np.clip(p, CLIP, 1 - CLIP)
    return {
        "accuracy": float(((p >= 0.5) == (y >= 0.5)).mean()),
        "logloss": float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean()),
        "auc": auc(y, p),
        "n": int(len(y)),
    }


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic, ties averaged); nan with one class only."""
    from scipy.stats import mannwhitneyu  # imported on first use: scipy.stats takes seconds to import

    pos = np.asarray(y) >= 0.5
    p = np.asarray(p, dtype=float)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # The statistic does not depend on the p-value's method; "asymptotic" skips the exact one's cost.
    u = mannwhitneyu(p[pos], p[~pos], method="asymptotic").statistic
    return float(u / (n_pos * n_neg))


def labelled_scores(y: np.ndarray, p: np.ndarray, spec: TaskSpec | None = None) -> dict[str, Any]:
    """Labelled count and the task's metrics (binary: accuracy, logloss, AUC; multiclass: accuracy, logloss;
    regression: RMSE, MAE and the pinball loss of a quantile objective): how the monitor reports one version.

    >>> from streamfit.task import Task, TaskSpec
    >>> labelled_scores(np.array([1.0, 3.0]), np.array([2.0, 3.0]), TaskSpec(Task.REGRESSION))
    {'labelled': 2, 'rmse': 0.7071067811865476, 'mae': 0.5}
    """
    if spec is not None and spec.task.value != "binary":
        m = spec.metrics(y, p)
        return {"labelled": int(m.pop("n")), **m}
    m = binary_metrics(y, p)
    return {"labelled": m["n"], "accuracy": m["accuracy"], "logloss": m["logloss"], "auc": m["auc"]}
