"""The named rollout controller: a Ray actor that ticks the ``RolloutMachine`` and carries out its transitions.

The rollout itself (load, verify, canary steps with analysis, promote or roll back; every
operator command checked against the phase) is the plain ``RolloutMachine``. The actor only
holds it, ticks it every ``tick_s`` with what it gathers (the Router replicas' reports,
labelled accuracy per version from the monitor), persists the state after every change (a
restarted controller resumes the same split and the same rollout step; queued candidates
and a rollback waiting for its version do not survive a restart), writes the aliases and
audit entries the machine asks for, and answers the Routers' long-polls.

What it shows (``status``, ``desired``) is the state as of the last transitions carried out:
a finished rollout appears once its aliases and audit entries are written, so a client that sees
it finished reads the new aliases at once.

Example:
    >>> import tempfile
    >>> from streamfit.actors.rollout.machine import RolloutMachine
    >>> eff = Effects(tempfile.mkdtemp())
    >>> m = RolloutMachine()
    >>> changes = m.set_shadow(0.1, now=0.0)
    >>> eff.carry_out(m.state.snapshot(), changes); eff.store.load().shadow_share
    0.1
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from streamfit.config import RolloutConfig
from streamfit.names import MONITOR_NAME
from streamfit.registry import Registry
from streamfit.actors.rollout.machine import RolloutMachine
from streamfit.actors.rollout.replicas import ReplicaTracker
from streamfit.actors.rollout.serving_state import ServingState  # noqa: F401  (re-exported)
from streamfit.actors.rollout.state_store import StateStore
from streamfit.actors.rollout.transitions import Audit, Queued, SetAlias, Transition, WaitDone, changes_state

log = logging.getLogger("streamfit.rollout")
PAIRED_EVERY_S = 1.0  # the paired figures scan the monitor's log: not on every 0.1 s tick


class Effects:
    """What the machine's transitions ask of the world: the saved state, aliases and audit entries (blocking)."""

    def __init__(self, registry_uri: str) -> None:
        self.registry = Registry(registry_uri)
        self.store = StateStore(registry_uri)

    def carry_out(self, snap: dict[str, Any], transitions: list[Transition]) -> None:
        """Save ``snap`` if the state changed, then write the aliases and audit entries in order."""
        if changes_state(transitions):
            self.store.write(snap)
        for t in transitions:
            if isinstance(t, SetAlias):
                self.registry.set_alias(t.name, t.version, actor=t.actor, reason=t.reason)
            elif isinstance(t, Audit):
                self.registry.audit(t.event, actor=t.actor, reason=t.reason, **t.fields)

    def newest_or_known(self, version: int | None) -> int:
        """``version`` if registered (else RegistryError), or the newest registered one."""
        if version is None:
            numbers = self.registry.version_numbers()
            if not numbers:
                raise ValueError("no registered version to roll out")
            version = numbers[-1]
        self.registry.meta(version)
        return version


async def monitor_call(method: str, *args: Any) -> Any:
    """Ask the named monitor actor (None when there is none)."""
    try:
        monitor = ray.get_actor(MONITOR_NAME)
    except ValueError:
        return None
    return await getattr(monitor, method).remote(*args)


async def accuracy_since(versions: list[int], since: float) -> dict[int, Any]:
    """Labelled accuracy of each version since ``since`` (nothing measured when the monitor fails)."""
    try:
        return {v: await monitor_call("accuracy_since", v, since) for v in versions}
    except Exception:  # a restarting monitor measures nothing: the step is judged on the Routers' figures
        log.exception("no accuracy from the monitor")
        return {}


async def paired_since(live: int, candidate: int, since: float, newest: int) -> dict[str, Any] | None:
    """The prediction log's paired figures of ``live`` and ``candidate`` since ``since`` (None: no monitor)."""
    try:
        monitor = ray.get_actor(MONITOR_NAME)
    except ValueError:
        return None
    try:
        if hasattr(monitor, "paired_since"):
            return await monitor.paired_since.remote(live, candidate, since, newest)
        # A monitor that forwards only accuracy_since: the prediction log answers a pair of versions there.
        return await monitor.accuracy_since.remote((live, candidate), since)
    except Exception:  # a restarting monitor: no shadow stage, steps judged on the Routers' figures
        log.exception("no paired figures from the monitor")
        return None


class ControllerCore:
    """The controller's work without Ray: the machine, the replicas' reports, ticks, effects, long-polls."""

    def __init__(self, registry_uri: str, flip_timeout_s: float = 60.0, rollout: dict[str, Any] | None = None) -> None:
        self.fx = Effects(registry_uri)
        self.machine = RolloutMachine(RolloutConfig.model_validate(rollout or {}), flip_timeout_s,
                                      self.fx.store.load(), self.fx.registry.aliases())
        self.replicas = ReplicaTracker()
        self._io = ThreadPoolExecutor(1)  # one writer: saves and registry writes land in the order made
        self._changed, self._ticking = asyncio.Event(), asyncio.Lock()
        self._waits: dict[str, asyncio.Future] = {}
        self._paired: tuple[Any, float, dict[str, Any] | None] = (None, 0.0, None)  # (asked, when, answer)
        self._published = self._shown()

    def _shown(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self.machine.state.snapshot(), [dict(d) for d in self.machine.deploys]

    async def _apply(self, transitions: list[Transition]) -> list[Transition]:
        """Carry out transitions in order (on the one I/O thread), then publish the state they left (status,
        long-polls), wake long-polls, answer waiting rollbacks."""
        shown = self._shown()
        try:
            # Even with nothing to carry out, the state is published behind the effects still in the queue.
            await asyncio.get_running_loop().run_in_executor(self._io, self.fx.carry_out, shown[0], transitions)
        finally:  # the machine has moved on whether or not storage took it: tell whoever waits
            self._published = shown
            if transitions:
                self._changed.set()
                self._changed = asyncio.Event()
            for t in transitions:
                if isinstance(t, WaitDone) and t.wait_id in self._waits:
                    self._waits.pop(t.wait_id).set_result(t.error)
        return transitions

    async def tick(self) -> None:
        """Gather what the machine needs (labelled accuracy when a step is due), step it, carry out the result."""
        async with self._ticking:  # one tick at a time: the accuracy gathered is for the step it judges
            want = self.machine.analysis_wanted(time.time(), self.replicas)
            accuracy = await accuracy_since(*want) if want else None
            paired = await self._paired_figures()
            try:
                transitions = self.machine.step(time.time(), self.replicas, accuracy, paired)
            except Exception as err:  # never leave traffic on a half-checked candidate
                log.exception("rollout failed")
                transitions = self.machine.fail(time.time(), str(err))
            await self._apply(transitions)

    async def _paired_figures(self) -> dict[str, Any] | None:
        """The paired figures the machine wants, asked of the monitor at most once every ``PAIRED_EVERY_S``."""
        want, (asked, when, answer) = self.machine.paired_wanted(), self._paired
        if want is None:
            return None
        if want != asked or time.time() - when >= PAIRED_EVERY_S:
            answer = await paired_since(*want, self.machine.cfg.fast_path_rows)
            self._paired = (want, time.time(), answer)
        return answer

    async def tick_forever(self, tick_s: float) -> None:
        """Tick every ``tick_s`` seconds (and after every command)."""
        while True:
            try:
                await self.tick()
            except Exception:  # storage unavailable: the next change saves the whole state again
                log.exception("rollout tick failed")
            await asyncio.sleep(tick_s)

    async def command(self, name: str, *args: Any, **kwargs: Any) -> list[Transition]:
        """Run one of the machine's commands now, carry it out and tick; a rollback that loads first waits."""
        out = await self._apply(getattr(self.machine, name)(*args, now=time.time(), **kwargs))
        wait = self.machine.waiting
        if wait is not None and wait.id not in self._waits:  # a rollback loading its version first
            done = self._waits[wait.id] = asyncio.get_running_loop().create_future()
            await self.tick()
            if (error := await done) is not None:
                raise RuntimeError(error)
        await self.tick()
        return out

    async def desired(self, after_revision: int = -1, timeout_s: float = 1.0) -> dict[str, Any]:
        """Desired state; waits up to ``timeout_s`` for a revision newer than ``after_revision``."""
        if self._published[0]["revision"] <= after_revision:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        return self._published[0]

    def report(self, replica_id: str, report: dict[str, Any]) -> None:
        """A Router replica reports what it holds and its cumulative request figures (or just the held versions)."""
        self.replicas.report(replica_id, report if "held" in report else {"held": report}, time.time())

    async def status(self) -> dict[str, Any]:
        """Desired state, what each live replica holds, per-slot figures, live accuracy, deploy history."""
        try:
            accuracy = await monitor_call("per_version")
        except Exception:  # no monitor: nothing measured
            accuracy = None
        state, deploys = self._published  # the aliases of a finished rollout are written by then
        return {**state, **self.replicas.view(time.time()), "deploys": deploys,
                "live_accuracy": {str(k): v for k, v in (accuracy or {}).items()},
                "rollout_config": self.machine.cfg.model_dump()}

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change rollout settings at run time (validated like the config file)."""
        self.machine.cfg = RolloutConfig.model_validate({**self.machine.cfg.model_dump(), **changes})
        return self.machine.cfg.model_dump()

    async def deploy(self, version: int, reason: str = "", actor: str = "trainer",
                     trigger: str | None = None) -> dict[str, Any]:
        """A new candidate from the trainer: roll it out (or queue it behind the running rollout)."""
        queued = any(isinstance(t, Queued) for t in await self.command("deploy", version, reason=reason, actor=actor,
                                                                       trigger=trigger))
        return {"queued": version} if queued else self.machine.state.rollout.view()

    async def start_rollout(self, version: int | None = None, steps: list[int] | None = None,
                            bake_s: float | None = None, reason: str = "", actor: str = "operator",
                            mode: str | None = None) -> dict[str, Any]:
        """Start rolling out ``version`` (default: the registry's newest) into the idle slot."""
        version = await asyncio.to_thread(self.fx.newest_or_known, version)
        await self.command("start", version, steps=steps, bake_s=bake_s, reason=reason, actor=actor, mode=mode)
        return self.machine.state.rollout.view()

    async def promote(self, actor: str = "operator") -> dict[str, Any]:
        """Approve a paused step, or skip the remaining steps and promote now."""
        rollout = self.machine.rollout
        await self.command("promote", actor=actor)
        return rollout.view()

    async def abort(self, actor: str = "operator", reason: str = "aborted") -> dict[str, Any]:
        """Stop the rollout: all traffic back to the live version in one step."""
        await self.command("abort", actor=actor, reason=reason)
        return self.machine.state.rollout.view()

    async def rollback(self, actor: str = "operator", reason: str = "rollback") -> dict[str, Any]:
        """Return all traffic to the previous version (loading it first if it is no longer loaded)."""
        await self.command("rollback", actor=actor, reason=reason)
        return self.machine.state.snapshot()

    async def set_traffic(self, weights: dict[str, int], actor: str = "operator") -> dict[str, Any]:
        """Set the split by hand (it overrides a running rollout, which stops where it is)."""
        await self.command("set_traffic", weights, actor=actor)
        return self.machine.state.snapshot()

    async def set_shadow(self, share: float, actor: str = "operator") -> dict[str, Any]:
        """Copy a share of requests to the idle slot (answers compared, never returned)."""
        await self.command("set_shadow", share, actor=actor)
        return self.machine.state.snapshot()


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RolloutControllerActor:
    """Named actor owning the desired serving state; Routers long-poll it and report back.

    Survives a restart: the split, the slots and the rollout step (from the saved state).
    """

    def __init__(self, registry_uri: str, flip_timeout_s: float = 60.0, rollout: dict[str, Any] | None = None,
                 tick_s: float = 0.1) -> None:
        self.core = ControllerCore(registry_uri, flip_timeout_s, rollout)
        self._ticker = asyncio.get_event_loop().create_task(self.core.tick_forever(tick_s))

    async def desired(self, after_revision: int = -1, timeout_s: float = 1.0) -> dict[str, Any]:
        """Desired state; waits up to ``timeout_s`` for a revision newer than ``after_revision``."""
        return await self.core.desired(after_revision, timeout_s)

    def report(self, replica_id: str, report: dict[str, Any]) -> None:
        """A Router replica reports what it holds and its cumulative request figures."""
        self.core.report(replica_id, report)

    async def status(self) -> dict[str, Any]:
        """Desired state, what each live replica holds, per-slot figures, live accuracy, deploy history."""
        return await self.core.status()

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change rollout settings at run time (validated like the config file)."""
        return self.core.configure(changes)

    async def deploy(self, version: int, reason: str = "", actor: str = "trainer",
                     trigger: str | None = None) -> dict[str, Any]:
        """A new candidate from the trainer: roll it out (or queue it behind the running rollout)."""
        return await self.core.deploy(version, reason, actor, trigger)

    async def start_rollout(self, version: int | None = None, steps: list[int] | None = None,
                            bake_s: float | None = None, reason: str = "", actor: str = "operator",
                            mode: str | None = None) -> dict[str, Any]:
        """Start rolling out ``version`` (default: the registry's newest) into the idle slot."""
        return await self.core.start_rollout(version, steps, bake_s, reason, actor, mode)

    async def promote(self, actor: str = "operator") -> dict[str, Any]:
        """Approve a paused step, or skip the remaining steps and promote now."""
        return await self.core.promote(actor)

    async def abort(self, actor: str = "operator", reason: str = "aborted") -> dict[str, Any]:
        """Stop the rollout: all traffic back to the live version in one step."""
        return await self.core.abort(actor, reason)

    async def rollback(self, actor: str = "operator", reason: str = "rollback") -> dict[str, Any]:
        """Return all traffic to the previous version (loading it first if it is no longer loaded)."""
        return await self.core.rollback(actor, reason)

    async def set_traffic(self, weights: dict[str, int], actor: str = "operator") -> dict[str, Any]:
        """Set the split by hand (it overrides a running rollout, which stops where it is)."""
        return await self.core.set_traffic(weights, actor)

    async def set_shadow(self, share: float, actor: str = "operator") -> dict[str, Any]:
        """Copy a share of requests to the idle slot (answers compared, never returned)."""
        return await self.core.set_shadow(share, actor)
