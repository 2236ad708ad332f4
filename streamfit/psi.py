"""Distribution shift: reference quantiles kept with a model, and the population stability index (PSI).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = reference_quantiles(rng.normal(size=5000))
    >>> round(psi(ref, rng.normal(size=5000)), 3) < 0.02, psi(ref, rng.normal(2.0, 1.0, size=5000)) > 0.5
    (True, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_BINS = 10
EPS = 1e-4


def reference_quantiles(values: np.ndarray, bins: int = N_BINS) -> list[float]:
    """Bin edges (quantiles) of a feature's training values, stored in the model's metadata."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return []
    return [float(q) for q in np.quantile(v, np.linspace(0, 1, bins + 1))]


def psi(edges: list[float], values: np.ndarray) -> float:
    """PSI of ``values`` against the reference bins (each reference bin holds 1/bins of the mass)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    inner = np.unique(np.asarray(edges[1:-1], dtype=float)) if len(edges) > 2 else np.array([])
    if not len(v) or not len(inner):
        return 0.0
    # With repeated quantiles (discrete features) the reference mass per bin is not uniform:
    # recompute it from the edges' positions in the quantile grid.
    grid = np.linspace(0, 1, len(edges))
    cdf_at = np.interp(inner, np.asarray(edges, dtype=float), grid)
    ref = np.diff(np.concatenate([[0.0], cdf_at, [1.0]]))
    cur = np.bincount(np.searchsorted(inner, v, side="right"), minlength=len(inner) + 1) / len(v)
    ref = np.clip(ref, EPS, None)
    cur = np.clip(cur, EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def reference_for(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[float]]:
    """Reference quantiles of each column."""
    return {c: reference_quantiles(frame[c].to_numpy()) for c in columns}


def psi_by_feature(reference: dict[str, list[float]], frame: pd.DataFrame) -> dict[str, float]:
    """PSI of each referenced column present in ``frame``."""
    return {c: psi(edges, frame[c].to_numpy()) for c, edges in reference.items() if c in frame}
