"""Desired serving state (which version each slot holds, traffic weights) and the blue-green flip.

``TrafficState`` and ``ReplicaTracker`` are plain classes; ``RolloutControllerActor`` is
the named Ray actor that Router replicas long-poll for the desired state and report to.

Example:
    >>> st = TrafficState()
    >>> st.stage(1)          # nothing live yet: the first version goes to the live slot
    'blue'
    >>> st.stage(2)          # later versions go to the idle slot ...
    'green'
    >>> st.flip("green"); st.weights
    {'blue': 0, 'green': 100}
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray

from streamfit.registry import Registry

SLOTS = ("blue", "green")
CONTROLLER_NAME = "streamfit-rollout"


class TrafficState:
    """Which version each slot should hold and the share of traffic each gets."""

    def __init__(self) -> None:
        self.slots: dict[str, int | None] = {s: None for s in SLOTS}
        self.weights: dict[str, int] = {"blue": 100, "green": 0}
        self.revision = 0
        self.flips = 0

    def live_slot(self) -> str:
        """The slot with the larger weight (blue on a tie)."""
        return max(SLOTS, key=lambda s: (self.weights[s], s == "blue"))

    def idle_slot(self) -> str:
        """The slot that is not live."""
        return SLOTS[1 - SLOTS.index(self.live_slot())]

    def stage(self, version: int) -> str:
        """Ask for ``version`` in the idle slot (the live one if nothing is live yet); returns the slot."""
        live = self.live_slot()
        slot = live if self.slots[live] is None else self.idle_slot()
        self.slots[slot] = version
        self.revision += 1
        return slot

    def flip(self, slot: str) -> None:
        """Send all traffic to ``slot``."""
        if self.weights[slot] != 100:
            self.flips += 1
        self.weights = {s: (100 if s == slot else 0) for s in SLOTS}
        self.revision += 1

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view sent to Routers."""
        return {"slots": dict(self.slots), "weights": dict(self.weights), "revision": self.revision,
                "live_slot": self.live_slot(), "flips": self.flips}


class ReplicaTracker:
    """What each Router replica reported holding, and when it last reported."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self.reports: dict[str, tuple[float, dict[str, int | None]]] = {}

    def report(self, replica_id: str, held: dict[str, int | None], now: float) -> None:
        """Record a replica's held versions."""
        self.reports[replica_id] = (now, dict(held))

    def alive(self, now: float) -> dict[str, dict[str, int | None]]:
        """Replicas that reported within the TTL, with what they hold."""
        return {r: held for r, (t, held) in self.reports.items() if now - t <= self.ttl_s}

    def all_hold(self, slot: str, version: int, now: float) -> bool:
        """True when at least one replica is alive and every live replica holds ``version`` in ``slot``."""
        alive = self.alive(now)
        return bool(alive) and all(h.get(slot) == version for h in alive.values())


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RolloutControllerActor:
    """Named actor owning the desired traffic state; Routers long-poll it and report back."""

    def __init__(self, registry_uri: str, flip_timeout_s: float = 60.0) -> None:
        self.registry = Registry(registry_uri)
        self.state = TrafficState()
        self.replicas = ReplicaTracker()
        self.flip_timeout_s = flip_timeout_s
        self._changed = asyncio.Event()
        self._deploy_lock = asyncio.Lock()
        self.deploys: list[dict[str, Any]] = []

    def _bump(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def desired(self, after_revision: int = -1, timeout_s: float = 1.0) -> dict[str, Any]:
        """Desired state; waits up to ``timeout_s`` for a revision newer than ``after_revision``."""
        if self.state.revision <= after_revision:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        return self.state.to_dict()

    def report(self, replica_id: str, held: dict[str, int | None]) -> None:
        """A Router replica reports the versions it holds."""
        self.replicas.report(replica_id, held, time.time())

    async def deploy(self, version: int, reason: str = "", actor: str = "trainer") -> dict[str, Any]:
        """Blue-green: load ``version`` into the idle slot on every replica, then move all traffic to it."""
        async with self._deploy_lock:
            started = time.time()
            slot = self.state.stage(version)
            self._bump()
            await asyncio.to_thread(self.registry.audit, "deploy", actor=actor, version=version, slot=slot,
                                    reason=reason)
            deadline = started + self.flip_timeout_s
            while not self.replicas.all_hold(slot, version, time.time()):
                if time.time() > deadline:
                    outcome = {"version": version, "slot": slot, "ok": False, "reason": "replicas did not load in time"}
                    await asyncio.to_thread(self.registry.audit, "deploy_failed", actor=actor, version=version,
                                            slot=slot, reason=outcome["reason"])
                    self.deploys.append(outcome)
                    return outcome
                await asyncio.sleep(0.05)
            previous = self.state.slots[self.state.live_slot()] if self.state.live_slot() != slot else None
            self.state.flip(slot)
            self._bump()
            await asyncio.to_thread(self._record_flip, version, previous, slot, reason, actor)
            outcome = {"version": version, "slot": slot, "ok": True, "seconds": round(time.time() - started, 3)}
            self.deploys.append(outcome)
            return outcome

    def _record_flip(self, version: int, previous: int | None, slot: str, reason: str, actor: str) -> None:
        if previous is not None:
            self.registry.set_alias("previous", previous, actor=actor, reason=reason)
        self.registry.set_alias("live", version, actor=actor, reason=reason)
        self.registry.audit("traffic", actor=actor, version=version, slot=slot, weights=self.state.weights,
                            reason=reason)

    def status(self) -> dict[str, Any]:
        """Desired state, what each live replica holds, and the deploy history."""
        now = time.time()
        return {**self.state.to_dict(), "replicas": self.replicas.alive(now), "deploys": list(self.deploys)}
