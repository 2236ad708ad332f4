"""What the rollout machine did, or wants done outside it, as plain values; and the work it holds pending.

The machine changes the serving state itself and returns these; the controller actor carries
them out in order: it persists the state and wakes the Routers on ``Changed``, writes aliases
and audit entries to the registry, and answers a waiting ``rollback`` call on ``WaitDone``.

Example:
    >>> ts = [Changed("promoted v3"), SetAlias("live", 3, "operator", "good")]
    >>> changes_state(ts), aliases_after({"live": 2}, ts)
    (True, {'live': 3})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Changed:
    """The desired serving state changed: persist it and wake the Routers' long-polls."""

    what: str


@dataclass(frozen=True)
class Audit:
    """One audit-log entry."""

    event: str
    actor: str
    reason: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SetAlias:
    """Point a registry alias (``live``, ``previous``) at a version."""

    name: str
    version: int
    actor: str
    reason: str = ""


@dataclass(frozen=True)
class WaitDone:
    """A rollback that had to load its version first is over (``error`` None: traffic flipped)."""

    wait_id: str
    error: str | None


@dataclass(frozen=True)
class Queued:
    """A candidate waits for the rollout (or rollback) in progress to end."""

    version: int


@dataclass
class FlipWait:
    """A rollback waiting for its version to be loaded in ``slot`` before traffic flips to it."""

    id: str
    slot: str
    version: int
    deadline: float
    actor: str
    reason: str


@dataclass
class Candidate:
    """A trainer's candidate queued behind the rollout in progress."""

    version: int
    reason: str
    actor: str


Transition = Union[Changed, SetAlias, Audit, Queued, WaitDone]


def changes_state(transitions: list[Transition]) -> bool:
    """Whether the serving state must be saved and sent to the Routers."""
    return any(isinstance(t, Changed) for t in transitions)


def aliases_after(aliases: dict[str, int], transitions: list[Transition]) -> dict[str, int]:
    """``aliases`` with the transitions' alias changes applied."""
    out = dict(aliases)
    for t in transitions:
        if isinstance(t, SetAlias):
            out[t.name] = t.version
    return out
