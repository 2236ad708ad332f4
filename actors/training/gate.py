"""The gate: is a candidate close enough to live, who got which rows right, and the no_change baseline model
a fitted candidate must beat (``fit_in_process`` fits both on one process).

Example:
    >>> better_or_close("logloss", 0.30, 0.28, margin=0.05), better_or_close("auc", 0.80, 0.90, margin=0.05)
    (True, False)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
import xgboost as xgb

from streamfit.schema import LABEL
from streamfit.task import Task, higher_is_better, row_error

NO_CHANGE_FEATURE = "label_last"  # the entity's previous label (label history), what no_change predicts
NO_CHANGE_ROUNDS = 20  # calibrated: at eta 0.2, 99 % of the way to the best margin (at 0.3, 99.9 %)


Fitter = Callable[[pd.DataFrame, list[str], dict[str, Any], int, xgb.Booster | None], xgb.Booster]


def fit_in_process(train: pd.DataFrame, features: list[str], params: dict[str, Any], rounds: int,
                   base: xgb.Booster | None) -> xgb.Booster:
    """xgboost.train on one process; continues ``base`` with ``rounds`` new trees when given. Categorical
    columns (pandas categoricals) go to XGBoost as native categories."""
    if any(isinstance(train[f].dtype, pd.CategoricalDtype) for f in features):
        dtrain = xgb.DMatrix(train[features], label=train[LABEL].to_numpy(), enable_categorical=True)
    else:
        dtrain = xgb.DMatrix(train[features].to_numpy(dtype=float), label=train[LABEL].to_numpy(),
                             feature_names=features)
    return xgb.train(params, dtrain, num_boost_round=rounds, xgb_model=base)


def better_or_close(metric: str, candidate: float, live: float, margin: float) -> bool:
    """The gate: is the candidate at most ``margin`` worse than live on ``metric`` (a loss or a score)?

    >>> better_or_close("rmse", 2.1, 2.0, margin=0.05), better_or_close("accuracy", 0.80, 0.84, margin=0.05)
    (False, True)
    """
    if np.isnan(live):
        return True
    if np.isnan(candidate):
        return False
    if not higher_is_better(metric):
        return candidate <= live + margin
    return candidate >= live - margin


def paired_wins(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, task: Task | str = Task.BINARY) -> tuple[int, int]:
    """Rows ``a`` got right and ``b`` wrong, and the reverse (threshold 0.5; multiclass: the likeliest class;
    regression: rows where ``a`` is strictly closer to the label than ``b``, and the reverse).

    >>> paired_wins(np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.6]), np.array([0.1, 0.3, 0.8, 0.4]))
    (1, 2)
    >>> paired_wins(np.array([1.0, 2.0, 3.0]), np.array([1.1, 2.5, 3.0]), np.array([1.5, 2.1, 3.0]), "regression")
    (1, 1)
    """
    if Task(task) is not Task.BINARY:
        err_a, err_b = row_error(task, y, p_a), row_error(task, y, p_b)
        return int((err_a < err_b).sum()), int((err_b < err_a).sum())
    y = np.asarray(y) >= 0.5
    a, b = (np.asarray(p_a) >= 0.5) == y, (np.asarray(p_b) >= 0.5) == y
    return int((a & ~b).sum()), int((b & ~a).sum())


def no_change_candidate(train: pd.DataFrame, features: list[str], params: dict[str, Any]) -> xgb.Booster | None:
    """The no_change baseline as a servable model: trees on the entity's previous label alone (every other
    column blanked, so no tree reads it); None without a label-history feature."""
    if NO_CHANGE_FEATURE not in features:
        return None
    masked = train.copy()
    blank = [f for f in features if f != NO_CHANGE_FEATURE]
    masked[blank] = np.nan
    for f in blank:  # a categorical column stays one (all missing): the booster takes the same input types
        if isinstance(train[f].dtype, pd.CategoricalDtype):
            masked[f] = pd.Categorical.from_codes(np.full(len(masked), -1), dtype=train[f].dtype)
    # A quarter of the rows again without the previous label: an entity with none yet gets the
    # window's majority (trained on present values only, XGBoost would send it down one side).
    unknown = masked.iloc[::4].assign(**{NO_CHANGE_FEATURE: np.nan})
    masked = pd.concat([masked, unknown], ignore_index=True)
    params = {**params, "max_depth": 1, "min_child_weight": 1.0}
    return fit_in_process(masked, features, params, NO_CHANGE_ROUNDS, None)  # tiny: never distributed
