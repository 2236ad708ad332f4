"""A regression canary without labels is judged on the shift of its predicted values: both slots bin their values on
the live (older) version's quantile scale, so a candidate predicting on another scale fails the step."""

from __future__ import annotations

import asyncio

import numpy as np
import xgboost as xgb

from streamfit.actors.rollout.analysis import canary_verdict
from streamfit.config import RolloutConfig
from streamfit.psi import reference_quantiles
from streamfit.registry import version_task
from streamfit.serve.answers import TaskAnswers
from streamfit.serve.router import RouterCore
from streamfit.serve.slots import ModelSlot

FEATURES = ["a", "b"]


def _version(shift: float, seed: int) -> tuple[xgb.Booster, dict]:
    """A regression booster of y = 10 a + shift, and the meta the trainer records (its predictions' quantiles)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 2))
    bst = xgb.train({"objective": "reg:squarederror", "max_depth": 3, "nthread": 1},
                    xgb.DMatrix(x, label=10 * x[:, 0] + shift, feature_names=FEATURES), 30)
    return bst, {"task": "regression", "objective": "reg:squarederror",
                 "reference_prediction": reference_quantiles(bst.inplace_predict(x))}


def _core(candidate_shift: float) -> RouterCore:
    versions = {1: _version(0.0, 1), 2: _version(candidate_shift, 2)}

    def loader(slot: str, v: int) -> ModelSlot:
        bst, meta = versions[v]
        return ModelSlot(slot, v, bst, list(FEATURES), task=version_task(meta))

    core = RouterCore(FEATURES, seed=3, answers=TaskAnswers("regression"))
    desired = {"slots": {"blue": 1, "green": 2}, "weights": {"blue": 50, "green": 50}, "revision": 1}
    asyncio.run(core.apply(desired, loader))
    rng = np.random.default_rng(4)
    for _ in range(600):
        core.predict(rng.normal(size=(1, 2)))
    return core


def _verdict(core: RouterCore) -> tuple[bool, list[str], dict]:
    stats = {s: st.to_dict() for s, st in core.stats_by_slot.items()}
    return canary_verdict(stats["blue"], stats["green"], None, None, RolloutConfig())


def test_a_candidate_predicting_on_another_scale_fails_on_prediction_shift():
    core = _core(candidate_shift=8.0)
    assert core.value_scale == version_task(_version(0.0, 1)[1]).value_edges  # the live (older) version's scale
    passed, reasons, figures = _verdict(core)
    assert not passed and any("prediction PSI" in r for r in reasons), reasons
    assert figures["judged_on"] == "prediction shift"


def test_a_candidate_predicting_like_live_passes_the_shift_check():
    passed, reasons, figures = _verdict(_core(candidate_shift=0.0))
    assert passed, reasons
    assert figures["prediction_psi"] is not None and figures["prediction_psi"] < RolloutConfig().max_prediction_psi


def test_slot_deployments_take_the_scale_from_the_registry():
    """With isolated slots the Router holds no booster: the older version's edges come through ``edges_of``."""
    edges = {1: [0.0, 1.0, 2.0, 3.0], 2: [5.0, 6.0, 7.0, 8.0]}
    core = RouterCore(FEATURES, answers=TaskAnswers("regression"), remote={"blue": None, "green": None})
    core.edges_of = edges.get
    asyncio.run(core.apply({"slots": {"blue": 2, "green": 1}, "weights": {"blue": 90, "green": 10}, "revision": 1},
                           lambda s, v: None))
    assert core.value_scale == edges[1]
