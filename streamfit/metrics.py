"""How good a model's predictions are: the metrics every plane judges a model by (gate, canary, monitor, bench).

Example:
    >>> import numpy as np
    >>> m = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.4, 0.1]))
    >>> m["accuracy"], m["auc"], m["n"]
    (0.75, 1.0, 4)
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Accuracy, logloss and AUC of probabilities ``p`` against 0/1 labels ``y``."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0:
        return {"accuracy": float("nan"), "logloss": float("nan"), "auc": float("nan"), "n": 0}
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "accuracy": float(((p >= 0.5) == (y >= 0.5)).mean()),
        "logloss": float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean()),
        "auc": auc(y, p),
        "n": int(len(y)),
    }


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic, ties averaged); nan with one class only."""
    y = np.asarray(y) >= 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(p).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
