"""The gate's two comparisons: is a candidate close enough to live, and who got which rows right.

Example:
    >>> better_or_close("logloss", 0.30, 0.28, margin=0.05), better_or_close("auc", 0.80, 0.90, margin=0.05)
    (True, False)
"""

from __future__ import annotations

import numpy as np


def better_or_close(metric: str, candidate: float, live: float, margin: float) -> bool:
    """The gate: is the candidate at most ``margin`` worse than live on ``metric``?"""
    if np.isnan(live):
        return True
    if np.isnan(candidate):
        return False
    if metric == "logloss":
        return candidate <= live + margin
    return candidate >= live - margin


def paired_wins(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> tuple[int, int]:
    """Rows ``a`` got right and ``b`` wrong, and the reverse (threshold 0.5).

    >>> paired_wins(np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.6]), np.array([0.1, 0.3, 0.8, 0.4]))
    (1, 2)
    """
    y = np.asarray(y) >= 0.5
    a, b = (np.asarray(p_a) >= 0.5) == y, (np.asarray(p_b) >= 0.5) == y
    return int((a & ~b).sum()), int((b & ~a).sum())
