"""actors/distributed_fit.py on a real local Ray: one 2-worker Ray Train XGBoost fit.

Tolerance: on a held-out set, the distributed booster's accuracy and AUC are each within
0.02 of an in-process ``xgboost.train`` with the same params, rounds and training rows.
Only ONE distributed fit runs in this module (Ray Train start-up takes about a minute or two).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import ray
import xgboost as xgb

from streamfit.actors.training.distributed_fit import DistributedFitError, fit_distributed

FEATURES = ["x0", "x1", "x2", "x3", "x4"]
PARAMS = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "tree_method": "hist", "seed": 7,
          "eval_metric": "logloss"}
ROUNDS = 40
ACC_TOL = 0.02
AUC_TOL = 0.02


def _synthetic(n: int, seed: int) -> pd.DataFrame:
    """A binary problem: logistic of a few features (one non-linear, one interaction) plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    logit = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.8 * x[:, 2] * x[:, 3] + np.sin(2 * x[:, 4]) + rng.normal(0, 0.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    df = pd.DataFrame(x, columns=FEATURES)
    df["label"] = y
    return df


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties given their average rank."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    n_pos, n_neg = y.sum(), (~y).sum()
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_auc_helper_is_right():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(np.array([0, 0, 1, 1]), np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.3, 0.35, 0.8])) == 0.75  # 3 of 4 pairs ordered


def test_bad_input_is_refused_before_starting_anything():
    df = _synthetic(10, 0)
    with pytest.raises(DistributedFitError, match="lacks columns"):
        fit_distributed(df, FEATURES + ["nope"], "label", PARAMS, 5)
    with pytest.raises(DistributedFitError, match="num_workers"):
        fit_distributed(df, FEATURES, "label", PARAMS, 5, num_workers=0)
    with pytest.raises(DistributedFitError, match="cannot be split"):
        fit_distributed(df.head(1), FEATURES, "label", PARAMS, 5, num_workers=2)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_two_worker_fit_predicts_as_well_as_in_process_fit(local_ray, tmp_path):
    train = _synthetic(20_000, seed=1)
    test = _synthetic(10_000, seed=2)
    storage = tmp_path / "raytrain"
    storage.mkdir()

    t0 = time.monotonic()
    dist = fit_distributed(train, FEATURES, "label", PARAMS, ROUNDS, num_workers=2, storage_path=str(storage))
    took = time.monotonic() - t0
    print(f"distributed fit of {len(train)} rows with 2 workers took {took:.1f}s")

    local = xgb.train(PARAMS, xgb.DMatrix(train[FEATURES], label=train["label"]), ROUNDS)

    assert isinstance(dist, xgb.Booster)
    assert dist.num_boosted_rounds() == ROUNDS
    assert dist.feature_names == FEATURES

    dtest = xgb.DMatrix(test[FEATURES])
    y = test["label"].to_numpy()
    p_dist, p_local = dist.predict(dtest), local.predict(dtest)
    acc_dist, acc_local = float(((p_dist > 0.5) == y).mean()), float(((p_local > 0.5) == y).mean())
    auc_dist, auc_local = auc(y, p_dist), auc(y, p_local)
    print(f"accuracy dist {acc_dist:.4f} local {acc_local:.4f}; AUC dist {auc_dist:.4f} local {auc_local:.4f}")

    assert auc_local > 0.8, "the in-process reference itself should learn this problem"
    assert abs(acc_dist - acc_local) <= ACC_TOL
    assert abs(auc_dist - auc_local) <= AUC_TOL
    # the same problem, learnt the same way: the two models mostly agree row by row
    assert float(((p_dist > 0.5) == (p_local > 0.5)).mean()) > 0.9

    # the run's checkpoints were removed once the booster was loaded
    assert list(storage.iterdir()) == []
    # the Ray Train workers are gone: the cluster's CPUs are free again
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == 2
