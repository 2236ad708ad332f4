"""Served predictions joined with the labels that arrive later: the task's metrics per version.

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

Per task (``spec``, contract 4 of issue 15): a prediction is p(label=1) (binary), the value (regression)
or a list of k class probabilities (multiclass), a label 0/1, the value or the class index. Versions are
reported with the task's metrics; the canary's figures speak its metric (``TaskSpec.canary_metric``):
accuracy, with who was right on each pair, for classes; for regression the objective's loss,
``(n, value, metric, sd of the per-row loss)`` since a time and per pair each version's loss.

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
    >>> from streamfit.task import Task, TaskSpec
    >>> reg = PredictionLog(spec=TaskSpec(Task.REGRESSION))
    >>> reg.record([("a", 1, "blue", 2.0, 1.0), ("b", 1, "blue", 5.0, 1.0)]); reg.labels(["a", "b"], [3.0, 5.0], now=2.0)
    2
    >>> reg.accuracy_since(1, since=0.0)[:3], reg.per_version()[1]["mae"]
    ((2, 0.7071067811865476, 'rmse'), 0.5)
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from typing import Any, Iterable

import numpy as np

from streamfit.metrics import labelled_scores
from streamfit.task import Task, TaskSpec, metric_of_mean

Prediction = float | tuple[float, ...]  # a probability or a value; k class probabilities (multiclass)
Answer = tuple[int, str, Prediction, float, bool]  # version, slot, prediction, time, shadow
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


def _extra_bytes(answer: Answer) -> int:
    """What k class probabilities add to an answer over one number: the tuple and its floats."""
    pred = answer[2]
    return 56 + 32 * len(pred) if isinstance(pred, tuple) else 0


class PredictionLog:
    """Predictions waiting for labels (and labels waiting for predictions), and per-version outcomes."""

    def __init__(self, capacity: int = 200_000, window: int = 5000, answers: int = 50_000,
                 max_bytes: int = 64_000_000, max_versions: int = 32, spec: TaskSpec | None = None) -> None:
        self.capacity, self.max_bytes, self.max_versions = capacity, max_bytes, max_versions
        self.spec = spec or TaskSpec()
        self.metric = self.spec.canary_metric  # accuracy (classes) or the regression objective's loss
        self.window = window
        self.waiting: OrderedDict[str, list[Answer]] = OrderedDict()
        self.early_labels: OrderedDict[str, float] = OrderedDict()
        self.waiting_bytes = 0
        self.label_bytes = 0
        self.evicted = {"waiting": 0, "early_labels": 0, "versions": 0}
        # version -> (time, prediction (k columns for multiclass), label); the least lately joined go past max_versions
        self.outcomes: OrderedDict[int, deque[tuple[float, ...]]] = OrderedDict()
        # Every joined answer, served or shadow, in join order: (join time, event id, version, right, shadow);
        # for regression the answer's loss (``metric``'s per-row value) where classes keep whether it was right.
        self.answers: deque[tuple[float, str, int, bool | float, bool]] = deque(maxlen=answers)
        self.predictions_logged = 0
        self.shadow_logged = 0
        self.joined = 0

    def record(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Log predictions: (event_id, version, slot, prediction, time[, shadow])."""
        many = self.spec.task is Task.MULTICLASS
        for event_id, version, slot, prob, t, *rest in rows:
            event_id = bounded_id(event_id)
            shadow = bool(rest and rest[0])
            self.shadow_logged += shadow
            self.predictions_logged += not shadow
            answer = (int(version), slot, tuple(map(float, prob)) if many else float(prob), float(t), shadow)
            label = self.early_labels.get(event_id)
            if label is not None:
                self._join(event_id, answer, label, float(t))
                continue
            held = self.waiting.get(event_id)
            if held is None:
                self.waiting[event_id] = [answer]
                self.waiting_bytes += ENTRY_BYTES + _id_bytes(event_id) + _extra_bytes(answer)
            else:
                held.append(answer)
                self.waiting_bytes += ANSWER_BYTES + _extra_bytes(answer)
            while len(self.waiting) > self.capacity or self.waiting_bytes > self.max_bytes:
                self._unwait(*self.waiting.popitem(last=False))
                self.evicted["waiting"] += 1

    def _unwait(self, event_id: Any, answers: list[Answer]) -> None:
        self.waiting_bytes -= (ENTRY_BYTES + _id_bytes(event_id) + ANSWER_BYTES * (len(answers) - 1)
                               + sum(_extra_bytes(a) for a in answers))

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

    def right(self, pred: Prediction, label: float) -> bool | None:
        """Whether an answer got its label right (binary at 0.5, multiclass by the likeliest class, ties to the
        lowest index); None for regression, whose answers have no right or wrong."""
        if self.spec.task is Task.BINARY:
            return (pred >= 0.5) == (label >= 0.5)  # type: ignore[operator]
        if self.spec.task is Task.MULTICLASS:
            return max(range(len(pred)), key=pred.__getitem__) == int(label)  # type: ignore[arg-type]
        return None

    def _value(self, pred: Prediction, label: float) -> bool | float:
        """What the canary compares per answer: right (classes), or the loss of ``metric`` (regression)."""
        right = self.right(pred, label)
        if right is not None:
            return right
        err = label - pred  # type: ignore[operator]
        if self.metric == "rmse":
            return err * err
        if self.metric == "mae":
            return abs(err)
        a = self.spec.quantile_alpha
        return max(a * err, (a - 1) * err)

    def _join(self, event_id: str, answer: Answer, label: float, t: float) -> None:
        version, _, prob, _, shadow = answer
        self.answers.append((t, event_id, version, self._value(prob, label), shadow))
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
        rows.append((t, *prob, label) if isinstance(prob, tuple) else (t, prob, label))

    def stats(self) -> dict[str, Any]:
        """Entries and bytes held (waiting predictions, early labels), versions with outcomes, evictions."""
        return {"waiting": len(self.waiting), "waiting_bytes": self.waiting_bytes,
                "early_labels": len(self.early_labels), "early_label_bytes": self.label_bytes,
                "versions": len(self.outcomes), "evicted": dict(self.evicted)}

    def accuracy_since(self, version: Any, since: float) -> Any:
        """(labelled predictions, accuracy) of ``version`` served and joined at or after ``since``; None if none
        (regression: (labelled, value, metric, sd of the per-row loss) of the canary's metric).
        A ``(live, candidate)`` pair of versions asks ``paired_since`` (what the monitor actor can forward)."""
        if isinstance(version, (tuple, list)):
            return self.paired_since(*version, since=since)
        if self.spec.task is Task.BINARY:
            rows = [(p, y) for t, p, y in self.outcomes.get(version, ()) if t >= since]
            if not rows:
                return None
            p, y = np.array(rows).T
            return len(rows), float(((p >= 0.5) == (y >= 0.5)).mean())
        rows = [r for r in self.outcomes.get(version, ()) if r[0] >= since]
        if not rows:
            return None
        arr = np.array(rows, dtype=float)
        values = self.spec.row_values(self.metric, arr[:, -1], _predictions(arr, 1))
        if self.spec.task is Task.MULTICLASS:
            return len(rows), float(values.mean())
        return len(rows), metric_of_mean(self.metric, float(values.mean())), self.metric, float(values.std())

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
        counts = _counts if self.metric == "accuracy" else self._losses
        return {**counts(pairs, live, candidate), "newest": counts(pairs[:newest], live, candidate),
                "live_labelled": live_labelled}

    def _losses(self, pairs: list[dict[int, float]], live: int, candidate: int) -> dict[str, Any]:
        """Pairs of per-row losses: each version's metric on them, the mean and sd of (candidate - live) loss,
        and on how many each was closer (ties: ``both``)."""
        lv = np.array([p[live] for p in pairs], dtype=float)
        cv = np.array([p[candidate] for p in pairs], dtype=float)
        d = cv - lv
        out: dict[str, Any] = {"n": len(pairs), "metric": self.metric, "live_only": int((d > 0).sum()),
                               "cand_only": int((d < 0).sum()), "both": int((d == 0).sum())}
        if len(pairs):
            out.update(live_value=metric_of_mean(self.metric, float(lv.mean())),
                       cand_value=metric_of_mean(self.metric, float(cv.mean())),
                       mean_diff=float(d.mean()), sd_diff=float(d.std(ddof=1)) if len(d) > 1 else 0.0)
        return out

    def per_version(self) -> dict[int, dict[str, Any]]:
        """The task's metrics and labelled count of each version over the sliding window."""
        return scores_by_version(self.outcomes, self.spec, start=1)


def _predictions(arr: np.ndarray, start: int) -> np.ndarray:
    """The prediction columns of outcome rows (``start``: where they begin; the label is the last column):
    one column as a vector, k class probabilities as an (n, k) matrix."""
    pred = arr[:, start:-1]
    return pred[:, 0] if pred.shape[1] == 1 else pred


def _counts(pairs: list[dict[int, bool]], live: int, candidate: int) -> dict[str, int]:
    lr = np.array([p[live] for p in pairs], dtype=bool)
    cr = np.array([p[candidate] for p in pairs], dtype=bool)
    return {"n": len(pairs), "live_only": int((lr & ~cr).sum()), "cand_only": int((cr & ~lr).sum()),
            "both": int((lr & cr).sum())}


def scores_by_version(outcomes: dict[int, deque[tuple[float, ...]]], spec: TaskSpec | None = None,
                      start: int = 0) -> dict[int, dict[str, Any]]:
    """``labelled_scores`` of each version's outcome rows: the prediction from column ``start`` (one, or k class
    probabilities), the label last."""
    out = {}
    for version, rows in outcomes.items():
        if rows:
            arr = np.array(list(rows), dtype=float)
            out[version] = labelled_scores(arr[:, -1], _predictions(arr, start), spec)
    return out
