"""The traffic's status: slots, weights, the rollout in progress and its history, per-slot request figures.

Example:
    >>> t = TrafficStatus.model_validate({"slots": {"blue": 3, "green": None}, "revision": 4,
    ...                                   "weights": {"blue": 100, "green": 0}, "live_slot": "blue", "flips": 0})
    >>> t.split()
    'blue 100% / green 0%'
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from streamfit.names import ACTIVE_PHASES, SLOTS, Phase, Slot
from streamfit.status.base import Accuracy, ByVersion, Open, RequestFigures, SlotSummary


class CanaryStep(Open):
    """The analysis of one canary step: candidate against live on that step's requests."""

    weight: int
    passed: bool
    reasons: list[str] = []
    live: Optional[SlotSummary] = None
    candidate: Optional[SlotSummary] = None
    prediction_psi: Optional[float] = None
    prediction_shift_p: Optional[float] = None
    judged_on: Optional[str] = None
    time: Optional[float] = None


class Rollout(Open):
    """One candidate's way to production, as the controller reports it."""

    version: int
    slot: Slot
    live_version: Optional[int] = None
    steps: list[int]
    bake_s: float
    phase: Phase
    step: int = 0
    reason: str = ""
    actor: str = ""
    outcome: str = ""
    approved: bool = False
    started: Optional[float] = None
    step_started: Optional[float] = None
    results: list[CanaryStep] = []
    id: str = ""

    @property
    def active(self) -> bool:
        """Still loading, baking or paused."""
        return self.phase in ACTIVE_PHASES

    @property
    def weight(self) -> int:
        """The candidate's weight at the step in progress (or the last one)."""
        return self.steps[min(self.step, len(self.steps) - 1)]

    @property
    def stepping(self) -> bool:
        """At a canary step (baking or waiting for approval)."""
        return self.phase in (Phase.BAKING, Phase.PAUSED)

    def headline(self) -> str:
        """``v4 → green: baking at 25% (step 2/4)``, or the outcome once it ended."""
        head = f"v{self.version} → {self.slot}: {self.phase}"
        if self.stepping:
            return f"{head} at {self.weight}% (step {min(self.step + 1, len(self.steps))}/{len(self.steps)})"
        return f"{head} — {self.outcome}" if self.outcome else head


class RolloutRecord(Open):
    """A finished rollout in the history."""

    version: int
    phase: Phase
    outcome: str = ""
    reason: str = ""
    steps: list[int] = []
    seconds: Optional[float] = None


class ServingView(Open):
    """The desired serving state: which version each slot holds, the split, the rollout in progress."""

    slots: dict[Slot, Optional[int]]
    weights: dict[Slot, int]
    revision: int
    live_slot: Slot
    flips: int
    shadow_share: float = 0.0
    rollout: Optional[Rollout] = None
    history: list[RolloutRecord] = []

    @property
    def live_version(self) -> Optional[int]:
        """The version in the live slot (None before the first one)."""
        return self.slots.get(self.live_slot)

    def weight(self, slot: str) -> int:
        """Percent of traffic to ``slot``."""
        return self.weights.get(Slot(slot), 0)

    def split(self) -> str:
        """``blue 75% / green 25%``."""
        return " / ".join(f"{s} {self.weight(s)}%" for s in SLOTS)

    def outcomes(self) -> dict[str, int]:
        """Finished rollouts counted by how they ended."""
        return dict(sorted(Counter(h.phase.value for h in self.history).items()))


class Shadow(Open):
    """Requests copied to the idle slot and how often its answer agreed."""

    compared: int = 0
    agreed: int = 0


class Deploy(Open):
    """One rollout's result, in the controller's deploy list."""

    version: int
    slot: Slot
    ok: bool
    phase: Phase
    outcome: str = ""


class TrafficStatus(ServingView):
    """``GET /traffic``: the serving state, what each live Router replica holds, per-slot figures,
    live accuracy per version, the deploys and the rollout settings."""

    replicas: dict[str, dict[str, Optional[int]]] = {}
    replica_revisions: dict[str, int] = {}
    slot_stats: dict[Slot, RequestFigures] = {}
    shadow: Shadow = Shadow()
    deploys: list[Deploy] = []
    live_accuracy: ByVersion = {}
    rollout_config: dict[str, Any] = {}

    def figures(self, slot: str) -> SlotSummary:
        """Requests, errors and latency of ``slot`` since the replicas started."""
        return self.slot_stats.get(Slot(slot), RequestFigures()).summary()

    def accuracy_of(self, slot: str) -> Optional[Accuracy]:
        """Live accuracy of the version ``slot`` holds, if measured."""
        version = self.slots.get(Slot(slot))
        return None if version is None else self.live_accuracy.get(str(version))
