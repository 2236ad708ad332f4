"""Routing logic of one Router replica: blue/green slots, weights, reconciliation toward desired state.

Plain Python, unit-tested without Ray. A slot receives traffic only while it holds the
version the desired state asks for; if the weighted choice is not ready, the other ready
slot answers, so a swap never fails a request.

Example:
    >>> core = RouterCore(["a"])
    >>> core.ready_slots()
    []
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any, Callable

import numpy as np

from streamfit.serve.slots import ModelSlot

SLOTS = ("blue", "green")
Loader = Callable[[str, int], ModelSlot]


class NoModelError(RuntimeError):
    """No slot holds a ready model yet."""


class RouterCore:
    """Slots held by this replica and the weights it routes by."""

    def __init__(self, feature_names: list[str], seed: int | None = None) -> None:
        self.feature_names = list(feature_names)
        self.slots: dict[str, ModelSlot | None] = {s: None for s in SLOTS}
        self.desired_versions: dict[str, int | None] = {s: None for s in SLOTS}
        self.weights: dict[str, int] = {"blue": 100, "green": 0}
        self.revision = -1
        self.served: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.load_errors: list[str] = []
        self._rng = random.Random(seed)

    def held(self) -> dict[str, int | None]:
        """Version loaded in each slot."""
        return {s: (slot.version if slot else None) for s, slot in self.slots.items()}

    def ready_slots(self) -> list[str]:
        """Slots that hold the version the desired state asks for."""
        return [s for s, slot in self.slots.items()
                if slot is not None and slot.version == self.desired_versions[s]]

    def choose(self) -> ModelSlot:
        """Pick a slot by weight among ready slots; fall back to any ready slot."""
        ready = self.ready_slots()
        if not ready:
            raise NoModelError("no model is loaded yet")
        total = sum(self.weights[s] for s in ready)
        if total <= 0:
            # The weighted slot is still loading: keep serving from the one that is ready.
            return self.slots[ready[0]]  # type: ignore[return-value]
        pick = self._rng.uniform(0, total)
        for s in ready:
            pick -= self.weights[s]
            if pick < 0:
                return self.slots[s]  # type: ignore[return-value]
        return self.slots[ready[-1]]  # type: ignore[return-value]

    def predict(self, x: np.ndarray) -> tuple[ModelSlot, np.ndarray]:
        """Route one request (one or more rows) to a slot and predict."""
        slot = self.choose()
        try:
            probs = slot.predict(x)
        except Exception:
            self.errors[slot.name] += 1
            raise
        self.served[slot.name] += 1
        return slot, probs

    async def apply(self, desired: dict[str, Any], loader: Loader) -> None:
        """Move toward the desired state: load missing versions (off the event loop), then take its weights."""
        for s in SLOTS:
            want = desired["slots"].get(s)
            have = self.slots[s]
            if want is not None and (have is None or have.version != want):
                try:
                    self.slots[s] = await asyncio.to_thread(loader, s, want)
                except Exception as err:  # keep serving what we have; the controller sees we lack it
                    self.load_errors.append(f"{s} v{want}: {err}")
                    del self.load_errors[:-20]
                    continue
        self.desired_versions = dict(desired["slots"])
        self.weights = dict(desired["weights"])
        self.revision = desired["revision"]

    def stats(self) -> dict[str, Any]:
        """Held versions, weights and per-slot request counters."""
        return {"held": self.held(), "weights": dict(self.weights), "revision": self.revision,
                "served": dict(self.served), "errors": dict(self.errors), "load_errors": list(self.load_errors)}
