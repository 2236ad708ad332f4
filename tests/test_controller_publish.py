"""The rollout controller publishes a state (``status``, ``desired``) only once the effects of the
transitions that made it are carried out: a client that sees a rollout finished reads its aliases at
once, without waiting. Without Ray: the controller's core with a registry write held on a gate."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from streamfit.actors.rollout import controller as controller_module
from streamfit.actors.rollout.controller import ControllerCore
from streamfit.actors.rollout.transitions import SetAlias
from streamfit.names import SLOTS
from streamfit.registry import Registry

FINISHED = ("promoted", "rolled_back", "aborted", "superseded", "failed")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """No monitor to ask (and no Ray started by looking for one)."""
    def get_actor(name: str, namespace: str | None = None) -> Any:
        raise ValueError(f"no actor {name}")

    monkeypatch.setattr(controller_module.ray, "get_actor", get_actor)


def _version(registry: Registry) -> int:
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(np.eye(4), label=[0, 1, 0, 1]), 1)
    return registry.register(booster, {})


def _report(core: ControllerCore, held: dict[str, int]) -> None:
    stats = {s: {"requests": 0, "errors": 0, "latency": [0] * 57, "preds": [0] * 20} for s in SLOTS}
    core.report("r1", {"held": held, "load_failures": {}, "stats": stats,
                       "verified": {s: (True if s in held else None) for s in SLOTS}})


def _hold_alias_writes(core: ControllerCore) -> tuple[threading.Event, threading.Event]:
    """Alias writes wait for ``gate``; ``entered`` is set when one is waiting."""
    gate, entered = threading.Event(), threading.Event()
    real = core.fx.carry_out

    def carry_out(snap: dict[str, Any], transitions: list[Any]) -> None:
        if any(isinstance(t, SetAlias) for t in transitions):
            entered.set()
            assert gate.wait(60), "the test never opened the gate"
        real(snap, transitions)

    core.fx.carry_out = carry_out  # type: ignore[method-assign]
    return gate, entered


def test_a_rollout_shows_finished_only_after_its_aliases_are_written(tmp_path):
    registry = Registry(str(tmp_path))
    v1 = _version(registry)

    async def scenario() -> tuple[dict, dict, dict, dict[str, int], dict]:
        core = ControllerCore(str(tmp_path), 30.0, {"min_requests": 0})
        await core.start_rollout(v1)
        slot = core.machine.state.rollout.slot
        gate, entered = _hold_alias_writes(core)
        _report(core, {slot: v1})  # the replicas hold the first version: it goes live, its alias is written
        ticking = asyncio.ensure_future(core.tick())
        assert await asyncio.to_thread(entered.wait, 60)
        during, polled = await core.status(), await core.desired(-1, 0.0)
        gate.set()
        await asyncio.wait_for(ticking, 60)
        after = await core.status()
        return during, polled, after, registry.aliases(), await core.desired(-1, 0.0)

    during, polled, after, aliases, desired = asyncio.run(scenario())
    # While the alias is being written, the rollout is not shown finished (nor the flip sent to the Routers).
    assert during["rollout"]["phase"] not in FINISHED and during["deploys"] == []
    assert polled["rollout"]["phase"] == during["rollout"]["phase"]
    # Once shown finished, the aliases are already there: read at once, no waiting.
    assert after["rollout"]["phase"] == "promoted" and aliases == {"live": v1}
    assert after["deploys"][-1]["ok"] and desired["rollout"]["phase"] == "promoted"


def test_status_right_after_each_tick_always_agrees_with_the_aliases(tmp_path):
    registry = Registry(str(tmp_path))
    v1, v2 = _version(registry), _version(registry)

    async def scenario() -> list[tuple[str, int | None]]:
        core = ControllerCore(str(tmp_path), 30.0, {"mode": "flip", "min_requests": 0})
        seen = []
        for version, others in ((v1, {}), (v2, None)):
            await core.start_rollout(version)
            r = core.machine.state.rollout
            held = {r.slot: version, **({} if others is not None else {s: v1 for s in SLOTS if s != r.slot})}
            _report(core, held)
            deadline = time.monotonic() + 60
            while (await core.status())["rollout"]["phase"] not in FINISHED and time.monotonic() < deadline:
                await core.tick()
            status = await core.status()
            seen.append((status["rollout"]["phase"], registry.aliases().get("live")))
        return seen

    assert asyncio.run(scenario()) == [("promoted", v1), ("promoted", v2)]
