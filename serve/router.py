"""Routing logic of one Router replica: blue/green slots, weights, reconciliation toward desired state.

Plain Python, unit-tested without Ray. A slot receives traffic only while it holds the
version the desired state asks for; if the weighted choice is not ready, the other ready
slot answers, so a swap never fails a request. A request pinned to a slot tests it by hand:
it is never counted in the slot's figures the canary analysis reads, nor copied for judging.

Example:
    >>> core = RouterCore(["a"])
    >>> core.ready_slots()
    []
"""

from __future__ import annotations

import asyncio
import random
import time
from contextvars import ContextVar
from typing import Any, Callable

import numpy as np

from streamfit.schema import hash_keys
from streamfit.request_stats import SlotStats
from streamfit.serve.answers import TaskAnswers
from streamfit.serve.calls import awaited
from streamfit.serve.slots import ModelSlot, Unseen
from streamfit.task import Task

SLOTS = ("blue", "green")


def other_slot(slot: str) -> str:
    """The other slot."""
    return SLOTS[1 - SLOTS.index(slot)]
Loader = Callable[[str, int], ModelSlot]


ShadowRow = tuple[str, int, str, Any, float, bool]  # event id, version, slot, prediction (contract 4), time, shadow


class ShadowCopy:
    """A request the other slot scores in shadow once its caller knows the event ids it answered
    (``take_shadow_copy``): rows without an event id can never be judged, so they cost nothing."""

    def __init__(self, slot: Any, x: np.ndarray, counters: dict[str, Any]) -> None:
        self.slot, self.x, self.counters = slot, x, counters

    def score(self, event_ids: list[str], t: float, sink: Callable[[list[ShadowRow]], None]) -> None:
        """Score the rows in shadow and pass them to ``sink`` (later, for a slot in another deployment);
        a failure is counted, never raised: the request has been answered already."""
        if isinstance(self.slot, RemoteSlot):
            task = asyncio.get_running_loop().create_task(self._remote(event_ids, t, sink))
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)
            return
        try:
            probs = self.slot.predict(self.x)
        except Exception:
            self.counters["judge_errors"] += 1
            return
        self._done(event_ids, t, probs, sink)

    async def _remote(self, event_ids: list[str], t: float, sink: Callable[[list[ShadowRow]], None]) -> None:
        try:
            _, probs = await self.slot.apredict(self.x)
        except Exception:
            self.counters["judge_errors"] += 1
            return
        self._done(event_ids, t, probs, sink)

    def _done(self, event_ids: list[str], t: float, probs: np.ndarray,
              sink: Callable[[list[ShadowRow]], None]) -> None:
        self.counters["judged"] += len(event_ids)
        logged = TaskAnswers.logged(probs)  # multiclass: the k class probabilities of each row
        sink([(e, self.slot.version, self.slot.name, p, t, True) for e, p in zip(event_ids, logged)])


_COPY: ContextVar[ShadowCopy | None] = ContextVar("streamfit_shadow_copy", default=None)
_PINNED: ContextVar[bool] = ContextVar("streamfit_pinned", default=False)
_TASKS: set[asyncio.Task] = set()  # shadow calls under way (a task nobody holds may be collected)


def take_shadow_copy() -> ShadowCopy | None:
    """The shadow copy of the request this task just routed (``RouterCore.apredict``), once."""
    copy = _COPY.get()
    _COPY.set(None)
    return copy


def routed_by_pin() -> bool:
    """Whether the request this task last routed (``RouterCore.apredict``) was pinned to a slot."""
    return _PINNED.get()


def judging(desired: dict[str, Any]) -> bool:
    """Whether the desired state asks for shadow judging: a rollout in progress that judges in shadow."""
    r = desired.get("rollout") or {}
    return bool(r.get("shadow")) and r.get("phase") in ("loading", "baking", "paused")


class NoModelError(RuntimeError):
    """No slot holds a ready model yet."""


class SlotNotReadyError(RuntimeError):
    """A request pinned a slot that does not hold a ready model."""


class SlotUnavailable(RuntimeError):
    """A slot deployment could not answer (restarting, loading, shedding load, or slower than its timeout)."""


def key_bucket(key: str) -> int:
    """Stable bucket 0..99 of a routing key (the same in every replica and process)."""
    return int(hash_keys(np.array([key], dtype=object))[0] % np.uint64(100))


class RemoteSlot:
    """A slot served by its own Serve deployment (``serving.isolated_slots``), reached by a handle."""

    def __init__(self, name: str, version: int, handle: Any, timeout_s: float | None = None) -> None:
        self.name, self.version, self.handle, self.timeout_s = name, version, handle, timeout_s
        self.verified = None

    async def apredict(self, x: np.ndarray) -> tuple[int, np.ndarray]:
        """(version that answered, probabilities) from one replica of the slot's deployment;
        ``SlotUnavailable`` when none answers within ``timeout_s``."""
        version, probs, _ = await self.ascore(x)
        return version, probs

    async def ascore(self, x: np.ndarray) -> tuple[int, np.ndarray, dict[str, int]]:
        """``apredict``'s answer and the unseen categories per field among the rows (``ModelSlot.score``)."""
        try:
            out = await asyncio.wait_for(awaited(self.handle.predict.remote(x)), self.timeout_s)
        except Exception as err:  # from the Router's side, whatever failed there, this slot cannot answer now
            why = f"no answer within {self.timeout_s:g} s" if isinstance(err, TimeoutError) else type(err).__name__
            raise SlotUnavailable(f"slot {self.name} (v{self.version}): {why}") from err
        return out["version"], np.asarray(out["probs"], dtype=float), dict(out.get("unseen") or {})


def _score(slot: Any, x: np.ndarray) -> tuple[np.ndarray, Unseen]:
    score = getattr(slot, "score", None)
    return score(x) if score is not None else (slot.predict(x), {})


class RouterCore:
    """Slots held by this replica, the weights it routes by, and per-slot request figures.

    ``answers`` says the task's answers (default binary); ``categorical`` names the features that
    are text (rows are then object arrays, ``row_dtype``). Categories a version never saw are
    counted per field (``unseen``; ``on_unseen(field, n)`` too, e.g. a Prometheus counter)."""

    def __init__(self, feature_names: list[str], seed: int | None = None,
                 remote: dict[str, Any] | None = None, remote_timeout_s: float | None = None,
                 answers: TaskAnswers | None = None, categorical: list[str] | tuple[str, ...] = ()) -> None:
        self.feature_names = list(feature_names)
        self.answers = answers or TaskAnswers()
        self.categorical = [f for f in self.feature_names if f in set(categorical)]
        self.row_dtype: type = object if self.categorical else float
        self.unseen: dict[str, int] = {f: 0 for f in self.categorical}
        self.on_unseen: Callable[[str, int], None] | None = None
        self.remote = remote  # isolated slots: a DeploymentHandle per slot instead of local boosters
        self.remote_timeout_s = remote_timeout_s
        self.slots: dict[str, ModelSlot | None] = {s: None for s in SLOTS}
        self.desired_versions: dict[str, int | None] = {s: None for s in SLOTS}
        self.weights: dict[str, int] = {"blue": 100, "green": 0}
        self.shadow_share = 0.0
        self.revision = -1
        self.stats_by_slot = {s: SlotStats() for s in SLOTS}
        self.shadow = {"compared": 0, "agreed": 0, "abs_diff_sum": 0.0, "judged": 0, "judge_errors": 0}
        self.judging = False  # a candidate rolls out: every request the other slot can score is copied to it
        self.load_errors: list[str] = []
        self.load_failures: dict[str, dict[str, Any]] = {}  # slot -> the version it could not load, and why
        # Regression: both slots' values are binned on one scale, the older held version's (the live one while
        # a newer candidate rolls out), so the canary's prediction-shift test compares like with like.
        self.value_scale: list[float] | None = None
        self.edges_of: Callable[[int], list[float] | None] | None = None  # a version's edges (isolated slots)
        self._edges: dict[int, list[float] | None] = {}
        self._rng = random.Random(seed)

    def held(self) -> dict[str, int | None]:
        """Version loaded in each slot."""
        return {s: (slot.version if slot else None) for s, slot in self.slots.items()}

    def ready_slots(self) -> list[str]:
        """Slots that hold the version the desired state asks for."""
        return [s for s, slot in self.slots.items()
                if slot is not None and slot.version == self.desired_versions[s]]

    def choose(self, key: str | None = None, pin: str | None = None) -> ModelSlot:
        """The slot for one request: pinned, sticky by routing key, or weighted random (ready slots only)."""
        ready = self.ready_slots()
        if pin is not None:
            if pin not in ready:
                raise SlotNotReadyError(f"slot {pin!r} holds no ready model (ready: {ready})")
            return self.slots[pin]  # type: ignore[return-value]
        if not ready:
            raise NoModelError("no model is loaded yet")
        total = sum(self.weights[s] for s in ready)
        if total <= 0:
            # The weighted slot is still loading: keep serving from the one that is ready.
            return self.slots[ready[0]]  # type: ignore[return-value]
        # A stable hash of the key picks the same slot on every replica while the weights hold.
        point = key_bucket(key) * total / 100.0 if key is not None else self._rng.uniform(0, total)
        for s in ready:
            point -= self.weights[s]
            if point < 0:
                return self.slots[s]  # type: ignore[return-value]
        return self.slots[ready[-1]]  # type: ignore[return-value]

    def predict(self, x: np.ndarray, key: str | None = None, pin: str | None = None) -> tuple[ModelSlot, np.ndarray]:
        """Route one request (one or more rows) to a local slot, predict, and record its figures."""
        slot = self.choose(key, pin)
        started = time.perf_counter()
        try:
            probs, unseen = _score(slot, x)
        except Exception:
            self._record(slot.name, started, None, pin)
            raise
        self._record(slot.name, started, probs, pin)
        self._count_unseen(unseen)
        if self.shadow_share > 0 and pin is None and self._rng.random() < self.shadow_share:
            self._shadow(slot, x, probs)
        return slot, probs

    async def apredict(self, x: np.ndarray, key: str | None = None,
                       pin: str | None = None) -> tuple[str, int, np.ndarray]:
        """Like ``predict``, for either slot mode: (slot name, version that answered, probabilities).
        While judging, the other slot's shadow copy is left for ``take_shadow_copy``."""
        _COPY.set(None)  # a copy never outlives the request it was made for
        _PINNED.set(pin is not None)
        if self.remote is None:
            slot, probs = self.predict(x, key, pin)
            self._copy_for_judging(slot.name, x, pin)
            return slot.name, slot.version, probs
        slot = self.choose(key, pin)
        started = time.perf_counter()
        try:
            version, probs, unseen = await slot.ascore(x)
        except Exception:
            self._record(slot.name, started, None, pin)
            fallback = self.slots[other_slot(slot.name)]
            if pin is not None or fallback is None or fallback.name not in self.ready_slots():
                raise
            # A slot replica that is (re)starting must not fail the request: the other slot answers.
            slot = fallback
            version, probs, unseen = await slot.ascore(x)
        self._record(slot.name, started, probs, pin)
        self._count_unseen(unseen)
        if self.shadow_share > 0 and pin is None and self._rng.random() < self.shadow_share:
            idle = self.slots[other_slot(slot.name)]
            if idle is not None and idle.name in self.ready_slots():
                try:
                    _, shadow = await idle.apredict(x)
                    self._compare(probs, shadow)
                except Exception:
                    pass
        self._copy_for_judging(slot.name, x, pin)
        return slot.name, version, probs

    def _record(self, slot: str, started: float, probs: np.ndarray | None, pin: str | None) -> None:
        """Count a request in its slot's figures (read by the canary analysis); a pinned one never."""
        if pin is None:
            self.stats_by_slot[slot].record(time.perf_counter() - started,
                                            self.answers.stats_values(probs, self.value_scale), error=probs is None)

    def _count_unseen(self, unseen: dict[str, Any]) -> None:
        """Count the categories the answering version never saw (rows' masks, or counts from a slot deployment)."""
        for f, rows in unseen.items():
            n = int(np.sum(rows))
            if n:
                self.unseen[f] = self.unseen.get(f, 0) + n
                if self.on_unseen is not None:
                    self.on_unseen(f, n)

    def _copy_for_judging(self, served: str, x: np.ndarray, pin: str | None) -> None:
        other = other_slot(served)
        if self.judging and pin is None and other in self.ready_slots():
            _COPY.set(ShadowCopy(self.slots[other], x, self.shadow))

    def _compare(self, probs: np.ndarray, shadow: np.ndarray) -> None:
        agreed, diff = self.answers.agreed(probs, shadow)
        self.shadow["compared"] += len(probs)
        self.shadow["agreed"] += agreed
        self.shadow["abs_diff_sum"] += diff

    def _shadow(self, served: ModelSlot, x: np.ndarray, probs: np.ndarray) -> None:
        """Copy the request to the other slot; compare its answers, never return them."""
        idle = self.slots[other_slot(served.name)]
        if idle is None or idle.name not in self.ready_slots():
            return
        try:
            shadow = idle.predict(x)
        except Exception:
            return
        self._compare(probs, shadow)

    async def apply(self, desired: dict[str, Any], loader: Loader) -> None:
        """Move toward the desired state: load missing versions (off the event loop), then take its weights."""
        for s in SLOTS:
            want = desired["slots"].get(s)
            have = self.slots[s]
            if self.remote is not None:  # the slot deployments load; their replicas report to the controller
                self.slots[s] = RemoteSlot(s, want, self.remote[s], self.remote_timeout_s) if want is not None else None
                continue
            if want is not None and (have is None or have.version != want):
                failed = self.load_failures.get(s)
                if failed is not None and failed["version"] == want and failed["revision"] == desired["revision"]:
                    continue  # it failed for this very request: the controller has been told; retry on a new one
                try:
                    self.slots[s] = await asyncio.to_thread(loader, s, want)
                    self.load_failures.pop(s, None)
                except Exception as err:  # keep serving what we have; the controller sees why we lack it
                    self.load_errors.append(f"{s} v{want}: {err}")
                    del self.load_errors[:-20]
                    self.load_failures[s] = {"version": want, "error": str(err), "revision": desired["revision"]}
                    continue
        self.desired_versions = dict(desired["slots"])
        if self.answers.task is Task.REGRESSION:
            await self._take_value_scale()
        self.weights = dict(desired["weights"])
        self.shadow_share = float(desired.get("shadow_share", 0.0))
        self.judging = judging(desired)
        self.revision = desired["revision"]

    async def _take_value_scale(self) -> None:
        """The quantile edges of the older held version's predictions become the scale regression values are
        binned on (a local slot's from its meta; a slot deployment's from the registry, through ``edges_of``)."""
        held = [v for v in self.desired_versions.values() if v is not None]
        if not held:
            return
        oldest = min(held)
        if oldest not in self._edges:
            local = [s for s in self.slots.values() if isinstance(s, ModelSlot) and s.version == oldest]
            if local:
                self._edges[oldest] = local[0].task.value_edges
            elif self.edges_of is not None:
                try:
                    self._edges[oldest] = await asyncio.to_thread(self.edges_of, oldest)
                except Exception:  # the registry is unreachable now: keep the scale there is, ask again later
                    return
            else:
                return
        self.value_scale = self._edges[oldest]
        self._edges = {v: e for v, e in self._edges.items() if v in held}

    def report(self) -> dict[str, Any]:
        """What the rollout controller needs: held versions, verification, cumulative per-slot figures."""
        held = {} if self.remote is not None else self.held()  # only slot replicas hold models then
        return {"held": held, "revision": self.revision, "load_failures": dict(self.load_failures),
                "verified": {s: (slot.verified if slot else None) for s, slot in self.slots.items()},
                "stats": {s: st.to_dict() for s, st in self.stats_by_slot.items()},
                "shadow": dict(self.shadow)}

    def stats(self) -> dict[str, Any]:
        """Held versions, weights and per-slot request counters."""
        return {"held": self.held(), "weights": dict(self.weights), "revision": self.revision,
                "served": {s: st.requests for s, st in self.stats_by_slot.items()},
                "errors": {s: st.errors for s, st in self.stats_by_slot.items()},
                "shadow": dict(self.shadow), "load_errors": list(self.load_errors),
                **({"unseen_categories": dict(self.unseen)} if self.categorical else {})}
