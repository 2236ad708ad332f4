"""The shared statistics (no Ray): the metrics equal the hand-written formulas they replaced, and one
PSI serves feature drift and the canary's prediction shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.rollout.analysis import prediction_psi
from streamfit.metrics import auc, binary_metrics, labelled_scores
from streamfit.psi import binned, psi, psi_against, psi_by_feature, reference_quantiles
from streamfit.request_stats import SlotStats


def old_binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The formulas ``streamfit.metrics`` had before it used a library (kept here as the reference)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    pos = y >= 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = pd.Series(p).rank(method="average").to_numpy()
    old_auc = float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)) if n_pos and n_neg \
        else float("nan")
    return {"accuracy": float(((p >= 0.5) == (y >= 0.5)).mean()),
            "logloss": float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean()), "auc": old_auc, "n": len(y)}


def old_prediction_psi(live: list[int], cand: list[int]) -> float | None:
    """The canary's PSI before there was one PSI."""
    a, b = (np.asarray(h, dtype=float).reshape(10, -1).sum(axis=1) for h in (live, cand))
    if a.sum() == 0 or b.sum() == 0:
        return None
    a = (a + 0.5) / (a.sum() + 0.5 * len(a))
    b = (b + 0.5) / (b.sum() + 0.5 * len(b))
    return float(np.sum((b - a) * np.log(b / a)))


@pytest.mark.parametrize("seed", range(12))
def test_metrics_equal_the_old_formulas_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5000))
    y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(float)
    p = rng.random(n)
    if seed % 3 == 0:
        p = np.round(p, 1)  # many ties
    if seed % 4 == 1:
        p[: n // 10] = rng.choice([0.0, 1.0], n // 10)  # saturated probabilities (the logloss clip)
    new, old = binary_metrics(y, p), old_binary_metrics(y, p)
    assert new["n"] == old["n"] == n
    for key in ("accuracy", "logloss", "auc"):
        assert new[key] == pytest.approx(old[key], abs=1e-9, nan_ok=True), key


def test_auc_edge_cases():
    assert np.isnan(auc(np.ones(5), np.linspace(0, 1, 5)))  # one class only
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert np.isnan(binary_metrics(np.array([]), np.array([]))["accuracy"])
    assert list(labelled_scores(np.array([0, 1]), np.array([0.2, 0.7]))) == ["labelled", "accuracy", "logloss", "auc"]


def test_psi_is_zero_for_equal_histograms_and_grows_with_the_shift():
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([1000, 2000, 3000], [100, 200, 300]) < 0.001  # smoothing weighs less as counts grow
    assert psi([0, 0], [1, 1]) is None and psi([1, 1], []) is None
    small, large = psi([50, 50], [40, 60]), psi([50, 50], [10, 90])
    assert 0 < small < large
    assert np.isfinite(psi([100, 0], [0, 100]))  # empty bins are smoothed, not log(0)


@pytest.mark.parametrize("seed", range(6))
def test_the_canary_psi_is_the_one_psi_unchanged(seed):
    rng = np.random.default_rng(seed)
    live, cand = SlotStats(), SlotStats()
    for p in rng.beta(1, 4, int(rng.integers(0, 300))):
        live.record(0.001, p)
    for p in rng.beta(float(rng.uniform(0.5, 4)), 2, int(rng.integers(1, 300))):
        cand.record(0.001, p)
    a, b = live.to_dict()["preds"], cand.to_dict()["preds"]
    assert prediction_psi(a, b) == pytest.approx(old_prediction_psi(a, b), abs=1e-12, nan_ok=False) \
        if old_prediction_psi(a, b) is not None else prediction_psi(a, b) is None


def test_feature_psi_bins_on_the_reference_quantiles():
    rng = np.random.default_rng(1)
    ref = reference_quantiles(rng.normal(size=4000))
    mass, counts = binned(ref, rng.normal(size=1000))
    assert mass == pytest.approx(np.full(10, 0.1)) and counts.sum() == 1000
    assert psi_against(ref, rng.normal(size=3000)) < 0.02
    assert psi_against(ref, rng.normal(size=3000) + 3.0) > 2.0  # the shift the monitor's alarm test injects
    assert psi_against(ref, np.array([np.nan])) == 0.0 and psi_against([], np.ones(3)) == 0.0


def old_feature_psi(edges: list[float], values: np.ndarray) -> float:
    """Feature drift's PSI before there was one PSI: proportions clipped at 1e-4."""
    mass, counts = binned(edges, values)
    cur = np.clip(counts / counts.sum(), 1e-4, None)
    ref = np.clip(mass, 1e-4, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


@pytest.mark.parametrize("n", [300, 1500, 5000])
def test_feature_psi_moves_little_where_the_thresholds_are(n):
    """Below PSI 1 (where the alarm and refit thresholds sit) add-half smoothing stays within 5% of the
    old clipping; only far shifts with empty bins, far over any threshold, read lower."""
    rng = np.random.default_rng(n)
    ref = reference_quantiles(rng.normal(size=5000))
    for shift in (0.0, 0.2, 0.5, 0.8):
        v = rng.normal(shift, 1.0, size=n)
        assert psi_against(ref, v) == pytest.approx(old_feature_psi(ref, v), rel=0.05, abs=0.002), shift
    far = rng.normal(3.0, 1.0, size=n)
    assert 2.0 < psi_against(ref, far) <= old_feature_psi(ref, far)


def test_psi_by_feature_covers_the_referenced_columns_present():
    values = np.repeat([0.0, 1.0, 2.0], [700, 200, 100])
    ref = reference_quantiles(values)
    frame = pd.DataFrame({"a": values, "b": values[::-1]})
    assert set(psi_by_feature({"a": ref, "c": ref}, frame)) == {"a"}
