"""The TrainerActor on a real local Ray: triggers fire through the actor, the gate's refusals are
audited, and the registry and the trainer's view of it survive restarts of the actors."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import ray

from streamfit.config import TrainerConfig
from streamfit.registry import Registry
from streamfit.actors.rollout.controller import RolloutControllerActor
from streamfit.actors.training.trainer import TrainerActor
from streamfit.scripts.pipeline import wait_until
from test_trainer_policy import FEATURES, OFF, rows


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, namespace="trainer-test", log_to_driver=False)
    yield
    ray.shutdown()


def _send(trainer, frame: pd.DataFrame, chunk: int = 200) -> list[int]:
    out = [ray.get(trainer.add_rows.remote(frame.iloc[i:i + chunk])) for i in range(0, len(frame), chunk)]
    return [v for v in out if v is not None]


def test_triggers_and_gate_through_the_actor(tmp_path):
    cfg = TrainerConfig(**{**OFF, "refit_every_rows": 1000, "drift_detector": "page_hinkley", "window_rows": 2000})
    trainer = TrainerActor.remote(cfg, FEATURES, str(tmp_path), None, None)
    assert _send(trainer, rows(999)) == []
    assert _send(trainer, rows(1, 999, seed=1)) == [1]  # volume, at exactly 1,000 rows
    out = ray.get(trainer.request_refit.remote("by hand"))
    assert out["attempt"]["reason"] == "manual"
    # A window of noise, the newest slice true: the candidate is worse and the gate refuses it.
    ray.get(trainer.add_rows.remote(pd.concat([rows(1600, 3000, noise=True, seed=3), rows(400, 4600, seed=4)],
                                              ignore_index=True)))
    out = ray.get(trainer.request_refit.remote("gate check"))
    assert out["version"] is None and out["attempt"]["why"].startswith("gate:")
    reg = Registry(str(tmp_path))
    assert any(e["event"] == "gate_rejected" for e in reg.audit_log())
    ray.kill(trainer)


def test_drift_alarm_refits_through_the_actor_after_the_change_only(tmp_path):
    cfg = TrainerConfig(**{**OFF, "drift_detector": "page_hinkley"})
    trainer = TrainerActor.remote(cfg, FEATURES, str(tmp_path), None, None)
    ray.get(trainer.add_rows.remote(rows(1000)))
    assert ray.get(trainer.request_refit.remote("first"))["version"] == 1
    assert _send(trainer, rows(3000, 1000, seed=5)) == []  # the live version is right: no alarm
    assert _send(trainer, rows(1000, 4000, flip=True, seed=6))  # the concept flips
    refits = ray.get(trainer.stats.remote())["refits"]
    assert [r["reason"] for r in refits] == ["manual", "drift"]
    assert refits[1]["event_time"] >= 4000
    ray.kill(trainer)


def test_registry_survives_restarts_of_every_actor(tmp_path):
    uri = str(tmp_path)
    cfg = TrainerConfig(**{**OFF, "refit_every_rows": 500})
    controller = RolloutControllerActor.options(name="ctl-restart").remote(uri, 20.0, {"mode": "flip"})
    trainer = TrainerActor.remote(cfg, FEATURES, uri, "ctl-restart", "trainer-test")
    # A stand-in Router replica that loads whatever it is asked to hold.

    def replica_follows() -> bool:
        desired = ray.get(controller.desired.remote(-1, 0.1))
        ray.get(controller.report.remote("replica-1", desired["slots"]))
        return ray.get(controller.status.remote())["flips"] >= 1

    assert _send(trainer, rows(1200)) == [1, 2]  # volume fires at 600 and 1,200 rows
    reg = Registry(uri)
    # Both versions were promoted (v1's flip alone satisfied a wait on flips, and v2's aliases came later).
    assert wait_until(lambda: replica_follows() and reg.aliases().get("live") == 2, timeout_s=300)
    before = (reg.version_numbers(), reg.aliases(), reg.audit_log())
    assert before[1]["live"] == 2 and before[1]["previous"] == 1
    actors = (trainer, controller)
    _pid = lambda _self: os.getpid()  # noqa: E731  a lambda travels by value (this test module is not on the workers' path)
    pids = [ray.get(a.__ray_call__.remote(_pid)) for a in actors]
    for actor in actors:
        ray.kill(actor, no_restart=False)
    # Ray restarts both (max_restarts); they rebuild from the registry. ray.kill is asynchronous: an answer
    # from the old process does not count, so each reply is taken only from a process with a new pid.
    replies: dict[int, dict] = {}

    def restarted(i: int) -> bool:
        actor = actors[i]
        try:
            if ray.get(actor.__ray_call__.remote(_pid), timeout=60) == pids[i]:
                return False
            replies[i] = ray.get(actor.stats.remote() if actor is trainer else actor.status.remote(), timeout=60)
            return True
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return False  # still restarting

    assert wait_until(lambda: all(restarted(i) for i in range(len(actors))), timeout_s=120)
    assert replies[0]["live_version"] == 2
    assert replies[1]["slots"]["green"] == 2  # the controller resumed its persisted state
    after = Registry(uri)
    assert (after.version_numbers(), after.aliases()) == before[:2]
    assert after.audit_log()[: len(before[2])] == before[2]
    x = rows(20, seed=9)[FEATURES].to_numpy()
    np.testing.assert_array_equal(after.load(2)[0].inplace_predict(x), reg.load(2)[0].inplace_predict(x))
    for actor in (trainer, controller):
        ray.kill(actor)


@pytest.mark.parametrize("trigger, cfg, quiet, firing", [
    ("time", {"refit_every_s": 1000.0}, lambda: rows(900, 1000, seed=40), lambda: rows(20, 2500, seed=41)),
    ("performance", {"accuracy_below": 0.7, "accuracy_window": 300},
     lambda: rows(600, 1000, seed=42), lambda: rows(600, 1600, flip=True, seed=43)),
    ("psi", {"psi_above": 0.3}, lambda: rows(1000, 1000, seed=44), lambda: rows(1000, 2000, shift=3.0, seed=45)),
])
def test_each_remaining_trigger_fires_through_the_actor_and_only_then(tmp_path, trigger, cfg, quiet, firing):
    trainer = TrainerActor.remote(TrainerConfig(**{**OFF, **cfg}), FEATURES, str(tmp_path), None, None)
    ray.get(trainer.add_rows.remote(rows(1000)))
    assert ray.get(trainer.request_refit.remote("first"))["version"] == 1
    assert _send(trainer, quiet()) == []  # a stream built not to fire it
    assert _send(trainer, firing())  # … and one built to fire it
    refits = ray.get(trainer.stats.remote())["refits"]
    assert [r["reason"] for r in refits][:2] == ["manual", trigger]
    ray.kill(trainer)
