"""The bookkeeping every rollout command shares: transitions out, aliases agreeing with the split, history.

``RolloutMachine`` (``machine.py``) decides; this base class records: it queues the transitions a
command or a tick made (``_emit``/``_drain``), keeps the ``live``/``previous`` aliases naming what
serves (asking for each change as ``SetAlias``), and appends finished rollouts to the history.

Example:
    >>> from streamfit.actors.rollout.serving_state import ServingState
    >>> book = Bookkeeping(ServingState())
    >>> book._set_live(3, 2, "operator", "test")
    >>> [(t.name, t.version) for t in book._drain()], book.aliases
    ([('previous', 2), ('live', 3)], {'previous': 2, 'live': 3})
"""

from __future__ import annotations

from typing import Any

from streamfit.names import Phase, other
from streamfit.actors.rollout.serving_state import Rollout, ServingState
from streamfit.actors.rollout.transitions import Audit, Candidate, Changed, FlipWait, SetAlias, Transition, WaitDone


class Bookkeeping:
    """The serving state, the aliases, the queued candidate and waiting rollback, and the transitions made."""

    def __init__(self, state: ServingState, aliases: dict[str, int] | None = None) -> None:
        self.state = state
        self.aliases = {k: v for k, v in (aliases or {}).items() if k in ("live", "previous")}
        self.loaded: dict[str, int | None] = {s: None for s in state.slots}  # seen on every replica since staged
        self.queued: Candidate | None = None
        self.waiting: FlipWait | None = None
        self.deploys: list[dict[str, Any]] = []
        self._out: list[Transition] = []

    @property
    def rollout(self) -> Rollout | None:
        """The rollout in progress (None if none is)."""
        r = self.state.rollout
        return r if r is not None and r.active else None

    def _record(self, r: Rollout, now: float) -> None:
        self.state.history.append({"version": r.version, "phase": str(r.phase), "outcome": r.outcome,
                                   "reason": r.reason, "steps": [x["weight"] for x in r.results],
                                   "seconds": round(now - r.started, 2)})
        self.deploys.append({"version": r.version, "slot": r.slot, "ok": r.phase == Phase.PROMOTED,
                             "phase": str(r.phase), "outcome": r.outcome})
        self._emit(Changed("history"))

    def _flip_to(self, slot: str, actor: str, reason: str) -> None:
        """All traffic to ``slot`` (a rollback): the version serving until now becomes ``previous``."""
        version, current = self.state.slots[slot], self.state.slots[other(slot)]
        self.state.flip(slot)
        self._emit(Changed(f"rolled back to v{version}"))
        self._set_live(version, current, actor, reason)
        self._emit(Audit("rollback", actor, reason, {"version": version, "from_version": current}))

    def _set_live(self, version: int, previous: int | None, actor: str, reason: str) -> None:
        if previous is not None:
            self._alias("previous", previous, actor, reason)
        self._alias("live", version, actor, reason)

    def _sync_aliases(self, actor: str, reason: str) -> None:
        """After a hand-made split: ``live`` names the version in the live slot if it alone serves, or if
        the aliased version no longer serves at all."""
        target, live = self.state.live_version(), self.aliases.get("live")
        if target is None or target == live:
            return
        if self.state.settled() or live not in self.state.serving():
            self._set_live(target, live, actor, reason)

    def _alias(self, name: str, version: int, actor: str, reason: str) -> None:
        self.aliases[name] = version
        self._emit(SetAlias(name, version, actor, reason))


    def _active(self) -> Rollout:
        if self.rollout is None:
            raise ValueError("no rollout in progress")
        return self.rollout

    def _put(self, slot: str, version: int) -> None:
        if self.state.slots[slot] != version:
            self.loaded[slot] = None
        self.state.put(slot, version)

    def _drop_queued(self, why: str) -> None:
        if self.queued is not None:
            self._emit(Audit("candidate_dropped", "controller", why, {"version": self.queued.version}))
            self.queued = None

    def _end_wait(self, error: str) -> None:
        if self.waiting is not None:
            self._emit(WaitDone(self.waiting.id, error))
            self.waiting = None

    def _emit(self, *transitions: Transition) -> None:
        self._out.extend(transitions)

    def _drain(self) -> list[Transition]:
        out, self._out = self._out, []
        return out
