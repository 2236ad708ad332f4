"""The desired serving state: which version each slot holds, the traffic weights, the rollout in progress.

Routers long-poll it; the controller persists it after every change. ``snapshot()`` gives the
plain dict sent to Routers and written to storage; ``restore()`` puts one back in place (state
files written before the rename from ``to_dict``/``from_dict`` load unchanged: same keys).

Example:
    >>> st = ServingState()
    >>> st.stage(1), st.stage(2)          # the first version goes live at once; later ones to the idle slot
    ('blue', 'green')
    >>> st.set_weights({"blue": 75, "green": 25}); st.weights, st.live_slot()
    ({'blue': 75, 'green': 25}, 'blue')
    >>> again = ServingState(); again.restore(st.snapshot()); again.snapshot() == st.snapshot()
    True
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from streamfit.names import ACTIVE_PHASES, SLOTS, Phase, Slot, other

HISTORY_KEPT = 20
LATER_FIELDS: dict[str, Any] = {"shadow": False, "fast_path": None, "replaced": None}  # their defaults


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
    phase: str = Phase.LOADING
    step: int = 0  # index into steps of the step in progress (or next)
    started: float = 0.0
    step_started: float | None = None
    baseline: dict[str, Any] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = ""
    approved: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    shadow: bool = False  # judged in shadow: the other slot scores each labelled request too
    fast_path: dict[str, Any] | None = None  # the figures that sent it down the fast path
    replaced: int | None = None  # the version whose unproven rollout this one replaced (once in a row)

    @property
    def active(self) -> bool:
        """Still loading, baking or paused (not finished)."""
        return self.phase in ACTIVE_PHASES

    def view(self) -> dict[str, Any]:
        """Plain dict (the phase as a plain string), as persisted and shown in the status."""
        d = {**asdict(self), "phase": str(self.phase)}
        # Fields added later are written only when set: a state file of an earlier release round-trips.
        return {k: v for k, v in d.items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}

    @classmethod
    def from_view(cls, d: dict[str, Any]) -> "Rollout":
        """Rebuild from ``view()``."""
        return cls(**{**d, "phase": Phase(d["phase"])})


class ServingState:
    """Which version each slot should hold, the traffic weights, and the rollout in progress."""

    def __init__(self) -> None:
        self.slots: dict[str, int | None] = {s: None for s in SLOTS}
        self.weights: dict[str, int] = {Slot.BLUE.value: 100, Slot.GREEN.value: 0}
        self.revision = 0
        self.flips = 0
        self.shadow_share = 0.0
        self.rollout: Rollout | None = None
        self.history: list[dict[str, Any]] = []

    def live_slot(self) -> str:
        """The slot with the larger weight (blue on a tie)."""
        return max(SLOTS, key=lambda s: (self.weights[s], s == Slot.BLUE))

    def idle_slot(self) -> str:
        """The slot that is not live."""
        return other(self.live_slot())

    def live_version(self) -> int | None:
        """The version in the live slot."""
        return self.slots[self.live_slot()]

    def settled(self) -> bool:
        """All traffic on one slot."""
        return 100 in self.weights.values()

    def serving(self) -> set[int]:
        """Versions in slots with some traffic."""
        return {v for s, v in self.slots.items() if v is not None and self.weights[s] > 0}

    def stage(self, version: int) -> str:
        """Ask for ``version`` in the idle slot (the live one if nothing is live yet); returns the slot."""
        live = self.live_slot()
        slot = live if self.slots[live] is None else self.idle_slot()
        self.put(slot, version)
        return slot

    def put(self, slot: str, version: int) -> None:
        """Ask for ``version`` in ``slot``."""
        self.slots[slot] = version
        self.revision += 1

    def set_weights(self, weights: dict[str, int]) -> None:
        """Set the split (integers summing to 100)."""
        new = check_weights(weights)
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

    def snapshot(self) -> dict[str, Any]:
        """Plain dict, sent to Routers and persisted."""
        return {"slots": dict(self.slots), "weights": dict(self.weights), "revision": self.revision,
                "live_slot": self.live_slot(), "flips": self.flips, "shadow_share": self.shadow_share,
                "rollout": self.rollout.view() if self.rollout else None, "history": list(self.history[-HISTORY_KEPT:])}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace this state with ``snap`` (from ``snapshot()``, or a state file of any earlier release)."""
        self.slots = {s: snap["slots"].get(s) for s in SLOTS}
        self.weights = {s: int(snap["weights"].get(s, 0)) for s in SLOTS}
        self.revision, self.flips = int(snap["revision"]), int(snap.get("flips", 0))
        self.shadow_share = float(snap.get("shadow_share", 0.0))
        self.rollout = Rollout.from_view(snap["rollout"]) if snap.get("rollout") else None
        self.history = list(snap.get("history", []))


def check_weights(weights: dict[str, int]) -> dict[str, int]:
    """The split as ``{slot: percent}`` for both slots; ValueError unless non-negative and summing to 100."""
    new = {s: int(weights.get(s, 0)) for s in SLOTS}
    if sum(new.values()) != 100 or min(new.values()) < 0:
        raise ValueError(f"weights must be non-negative and sum to 100, got {new}")
    return new
