"""Freshness live: request-weighted served accuracy, the stale share and the seconds to full traffic.

``FreshnessTracker`` sees what the monitor sees: the answers Router replicas returned (a shadow answer,
marked by a sixth element ``True``, reached no client and is left out), the labels as they arrive, and
every few seconds the controller's split and the trainer's refits. Live there is no ground truth of when
a concept begins: each drift-triggered refit (the trainer's detector, or the monitor's drift alarm asking
for one) is taken as an estimated concept change — it starts at the refit's newest event time and was
detected at the sample that first saw it. A version was trained at the refit's newest event time too
(the trainer's refits say which refit made it; the registry's ``window.end`` when they do not), so the
drift refit's own version is the first fresh one. A request is stale when the version answering it was
trained before the newest change detected by then. It reads no clock: the caller passes ``now``.
Whether an answer was right is the caller's ``right`` (binary at 0.5 by default; the likeliest class
for multiclass); a regression answer is never right or wrong, so it counts in the stale share only.

Example:
    >>> trained = {1: 100.0, 2: 260.0}
    >>> f = FreshnessTracker(window_s=60.0, trained_through=trained.get)
    >>> f.observe(1000.0, {"slots": {"blue": 1}, "weights": {"blue": 100}}, {"refits": []})
    >>> f.observe(1002.0, None, {"refits": [{"reason": "drift", "event_time": 250.0}]})
    >>> f.record([("e1", 1, "blue", 0.9, 1003.0), ("e1", 2, "green", 0.2, 1003.0, True)])
    >>> f.labels(["e1"], [1.0], now=1004.0)
    >>> f.observe(1010.0, {"slots": {"blue": 1, "green": 2}, "weights": {"blue": 0, "green": 100}}, None)
    >>> fig = f.figures(1012.0)
    >>> fig["served_accuracy"], fig["stale_share"], fig["requests"], fig["changes"][0]["seconds"]
    (1.0, 1.0, 1, 8.0)
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Callable, Iterable, Optional

from streamfit.freshness import Change, full_version, is_stale, seconds_to_full, spread
from streamfit.actors.monitoring.prediction_log import bounded_id

DRIFT_REASONS = ("drift",)  # refit reasons that mark a (detected) concept change
MERGE_S = 30.0  # a detection within this many wall seconds of the previous one is the same change
MAX_CHANGES = 50
RECENT_MAX = 200_000  # requests and labels kept for the recent window
SEEN_KEPT = 2_000  # refits remembered (twice what a trainer reports: it keeps its newest 1,000 attempts)


class FreshnessTracker:
    """Served answers joined with labels, detected changes and the version at 100 % over time."""

    def __init__(self, window_s: float, trained_through: Callable[[int], Optional[float]],
                 capacity: int = 100_000, right: Callable[[Any, float], Optional[bool]] | None = None) -> None:
        self.window_s = window_s
        self.right = right or (lambda prob, label: (prob >= 0.5) == (label >= 0.5))
        self.trained_through = trained_through
        self.capacity = capacity
        self.waiting: OrderedDict[str, tuple[Any, bool]] = OrderedDict()  # event id -> (prediction, stale)
        self.early: OrderedDict[str, float] = OrderedDict()  # labels that came before their answer was logged
        self.requests = 0
        self.stale = 0
        self.labelled = 0
        self.correct = 0
        self.recent: deque[tuple[float, bool, Optional[bool]]] = deque(maxlen=RECENT_MAX)  # (time, stale, right; None: no label)
        self.changes: list[Change] = []
        self.seen_refits: dict[tuple[float, str], None] = {}  # insertion-ordered: the oldest go first
        self.full: list[tuple[float, Optional[int]]] = []  # (time, version at 100 %) whenever it changed
        self.refit_time: dict[int, float] = {}  # version -> newest event time of the refit that made it

    # -- inputs ------------------------------------------------------------------------
    def record(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Answers a Router replica returned: (event_id, version, slot, probability, time[, shadow])."""
        start = self.changes[-1].start if self.changes else None
        for event_id, version, _slot, prob, t, *rest in rows:
            if rest and rest[0]:
                continue
            stale = is_stale(self.trained_at(int(version)), start)
            self.requests += 1
            self.stale += stale
            self.recent.append((float(t), stale, None))
            label = self.early.pop(bounded_id(str(event_id)), None)
            if label is not None:  # replicas log answers in batches: the label may have come first
                self._score(prob, stale, label, float(t))
                continue
            self.waiting[bounded_id(str(event_id))] = (prob, stale)
            if len(self.waiting) > self.capacity:
                self.waiting.popitem(last=False)

    def labels(self, event_ids: Iterable[str], labels: Iterable[float], now: float) -> None:
        """Labels that arrived: each one scores the answer its event got."""
        for event_id, label in zip(event_ids, labels):
            hit = self.waiting.pop(bounded_id(str(event_id)), None)
            if hit is None:
                self.early[bounded_id(str(event_id))] = float(label)
                if len(self.early) > self.capacity:
                    self.early.popitem(last=False)
                continue
            self._score(hit[0], hit[1], float(label), now)

    def _score(self, prob: Any, stale: bool, label: float, now: float) -> None:
        right = self.right(prob, label)
        if right is None:  # a value (regression): no right or wrong
            return
        self.labelled += 1
        self.correct += right
        self.recent.append((now, stale, right))

    def observe(self, now: float, controller: Optional[dict[str, Any]], trainer: Optional[dict[str, Any]]) -> None:
        """A sample of the planes: the version at 100 % now, and drift refits not seen before (new changes)."""
        if controller is not None:
            v = full_version(controller.get("slots", {}), controller.get("weights", {}))
            if not self.full or self.full[-1][1] != v:
                self.full.append((now, v))
        if trainer is not None:
            for r in trainer.get("refits", []):
                if r.get("version") is not None and r.get("event_time") is not None:
                    self.refit_time[int(r["version"])] = float(r["event_time"])
            for r in trainer.get("refits", []) + trainer.get("rejected", []):
                if r.get("reason") not in DRIFT_REASONS or r.get("event_time") is None:
                    continue
                key = (float(r["event_time"]), str(r["reason"]))
                if key in self.seen_refits:
                    continue
                self.seen_refits[key] = None
                if not (self.changes and now - self.changes[-1].wall < MERGE_S):
                    self.changes = (self.changes + [Change(key[0], now)])[-MAX_CHANGES:]
        # Bounded: the trainer reports only its newest refit attempts, so older keys are never seen again.
        for old in list(self.seen_refits)[:-SEEN_KEPT]:
            del self.seen_refits[old]
        for version in sorted(self.refit_time)[:-SEEN_KEPT]:
            del self.refit_time[version]
        while self.recent and self.recent[0][0] < now - self.window_s:
            self.recent.popleft()

    def trained_at(self, version: int) -> Optional[float]:
        """When ``version`` was trained, in event time: its refit's newest row, else its newest training row."""
        return self.refit_time.get(version, self.trained_through(version))

    # -- outputs -----------------------------------------------------------------------
    def figures(self, now: float) -> dict[str, Any]:
        """Served accuracy (overall and over the recent window), stale share, and seconds to 100 % per change."""
        recent = [(s, r) for t, s, r in self.recent if t >= now - self.window_s]
        recent_scored = [r for _, r in recent if r is not None]
        recent_stale = [s for s, r in recent if r is None]
        trained = {v: self.trained_at(v) for _, v in self.full if v is not None}
        per_change = seconds_to_full(self.changes, {v: t for v, t in trained.items() if t is not None}, self.full, now)
        return {
            "served_accuracy": self.correct / self.labelled if self.labelled else None,
            "labelled": self.labelled,
            "served_accuracy_recent": sum(recent_scored) / len(recent_scored) if recent_scored else None,
            "labelled_recent": len(recent_scored),
            "window_s": self.window_s,
            "stale_share": self.stale / self.requests if self.requests else None,
            "stale_share_recent": sum(recent_stale) / len(recent_stale) if recent_stale else None,
            "requests": self.requests,
            "changes": per_change,
            "detected_changes": len(per_change),
            **spread([c["seconds"] for c in per_change]),
        }
