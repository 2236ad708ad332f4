"""Names every plane agrees on: Ray actor names, the namespace, serving slots and rollout phases.

Kept in the core package so that a Serve replica can find an actor by name without importing
the module (and the libraries) that defines it.

Example:
    >>> shard_name(1)
    'streamfit-shard-1'
    >>> other(Slot.BLUE), str(Slot.GREEN), f"{Slot.BLUE}"
    ('green', 'green', 'blue')
    >>> Phase.BAKING in ACTIVE_PHASES, Phase.PROMOTED in ACTIVE_PHASES
    (True, False)
"""

from __future__ import annotations

from enum import Enum

NAMESPACE = "streamfit"
APP_NAME = "streamfit"
CONTROLLER_NAME = "streamfit-rollout"
TRAINER_NAME = "streamfit-trainer"
MONITOR_NAME = "streamfit-monitor"
INGEST_NAME = "streamfit-ingest"
COORDINATOR_NAME = "streamfit-coordinator"


def shard_name(i: int) -> str:
    """Name of the i-th FeatureShard actor (the Router looks shards up by it)."""
    return f"streamfit-shard-{i}"


class _StrEnum(str, Enum):
    """A str enum whose str() and format() are its value (as ``enum.StrEnum`` in 3.11)."""

    __str__ = str.__str__
    __format__ = str.__format__


class Slot(_StrEnum):
    """The two serving slots of the blue-green pair."""

    BLUE = "blue"
    GREEN = "green"


SLOTS: tuple[str, str] = (Slot.BLUE.value, Slot.GREEN.value)


def other(slot: str) -> str:
    """The other slot."""
    return SLOTS[1 - SLOTS.index(slot)]


class Phase(_StrEnum):
    """Where a rollout stands."""

    LOADING = "loading"
    BAKING = "baking"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"


ACTIVE_PHASES = frozenset({Phase.LOADING, Phase.BAKING, Phase.PAUSED})
