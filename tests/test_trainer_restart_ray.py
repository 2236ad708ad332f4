"""The TrainerActor killed and restarted by Ray (issue 13 item 13): it comes back with the window of labelled
rows, the policy state and the counters it had, and refits where a trainer that never stopped refits."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import ray

from streamfit.config import TrainerConfig
from streamfit.registry import Registry
from streamfit.actors.training.row_log import RowLog
from streamfit.actors.training.trainer import TrainerActor, TrainerCore, window_rows_kept
from streamfit.scripts.pipeline import wait_until
from test_trainer_policy import FEATURES, OFF, rows

CFG = TrainerConfig(**{**OFF, "refit_every_rows": 700, "min_rows_between": 300, "window_rows": 1500,
                       "drift_detector": "page_hinkley", "num_boost_round": 8})


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, namespace="trainer-restart-test", log_to_driver=False)
    yield
    ray.shutdown()


def chunks(frame: pd.DataFrame, size: int = 150) -> list[pd.DataFrame]:
    return [frame.iloc[i:i + size] for i in range(0, len(frame), size)]


def test_a_killed_trainer_comes_back_with_its_window_and_policy_state(tmp_path):
    before = chunks(pd.concat([rows(1200, seed=1), rows(900, 1200, flip=True, seed=2)], ignore_index=True))
    after = chunks(rows(900, 2100, flip=True, seed=3))
    # The trainer that never stops, in this process, over its own registry and log.
    never = TrainerCore(CFG, FEATURES, Registry(str(tmp_path / "never" / "registry")),
                        row_log=RowLog(str(tmp_path / "never" / "state"), window_rows_kept(CFG)))
    trainer = TrainerActor.remote(CFG, FEATURES, str(tmp_path / "actor" / "registry"), None, None,
                                  state_uri=str(tmp_path / "actor" / "state"))
    for chunk in before:
        assert ray.get(trainer.add_rows.remote(chunk)) == never.add_rows(chunk)
    assert len(never.window()) == 1500 and [r["reason"] for r in never.history][:2] == ["volume", "drift"]

    ray.kill(trainer, no_restart=False)  # Ray restarts it (max_restarts=-1)

    def answer():
        try:
            return ray.get(trainer.stats.remote(), timeout=60)
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return None  # still restarting

    seen: list = []

    def restarted() -> bool:  # the kill is asynchronous: the old instance may answer first
        seen.append(answer())
        return seen[-1] is not None and seen[-1]["row_log"]["resumed"]["state"]

    assert wait_until(restarted, timeout_s=120)
    stats = seen[-1]
    assert stats["row_log"]["resumed"] == {"rows": 1500, "state": True}
    pd.testing.assert_frame_equal(ray.get(trainer.window.remote()), never.window())
    want = never.stats()
    assert (stats["rows_seen"], stats["live_version"], stats["live_accuracy"]) == \
        (want["rows_seen"], want["live_version"], want["live_accuracy"])
    assert [r["reason"] for r in stats["refits"]] == [r["reason"] for r in want["refits"]]
    # The next refits fire at the same rows, with the same reasons, as if it had never stopped.
    for chunk in after:
        assert ray.get(trainer.add_rows.remote(chunk)) == never.add_rows(chunk)
    got = ray.get(trainer.stats.remote())
    assert [(r["reason"], r["version"], r["rows"]) for r in got["refits"]] == \
        [(r["reason"], r["version"], r["rows"]) for r in never.stats()["refits"]]
    pd.testing.assert_frame_equal(ray.get(trainer.window.remote()), never.window())
    ray.kill(trainer)


def test_a_killed_monitor_comes_back_with_its_reference_window_and_alarm(tmp_path):
    from streamfit.actors.monitoring import MonitorActor
    from test_monitor_restart import batches

    cfg = {"window_rows": 1000, "min_rows": 200, "psi_alarm": 0.5, "alarm_triggers_refit": False}
    reg = Registry(str(tmp_path / "registry"))
    trained = TrainerCore(TrainerConfig(**OFF), ["x0", "x1"], reg)
    frame = pd.concat([f for f, _ in batches()[:5]], ignore_index=True).assign(event_time=lambda d: d.index * 1.0)
    trained.add_rows(frame)
    assert trained.request_refit("first") == 1
    reg.set_alias("live", 1)
    monitor = MonitorActor.remote(cfg, str(tmp_path / "registry"), ["x0", "x1"], ["x0"],
                                  state_uri=str(tmp_path / "monitor"))
    for rows_, _ in batches()[:8]:  # the last three shifted: the alarm rises
        ray.get(monitor.observe_rows.remote(rows_))
    ray.get(monitor.sample.remote())  # a sample saves the state
    before = ray.get(monitor.drift.remote())
    assert before["alarm"] and before["version"] == 1 and ray.get(monitor.saved_state.remote())["writes"] == 1
    assert _kill_and_wait_for_a_new_process(monitor)
    assert ray.get(monitor.drift.remote(), timeout=60) == before
    ray.kill(monitor)


def test_a_restarted_monitor_finds_the_planes_it_samples_again_by_name(tmp_path):
    """Handles given with ``attach`` die with the monitor's process; named planes are looked up again, so after
    a restart its samples still carry the trainer's figures and its refit requests still reach the trainer."""
    from streamfit.actors.monitoring import MonitorActor

    trainer = TrainerActor.options(name="reattach-trainer").remote(CFG, FEATURES, str(tmp_path / "registry"), None, None)
    monitor = MonitorActor.remote({}, str(tmp_path / "registry"), FEATURES, FEATURES[:1],
                                  planes={"trainer": "reattach-trainer", "controller": "no-such-actor"})
    assert ray.get(monitor.attached.remote()) == ["trainer"]  # a missing plane is left out, not an error
    assert _kill_and_wait_for_a_new_process(monitor)
    assert ray.get(monitor.attached.remote(), timeout=60) == ["trainer"]
    ray.get(monitor.sample.remote(), timeout=60)  # samples the trainer it found again, without an error
    for actor in (monitor, trainer):
        ray.kill(actor)


def _pid_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=60)


def _kill_and_wait_for_a_new_process(actor) -> bool:
    """Kill ``actor`` (Ray restarts it) and wait until a new process answers: the kill is asynchronous, so the old
    process may answer first."""
    pid = _pid_of(actor)
    ray.kill(actor, no_restart=False)

    def restarted() -> bool:
        try:
            return _pid_of(actor) != pid
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return False

    return wait_until(restarted, timeout_s=120)
