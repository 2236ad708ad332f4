"""Distribution shift: reference quantiles kept with a model, and the population stability index (PSI).

One PSI for every shift the system measures: ``psi`` compares two histograms (bin counts), with
add-half smoothing so that an empty bin in a small sample costs a bounded amount instead of
``log(0)``. Feature drift bins the live values on the reference's quantile edges
(``psi_against``); the canary compares the two slots' prediction-score histograms directly. A multiclass
model's prediction shift is its predicted classes' mix against the training shares (``class_shift``: PSI
and a chi-square goodness-of-fit test).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = reference_quantiles(rng.normal(size=5000))
    >>> psi_against(ref, rng.normal(size=5000)) < 0.02, psi_against(ref, rng.normal(2.0, 1.0, size=5000)) > 0.5
    (True, True)
    >>> round(psi([50, 50], [25, 75]), 3), psi([0, 0], [3, 1]) is None
    (0.269, True)
    >>> shift = class_shift([0.5, 0.3, 0.2], [100, 60, 40])
    >>> round(shift["psi"], 6), round(shift["p"], 3)
    (0.0, 1.0)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

N_BINS = 10
SMOOTHING = 0.5  # pseudo-count added to every bin of both histograms (Jeffreys' prior)


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float | None:
    """PSI of the histogram ``actual`` against ``expected`` (bin counts, same bins); None if either is empty."""
    e, a = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    if e.sum() <= 0 or a.sum() <= 0:
        return None
    e = (e + SMOOTHING) / (e.sum() + SMOOTHING * len(e))
    a = (a + SMOOTHING) / (a.sum() + SMOOTHING * len(a))
    return float(np.sum((a - e) * np.log(a / e)))


def reference_quantiles(values: np.ndarray, bins: int = N_BINS) -> list[float]:
    """Bin edges (quantiles) of a feature's training values, stored in the model's metadata."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return []
    return [float(q) for q in np.quantile(v, np.linspace(0, 1, bins + 1))]


def binned(edges: list[float], values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(reference mass, live counts) per bin of the reference's quantile edges; None without bins or values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    inner = np.unique(np.asarray(edges[1:-1], dtype=float)) if len(edges) > 2 else np.array([])
    if not len(v) or not len(inner):
        return None
    # With repeated quantiles (discrete features) the reference mass per bin is not uniform:
    # recompute it from the edges' positions in the quantile grid.
    grid = np.linspace(0, 1, len(edges))
    cdf_at = np.interp(inner, np.asarray(edges, dtype=float), grid)
    mass = np.diff(np.concatenate([[0.0], cdf_at, [1.0]]))
    counts = np.bincount(np.searchsorted(inner, v, side="right"), minlength=len(inner) + 1)
    return mass, counts


def psi_against(edges: list[float], values: np.ndarray) -> float:
    """PSI of ``values`` against a reference's quantile edges (0.0 when there is nothing to compare)."""
    bins = binned(edges, values)
    if bins is None:
        return 0.0
    mass, counts = bins
    # The reference keeps only its quantiles, not its size: weigh it as a sample as large as the live one.
    out = psi(mass * counts.sum(), counts)
    return 0.0 if out is None else out


def reference_for(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[float]]:
    """Reference quantiles of each column."""
    return {c: reference_quantiles(frame[c].to_numpy()) for c in columns}


def psi_by_feature(reference: dict[str, list[float]], frame: pd.DataFrame) -> dict[str, float]:
    """PSI of each referenced column present in ``frame``."""
    return {c: psi_against(edges, frame[c].to_numpy()) for c, edges in reference.items() if c in frame}


def class_shift(shares: Sequence[float], predicted: Sequence[int] | np.ndarray) -> dict[str, float] | None:
    """How far the predicted classes' counts are from the reference shares: PSI, the chi-square statistic and
    its p-value (a class the reference never predicted gets half a row's share, as ``psi`` smooths); None
    without counts or shares."""
    from scipy.stats import chisquare  # imported on first use: scipy.stats takes seconds to import

    counts = np.asarray(predicted, dtype=float)
    ref = np.asarray(shares, dtype=float)
    n = counts.sum()
    if n <= 0 or not len(ref) or ref.sum() <= 0 or len(ref) != len(counts):
        return None
    expected = ref / ref.sum() * n
    expected = np.maximum(expected, SMOOTHING)
    expected *= n / expected.sum()
    stat, p = chisquare(counts, expected)
    return {"psi": psi(ref / ref.sum() * n, counts) or 0.0, "chi2": float(stat), "p": float(p)}
