"""Desired serving state, blue-green rollouts with canary analysis, and the controller that runs them.

``ServingState`` (which version each slot holds, the weights, the rollout in progress) and
``ReplicaTracker`` (what each Router replica reports) are plain classes.
``RolloutControllerActor`` is the named, detached Ray actor that owns the state, persists it
to the registry's storage after every change (a restarted controller resumes the same split
and the same rollout step), answers Routers' long-polls, and runs each rollout:

1. load the candidate into the idle slot on every replica, which checks that it reproduces
   the predictions recorded in the registry for a fixed sample;
2. step the candidate's weight (default 5, 25, 50, 100 %), baking each step and comparing
   candidate with live on that step's requests (error rate, p99 latency, prediction PSI,
   accuracy on labelled requests), optionally pausing for an operator's approval;
3. promote (the old version stays loaded for an instant rollback) or roll back in one step,
   with the reason in the audit log.

Example:
    >>> st = ServingState()
    >>> st.stage(1), st.stage(2)          # the first version goes live at once; later ones to the idle slot
    ('blue', 'green')
    >>> st.set_weights({"blue": 75, "green": 25}); st.weights, st.live_slot()
    ({'blue': 75, 'green': 25}, 'blue')
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from streamfit.config import RolloutConfig
from streamfit.errors import RegistryError
from streamfit.names import MONITOR_NAME, SLOTS, other
from streamfit.registry import Registry, Storage
from streamfit.actors.rollout.analysis import canary_verdict
from streamfit.request_stats import add, empty_stats, minus

log = logging.getLogger("streamfit.rollout")
STATE_FILE = "serving/state.json"


@dataclass
class Rollout:
    """One candidate's way to production."""

    version: int
    slot: str
    live_version: int | None
    steps: list[int]
    bake_s: float
    reason: str
    actor: str
    phase: str = "loading"  # loading, baking, paused, promoted, rolled_back, aborted, superseded
    step: int = 0  # index into steps of the step in progress (or next)
    started: float = field(default_factory=time.time)
    step_started: float | None = None
    baseline: dict[str, Any] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = ""
    approved: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def active(self) -> bool:
        return self.phase in ("loading", "baking", "paused")


class ServingState:
    """Which version each slot should hold, the traffic weights, and the rollout in progress."""

    def __init__(self) -> None:
        self.slots: dict[str, int | None] = {s: None for s in SLOTS}
        self.weights: dict[str, int] = {"blue": 100, "green": 0}
        self.revision = 0
        self.flips = 0
        self.shadow_share = 0.0
        self.rollout: Rollout | None = None
        self.history: list[dict[str, Any]] = []

    def live_slot(self) -> str:
        """The slot with the larger weight (blue on a tie)."""
        return max(SLOTS, key=lambda s: (self.weights[s], s == "blue"))

    def idle_slot(self) -> str:
        """The slot that is not live."""
        return other(self.live_slot())

    def live_version(self) -> int | None:
        """The version in the live slot."""
        return self.slots[self.live_slot()]

    def stage(self, version: int) -> str:
        """Ask for ``version`` in the idle slot (the live one if nothing is live yet); returns the slot."""
        live = self.live_slot()
        slot = live if self.slots[live] is None else self.idle_slot()
        self.slots[slot] = version
        self.revision += 1
        return slot

    def set_weights(self, weights: dict[str, int]) -> None:
        """Set the split (integers summing to 100)."""
        new = {s: int(weights.get(s, 0)) for s in SLOTS}
        if sum(new.values()) != 100 or min(new.values()) < 0:
            raise ValueError(f"weights must be non-negative and sum to 100, got {new}")
        before = self.live_slot()
        if new != self.weights:
            self.weights = new
            self.revision += 1
            if self.live_slot() != before and new[self.live_slot()] == 100:
                self.flips += 1

    def flip(self, slot: str, count: bool = True) -> None:
        """All traffic to ``slot`` (``count``: another version serves now — a promotion or a rollback —
        rather than a canary's share returning to where it was)."""
        if self.weights[slot] != 100:
            self.flips += int(count)
            self.weights = {s: (100 if s == slot else 0) for s in SLOTS}
            self.revision += 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, sent to Routers and persisted."""
        return {"slots": dict(self.slots), "weights": dict(self.weights), "revision": self.revision,
                "live_slot": self.live_slot(), "flips": self.flips, "shadow_share": self.shadow_share,
                "rollout": asdict(self.rollout) if self.rollout else None, "history": list(self.history[-20:])}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ServingState":
        """Rebuild from ``to_dict``."""
        st = cls()
        st.slots = {s: d["slots"].get(s) for s in SLOTS}
        st.weights = {s: int(d["weights"].get(s, 0)) for s in SLOTS}
        st.revision, st.flips = int(d["revision"]), int(d.get("flips", 0))
        st.shadow_share = float(d.get("shadow_share", 0.0))
        st.rollout = Rollout(**d["rollout"]) if d.get("rollout") else None
        st.history = list(d.get("history", []))
        return st


class ReplicaTracker:
    """What each Router replica reported holding (and its request figures), and when."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self.reports: dict[str, tuple[float, dict[str, Any]]] = {}

    def report(self, replica_id: str, report: dict[str, Any], now: float) -> None:
        """Record a replica's report: ``held`` versions, ``verified`` flags, per-slot ``stats``."""
        self.reports[replica_id] = (now, report)

    def alive(self, now: float) -> dict[str, dict[str, Any]]:
        """Reports of replicas heard from within the TTL."""
        return {r: rep for r, (t, rep) in self.reports.items() if now - t <= self.ttl_s}

    def all_hold(self, slot: str, version: int, now: float) -> bool:
        """Some live replica serves ``slot`` and every one that does holds ``version`` in it
        (Router replicas in the default mode; the slot's own replicas with isolated slots)."""
        serving = [rep for rep in self.alive(now).values() if slot in rep["held"]]
        return bool(serving) and all(rep["held"][slot] == version for rep in serving)

    def load_failure(self, slot: str, version: int, now: float) -> str | None:
        """Why some live replica could not load ``version`` into ``slot`` (None if none failed)."""
        for rid, rep in self.alive(now).items():
            failed = rep.get("load_failures", {}).get(slot)
            if failed and failed.get("version") == version:
                return f"replica {rid}: {failed['error']}"
        return None

    def verification(self, slot: str, version: int, now: float) -> tuple[bool, str]:
        """(all replicas verified the version, the first failure message)."""
        for rid, rep in self.alive(now).items():
            v = rep.get("verified", {}).get(slot)
            if v is not None and v is not True and rep["held"].get(slot) == version:
                return False, f"replica {rid}: {v}"
        return True, ""

    def stats(self, now: float) -> dict[str, dict[str, Any]]:
        """Per-slot figures summed over live replicas (keyed slot -> figures)."""
        total = {s: empty_stats() for s in SLOTS}
        for rep in self.alive(now).values():
            for s in SLOTS:
                if s in rep.get("stats", {}):
                    total[s] = add(total[s], rep["stats"][s])
        return total


class StateStore:
    """The serving state as one JSON object beside the registry (written atomically, on object stores too)."""

    def __init__(self, registry_uri: str) -> None:
        self.store = Storage(registry_uri, error=RegistryError, what="serving state")
        self.path = self.store.path(*STATE_FILE.split("/"))

    def load(self) -> ServingState | None:
        """The last saved state, or None."""
        if not self.store.exists(self.path):
            return None
        return ServingState.from_dict(json.loads(self.store.get(self.path)))

    def save(self, state: ServingState) -> None:
        """Replace the saved state."""
        self.store.put(self.path, json.dumps(state.to_dict()).encode())


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RolloutControllerActor:
    """Named actor owning the desired serving state; Routers long-poll it and report back."""

    def __init__(self, registry_uri: str, flip_timeout_s: float = 60.0, rollout: dict[str, Any] | None = None) -> None:
        self.registry = Registry(registry_uri)
        self.store = StateStore(registry_uri)
        self.cfg = RolloutConfig.model_validate(rollout or {})
        self.state = self.store.load() or ServingState()
        if self.state.shadow_share == 0.0:
            self.state.shadow_share = self.cfg.shadow_share
        self.replicas = ReplicaTracker()
        self.flip_timeout_s = flip_timeout_s
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._pending: tuple[int, str, str] | None = None
        self.deploys: list[dict[str, Any]] = []
        if self.state.rollout is not None and self.state.rollout.active:
            # Restarted mid-rollout: go on from the persisted step.
            self._task = asyncio.get_event_loop().create_task(self._drive())

    # -- state plumbing ------------------------------------------------------------------
    def _bump(self) -> None:
        self.store.save(self.state)
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

    def report(self, replica_id: str, report: dict[str, Any]) -> None:
        """A Router replica reports what it holds and its cumulative request figures."""
        if "held" not in report:  # the short form: just the held versions
            report = {"held": report}
        self.replicas.report(replica_id, report, time.time())

    async def status(self) -> dict[str, Any]:
        """Desired state, what each live replica holds, per-slot figures, live accuracy, deploy history."""
        now = time.time()
        alive = self.replicas.alive(now)
        shadow = {"compared": 0, "agreed": 0}
        for rep in alive.values():
            for k in shadow:
                shadow[k] += rep.get("shadow", {}).get(k, 0)
        return {**self.state.to_dict(), "replicas": {r: rep["held"] for r, rep in alive.items()},
                "slot_stats": self.replicas.stats(now), "shadow": shadow, "deploys": list(self.deploys),
                "live_accuracy": await self._per_version(), "rollout_config": self.cfg.model_dump()}

    async def _per_version(self) -> dict[str, Any]:
        try:

            return {str(k): v for k, v in (await ray.get_actor(MONITOR_NAME).per_version.remote()).items()}
        except Exception:  # no monitor: nothing measured
            return {}

    def _audit(self, event: str, **fields: Any) -> None:
        self.registry.audit(event, **fields)

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change rollout settings at run time (validated like the config file)."""
        self.cfg = RolloutConfig.model_validate({**self.cfg.model_dump(), **changes})
        return self.cfg.model_dump()

    # -- commands ------------------------------------------------------------------------
    async def deploy(self, version: int, reason: str = "", actor: str = "trainer") -> dict[str, Any]:
        """A new candidate from the trainer: roll it out (or queue it behind the running rollout)."""
        r = self.state.rollout
        if r is not None and r.active:
            if self.cfg.on_new_candidate == "wait":
                self._pending = (version, reason, actor)
                return {"queued": version}
            await self._finish(r, "superseded", f"superseded by v{version}", rollback=True)
        return await self.start_rollout(version, reason=reason, actor=actor)

    async def start_rollout(self, version: int | None = None, steps: list[int] | None = None,
                            bake_s: float | None = None, reason: str = "", actor: str = "operator",
                            mode: str | None = None) -> dict[str, Any]:
        """Start rolling out ``version`` (default: the registry's newest) into the idle slot."""
        if version is None:
            numbers = await asyncio.to_thread(self.registry.version_numbers)
            if not numbers:
                raise ValueError("no registered version to roll out")
            version = numbers[-1]
        await asyncio.to_thread(self.registry.meta, version)  # raises for an unknown version
        r = self.state.rollout
        if r is not None and r.active:
            await self._finish(r, "superseded", f"superseded by v{version}", rollback=True)
        if version == self.state.live_version():
            raise ValueError(f"v{version} is already live")
        use_steps = [100] if (mode or self.cfg.mode) == "flip" else list(steps or self.cfg.steps)
        live_version = self.state.live_version()
        slot = self.state.stage(version)
        self.state.rollout = Rollout(version=version, slot=slot, live_version=live_version, steps=use_steps,
                                     bake_s=self.cfg.bake_s if bake_s is None else bake_s, reason=reason, actor=actor)
        self._bump()
        await asyncio.to_thread(self._audit, "rollout_start", actor=actor, version=version, slot=slot,
                                reason=reason, steps=use_steps)
        self._task = asyncio.get_event_loop().create_task(self._drive())
        return asdict(self.state.rollout)

    async def promote(self, actor: str = "operator") -> dict[str, Any]:
        """Approve a paused step, or skip the remaining steps and promote now."""
        r = self.state.rollout
        if r is None or not r.active:
            raise ValueError("no rollout in progress")
        if r.phase == "paused":
            r.approved = True
        else:
            r.step = len(r.steps) - 1
            r.approved = True
            r.outcome = f"promoted by {actor}"
        self._bump()
        self._wake.set()
        await asyncio.to_thread(self._audit, "rollout_promote", actor=actor, version=r.version)
        return asdict(r)

    async def abort(self, actor: str = "operator", reason: str = "aborted") -> dict[str, Any]:
        """Stop the rollout: all traffic back to the live version in one step."""
        r = self.state.rollout
        if r is None or not r.active:
            raise ValueError("no rollout in progress")
        await self._finish(r, "aborted", f"{reason} by {actor}", rollback=True)
        return asdict(r)

    async def rollback(self, actor: str = "operator", reason: str = "rollback") -> dict[str, Any]:
        """Return all traffic to the previous version (loading it first if it is no longer loaded)."""
        r = self.state.rollout
        if r is not None and r.active:
            await self._finish(r, "aborted", f"{reason} by {actor}", rollback=True)
            return self.state.to_dict()
        aliases = await asyncio.to_thread(self.registry.aliases)
        previous = aliases.get("previous")
        if previous is None:
            raise ValueError("no previous version to roll back to")
        live_slot = self.state.live_slot()
        target = other(live_slot)
        if self.state.slots[target] != previous:
            self.state.slots[target] = previous
            self._bump()
            failure = await self._wait_loaded(target, previous)
            if failure is not None:
                raise RuntimeError(f"v{previous} could not be loaded: {failure}")
        current = self.state.slots[live_slot]
        self.state.flip(target)
        self._bump()
        await asyncio.to_thread(self._set_live, previous, current, actor, reason)
        await asyncio.to_thread(self._audit, "rollback", actor=actor, version=previous, from_version=current,
                                reason=reason)
        return self.state.to_dict()

    async def set_traffic(self, weights: dict[str, int], actor: str = "operator") -> dict[str, Any]:
        """Set the split by hand (it overrides a running rollout, which stops where it is)."""
        for s, w in weights.items():
            if w > 0 and self.state.slots.get(s) is None:
                raise ValueError(f"slot {s} holds no version")
        r = self.state.rollout
        if r is not None and r.active:
            await self._finish(r, "aborted", f"manual traffic change by {actor}", rollback=False)
        self.state.set_weights(weights)
        self._bump()
        await asyncio.to_thread(self._audit, "traffic", actor=actor, weights=self.state.weights)
        return self.state.to_dict()

    async def set_shadow(self, share: float, actor: str = "operator") -> dict[str, Any]:
        """Copy a share of requests to the idle slot (answers compared, never returned)."""
        self.state.shadow_share = max(0.0, min(1.0, float(share)))
        self.state.revision += 1
        self._bump()
        await asyncio.to_thread(self._audit, "shadow", actor=actor, share=self.state.shadow_share)
        return self.state.to_dict()

    # -- the rollout loop ----------------------------------------------------------------
    async def _wait_loaded(self, slot: str, version: int) -> str | None:
        """None once every live replica holds ``version`` in ``slot``; else why not."""
        deadline = time.time() + self.flip_timeout_s
        while not self.replicas.all_hold(slot, version, time.time()):
            failure = self.replicas.load_failure(slot, version, time.time())
            if failure is not None:
                return failure
            if time.time() > deadline:
                return f"not loaded on every replica within {self.flip_timeout_s:.0f}s"
            await asyncio.sleep(0.05)
        return None

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), max(seconds, 0.0))
        except asyncio.TimeoutError:
            pass

    async def _accuracy(self, version: int | None, since: float) -> tuple[int, float] | None:
        if version is None:
            return None
        try:

            monitor = ray.get_actor(MONITOR_NAME)
        except ValueError:
            return None
        return await monitor.accuracy_since.remote(version, since)

    async def _drive(self) -> None:
        r = self.state.rollout
        try:
            if r.phase == "loading":
                failure = await self._wait_loaded(r.slot, r.version)
                if failure is not None:
                    await self._finish(r, "rolled_back", f"candidate refused: {failure}", True)
                    return
                ok, why = self.replicas.verification(r.slot, r.version, time.time())
                if not ok:
                    await self._finish(r, "rolled_back", f"candidate failed verification: {why}", True)
                    return
                if r.live_version is None:  # nothing live yet: nothing to compare with
                    r.step = len(r.steps) - 1
                r.phase = "baking"
                self._bump()
            while r.step < len(r.steps):
                weight = r.steps[r.step]
                if weight in self.cfg.pause_before and not r.approved and r.live_version is not None:
                    r.phase = "paused"
                    self._bump()
                    while not r.approved and r.active:
                        await self._sleep(1.0)
                    if not r.active:
                        return
                    r.phase = "baking"
                r.approved = False
                if weight == 100:
                    await self._promote_now(r)
                    return
                self.state.set_weights({r.slot: weight, other(r.slot): 100 - weight})
                r.step_started = time.time()
                r.baseline = self.replicas.stats(r.step_started)
                self._bump()
                await self._sleep(r.bake_s)
                if not r.active:
                    return
                if r.step == len(r.steps) - 1 and r.approved:  # promoted by hand during the bake
                    continue
                extra = 0.0
                while self._step_requests(r) < self.cfg.min_requests and extra < 2 * r.bake_s and r.active:
                    await self._sleep(1.0)
                    extra += 1.0
                if not r.active:
                    return
                verdict = await self._analyse(r, weight)
                if not verdict["passed"]:
                    await self._finish(r, "rolled_back", "canary analysis: " + "; ".join(verdict["reasons"]), True)
                    return
                r.step += 1
                self._bump()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # never leave traffic on a half-checked candidate
            log.exception("rollout failed")
            if r.active:
                await self._finish(r, "rolled_back", f"rollout error: {err}", True)

    def _step_requests(self, r: Rollout) -> int:
        now = self.replicas.stats(time.time())
        return minus(now[r.slot], (r.baseline or {}).get(r.slot, empty_stats()))["requests"]

    async def _analyse(self, r: Rollout, weight: int) -> dict[str, Any]:
        now = self.replicas.stats(time.time())
        base = r.baseline or {s: empty_stats() for s in SLOTS}
        live_slot = other(r.slot)
        cand_delta, live_delta = minus(now[r.slot], base[r.slot]), minus(now[live_slot], base[live_slot])
        live_acc = await self._accuracy(r.live_version, r.step_started or r.started)
        cand_acc = await self._accuracy(r.version, r.step_started or r.started)
        passed, reasons, figures = canary_verdict(live_delta, cand_delta, live_acc, cand_acc, self.cfg)
        result = {"weight": weight, "passed": passed, "reasons": reasons, **figures, "time": time.time()}
        r.results.append(result)
        await asyncio.to_thread(self._audit, "canary_step", actor="controller", version=r.version, weight=weight,
                                passed=passed, reason="; ".join(reasons))
        return result

    async def _promote_now(self, r: Rollout) -> None:
        self.state.flip(r.slot, count=r.live_version is not None)
        r.phase, r.outcome = "promoted", r.outcome or "passed every step"
        r.step = len(r.steps)
        self._bump()
        await asyncio.to_thread(self._set_live, r.version, r.live_version, r.actor, r.reason)
        await asyncio.to_thread(self._audit, "promote", actor=r.actor, version=r.version, reason=r.outcome)
        self._record(r)

    def _set_live(self, version: int, previous: int | None, actor: str, reason: str) -> None:
        if previous is not None:
            self.registry.set_alias("previous", previous, actor=actor, reason=reason)
        self.registry.set_alias("live", version, actor=actor, reason=reason)

    async def _finish(self, r: Rollout, phase: str, why: str, rollback: bool) -> None:
        """End a rollout that did not promote: traffic back to live in one step, reason audited."""
        r.phase, r.outcome = phase, why
        if rollback and r.live_version is not None:
            self.state.flip(other(r.slot), count=False)
        self._bump()
        self._wake.set()
        await asyncio.to_thread(self._audit, "rollback" if rollback else phase, actor="controller",
                                version=r.version, reason=why)
        if phase != "superseded":
            await asyncio.to_thread(self.registry.audit, "rejected", actor="controller", version=r.version, reason=why)
        self._record(r)

    def _record(self, r: Rollout) -> None:
        entry = {"version": r.version, "phase": r.phase, "outcome": r.outcome, "reason": r.reason,
                 "steps": [x["weight"] for x in r.results], "seconds": round(time.time() - r.started, 2)}
        self.state.history.append(entry)
        self.deploys.append({"version": r.version, "slot": r.slot, "ok": r.phase == "promoted", "phase": r.phase,
                             "outcome": r.outcome})
        self._bump()
        if self._pending is not None:
            version, reason, actor = self._pending
            self._pending = None
            asyncio.get_event_loop().create_task(self.start_rollout(version, reason=reason, actor=actor))
