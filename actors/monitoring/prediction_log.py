"""Served predictions joined with the labels that arrive later: accuracy, logloss and AUC per version.

Router replicas log each prediction with its event id; labels come later from the stream (or,
when the label overtook the prediction, earlier). ``PredictionLog`` joins them in either order
in bounded memory, and reports each version's outcomes on real requests — the canary analysis
reads ``accuracy_since`` per step.

While a candidate rolls out, the other slot also scores each request in shadow: such a row
carries a sixth element, ``True``. Shadow answers never reach a client, so they count in no
version's served figures; they pair up with the served answer to the same event, and
``paired_since`` says on how many labelled requests both versions answered, and which was right.

Memory is bounded whatever clients send: an event id over ``MAX_ID_CHARS`` is keyed by its digest
(both sides of the join map it alike), predictions waiting for labels and labels waiting for
predictions are each capped by count (``capacity``) and by bytes (``max_bytes``, the oldest go,
counted in ``stats()``), and outcomes are kept for the ``max_versions`` versions joined most lately.

Example:
    >>> log = PredictionLog()
    >>> log.record([("e1", 3, "blue", 0.9, 10.0), ("e2", 3, "blue", 0.2, 11.0)])
    >>> log.record([("e1", 4, "green", 0.1, 10.0, True), ("e2", 4, "green", 0.8, 11.0, True)])
    >>> log.labels(["e1", "e2"], [1.0, 1.0], now=12.0)
    2
    >>> log.accuracy_since(3, since=0.0), log.accuracy_since(4, since=0.0)
    ((2, 0.5), None)
    >>> log.paired_since(3, 4, since=0.0)["n"], log.paired_since(3, 4, since=0.0)["both"]
    (2, 0)
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from typing import Any, Iterable

import numpy as np

from streamfit.metrics import labelled_scores

Answer = tuple[int, str, float, float, bool]  # version, slot, probability, time, shadow
MAX_ID_CHARS = 256  # a longer event id is keyed by its digest
ENTRY_BYTES = 200  # a waiting entry besides its id: the dict slot, the list, one answer tuple and its numbers
ANSWER_BYTES = 120  # each further answer to the same event (its tuple and numbers)
LABEL_BYTES = 120  # an early label besides its id


def bounded_id(event_id: Any) -> Any:
    """The key of an event id: itself, or for text over ``MAX_ID_CHARS`` a digest of it.

    >>> bounded_id("e1"), len(bounded_id("x" * 10_000))
    ('e1', 33)
    """
    if type(event_id) is str and len(event_id) > MAX_ID_CHARS:
        return "#" + hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()
    return event_id


def _id_bytes(key: Any) -> int:
    return len(key) if type(key) is str else 8


class PredictionLog:
    """Predictions waiting for labels (and labels waiting for predictions), and per-version outcomes."""

    def __init__(self, capacity: int = 200_000, window: int = 5000, answers: int = 50_000,
                 max_bytes: int = 64_000_000, max_versions: int = 32) -> None:
        self.capacity, self.max_bytes, self.max_versions = capacity, max_bytes, max_versions
        self.window = window
        self.waiting: OrderedDict[str, list[Answer]] = OrderedDict()
        self.early_labels: OrderedDict[str, float] = OrderedDict()
        self.waiting_bytes = 0
        self.label_bytes = 0
        self.evicted = {"waiting": 0, "early_labels": 0, "versions": 0}
        # version -> (time, prob, label); the least lately joined version goes past max_versions
        self.outcomes: OrderedDict[int, deque[tuple[float, float, float]]] = OrderedDict()
        # Every joined answer, served or shadow, in join order: (join time, event id, version, right, shadow).
        self.answers: deque[tuple[float, str, int, bool, bool]] = deque(maxlen=answers)
        self.predictions_logged = 0
        self.shadow_logged = 0
        self.joined = 0

    def record(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Log predictions: (event_id, version, slot, probability, time[, shadow])."""
        for event_id, version, slot, prob, t, *rest in rows:
            event_id = bounded_id(event_id)
            shadow = bool(rest and rest[0])
            self.shadow_logged += shadow
            self.predictions_logged += not shadow
            answer = (int(version), slot, float(prob), float(t), shadow)
            label = self.early_labels.get(event_id)
            if label is not None:
                self._join(event_id, answer, label, float(t))
                continue
            held = self.waiting.get(event_id)
            if held is None:
                self.waiting[event_id] = [answer]
                self.waiting_bytes += ENTRY_BYTES + _id_bytes(event_id)
            else:
                held.append(answer)
                self.waiting_bytes += ANSWER_BYTES
            while len(self.waiting) > self.capacity or self.waiting_bytes > self.max_bytes:
                self._unwait(*self.waiting.popitem(last=False))
                self.evicted["waiting"] += 1

    def _unwait(self, event_id: Any, answers: list[Answer]) -> None:
        self.waiting_bytes -= ENTRY_BYTES + _id_bytes(event_id) + ANSWER_BYTES * (len(answers) - 1)

    def labels(self, event_ids: Iterable[str], labels: Iterable[float], now: float | None = None) -> int:
        """Labels that arrived; returns how many matched a logged prediction."""
        now = time.time() if now is None else now
        matched = 0
        for event_id, label in zip(event_ids, labels):
            event_id = bounded_id(event_id)
            # Kept (bounded) after a join too: a shadow answer from another deployment may come a flush later.
            if event_id not in self.early_labels:
                self.label_bytes += LABEL_BYTES + _id_bytes(event_id)
            self.early_labels[event_id] = float(label)
            while len(self.early_labels) > self.capacity or self.label_bytes > self.max_bytes:
                self.label_bytes -= LABEL_BYTES + _id_bytes(self.early_labels.popitem(last=False)[0])
                self.evicted["early_labels"] += 1
            hit = self.waiting.pop(event_id, None)
            if hit is None:
                continue
            self._unwait(event_id, hit)
            for answer in hit:
                self._join(event_id, answer, float(label), now)
            matched += 1
        return matched

    def _join(self, event_id: str, answer: Answer, label: float, t: float) -> None:
        version, _, prob, _, shadow = answer
        self.answers.append((t, event_id, version, (prob >= 0.5) == (label >= 0.5), shadow))
        if shadow:
            return
        self.joined += 1
        rows = self.outcomes.get(version)
        if rows is None:
            rows = self.outcomes[version] = deque(maxlen=self.window)
            while len(self.outcomes) > self.max_versions:
                self.outcomes.popitem(last=False)
                self.evicted["versions"] += 1
        else:
            self.outcomes.move_to_end(version)
        rows.append((t, prob, label))

    def stats(self) -> dict[str, Any]:
        """Entries and bytes held (waiting predictions, early labels), versions with outcomes, evictions."""
        return {"waiting": len(self.waiting), "waiting_bytes": self.waiting_bytes,
                "early_labels": len(self.early_labels), "early_label_bytes": self.label_bytes,
                "versions": len(self.outcomes), "evicted": dict(self.evicted)}

    def accuracy_since(self, version: Any, since: float) -> Any:
        """(labelled predictions, accuracy) of ``version`` served and joined at or after ``since``; None if none.
        A ``(live, candidate)`` pair of versions asks ``paired_since`` (what the monitor actor can forward)."""
        if isinstance(version, (tuple, list)):
            return self.paired_since(*version, since=since)
        rows = [(p, y) for t, p, y in self.outcomes.get(version, ()) if t >= since]
        if not rows:
            return None
        p, y = np.array(rows).T
        return len(rows), float(((p >= 0.5) == (y >= 0.5)).mean())

    def paired_since(self, live: int, candidate: int, since: float, newest: int = 100) -> dict[str, Any]:
        """Labelled requests joined since ``since`` that both versions answered (one served, one in shadow,
        or both served by a replica that shadowed): counts of who was right, over all of them and over the
        ``newest``; and ``live_labelled``, live's served labelled requests joined in the 60 s before ``since``
        and after (no labels flowing: nothing will ever pair)."""
        by_event: dict[str, dict[int, bool]] = {}
        order: list[str] = []
        live_labelled = 0
        for t, event_id, version, right, shadow in reversed(self.answers):
            if t < since - 60.0:
                break
            live_labelled += version == live and not shadow
            if t < since or version not in (live, candidate):
                continue
            seen = by_event.setdefault(event_id, {})
            if not seen:
                order.append(event_id)
            seen.setdefault(version, right)
        pairs = [by_event[e] for e in order if len(by_event[e]) == 2]  # newest first
        return {**_counts(pairs, live, candidate), "newest": _counts(pairs[:newest], live, candidate),
                "live_labelled": live_labelled}

    def per_version(self) -> dict[int, dict[str, Any]]:
        """Accuracy, logloss, AUC and labelled count of each version over the sliding window."""
        return scores_by_version(self.outcomes)


def _counts(pairs: list[dict[int, bool]], live: int, candidate: int) -> dict[str, int]:
    lr = np.array([p[live] for p in pairs], dtype=bool)
    cr = np.array([p[candidate] for p in pairs], dtype=bool)
    return {"n": len(pairs), "live_only": int((lr & ~cr).sum()), "cand_only": int((cr & ~lr).sum()),
            "both": int((lr & cr).sum())}


def scores_by_version(outcomes: dict[int, deque[tuple[float, ...]]]) -> dict[int, dict[str, Any]]:
    """``labelled_scores`` of each version's outcome rows, whose last two columns are (probability, label)."""
    out = {}
    for version, rows in outcomes.items():
        if rows:
            p, y = np.array(list(rows))[:, -2:].T
            out[version] = labelled_scores(y, p)
    return out
