"""The rollout races of the hardening issue, through the real controller actor on Ray (no Serve):
a stand-in Router replica reports what it holds, the test sends the operator's commands.

Each test watches for something that must never happen over a window longer than the bake or
the load timeout that would let it happen; a slow machine can only delay it, not fake it."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
import xgboost as xgb

from streamfit.actors.rollout import RolloutControllerActor
from streamfit.registry import Registry
from streamfit.scripts.pipeline import wait_until

TIMEOUT_S = 3.0
CFG = {"steps": [50, 100], "bake_s": 0.5, "min_requests": 0}


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def live_v1(tmp_path):
    """A controller with v1 live on blue and v2, v3 registered."""
    reg = Registry(str(tmp_path))
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(np.eye(4), label=[0, 1, 0, 1]), 1)
    for _ in range(3):
        reg.register(booster, {})
    ctl = RolloutControllerActor.remote(str(tmp_path), TIMEOUT_S, CFG)
    ray.get(ctl.start_rollout.remote(version=1, mode="flip"))
    assert wait_until(lambda: _report(ctl, {"blue": 1})["rollout"]["phase"] == "promoted", timeout_s=30)
    yield reg, ctl
    ray.kill(ctl)


def _report(ctl, held):
    ray.get(ctl.report.remote("router-1", held))
    return ray.get(ctl.status.remote())


def _hold(ctl, held, seconds):
    """The replica reports ``held`` for at least ``seconds``; every status seen on the way."""
    seen, end = [], time.time() + seconds
    while time.time() < end:
        seen.append(_report(ctl, held))
        time.sleep(0.1)
    return seen


def test_an_abort_while_replicas_load_wins(live_v1):
    reg, ctl = live_v1
    ray.get(ctl.start_rollout.remote(version=2))  # a canary into green, not loaded anywhere yet
    assert ray.get(ctl.abort.remote(reason="operator says no"))["phase"] == "aborted"
    seen = _hold(ctl, {"blue": 1, "green": 2}, 6 * CFG["bake_s"] + 2.0)  # the replica finishes loading v2
    assert all(s["weights"] == {"blue": 100, "green": 0} for s in seen)
    assert seen[-1]["rollout"]["phase"] == "aborted" and reg.aliases()["live"] == 1
    assert [(h["version"], h["phase"]) for h in seen[-1]["history"]] == [(1, "promoted"), (2, "aborted")]


def test_a_rollout_superseded_by_a_flip_never_flips_traffic_back(live_v1):
    reg, ctl = live_v1
    ray.get(ctl.start_rollout.remote(version=2))  # a canary into green that no replica will ever load
    ray.get(ctl.start_rollout.remote(version=3, mode="flip"))  # supersedes it; v3 into green
    assert wait_until(lambda: _report(ctl, {"blue": 1, "green": 3})["rollout"]["phase"] == "promoted", timeout_s=30)
    seen = _hold(ctl, {"blue": 1, "green": 3}, TIMEOUT_S + 2.0)  # past v2's load timeout
    assert all(s["weights"] == {"blue": 0, "green": 100} for s in seen)
    assert reg.aliases() == {"live": 3, "previous": 1}
    assert [(h["version"], h["phase"]) for h in seen[-1]["history"]] == [(1, "promoted"), (2, "superseded"),
                                                                          (3, "promoted")]
