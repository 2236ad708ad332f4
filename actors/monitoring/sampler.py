"""The time series behind the status page: successive cumulative reports of the planes turned into
points, rates, and what each counter moved since the previous sample.

The coordinator and the Router replicas report cumulative counters; ``Sampler.take`` keeps the
previous report and returns a ``Sample``: the point appended to the series (rates per second,
latency percentiles of the requests since the last sample, drift, accuracy, the serving/training
skew) and the deltas the Prometheus counters need (``metrics_export``). It reads no clock: the
caller passes ``now``. The skew in a point keeps only the features that differ (a point per
sample, hundreds of them); the latest full figures are ``Sampler.skew``.

Example:
    >>> s = Sampler(points=10)
    >>> _ = s.take(100.0, coordinator={"events": 100, "accepted": 90, "rejected": 10, "reasons": {}})
    >>> sample = s.take(102.0, coordinator={"events": 300, "accepted": 280, "rejected": 20, "reasons": {}})
    >>> sample.point["events_per_s"], sample.point["rejected_per_s"], sample.moved["accepted"]
    (100.0, 5.0, 190)
    >>> len(s.series)
    2
    >>> skew = {"compared_rows": 4, "rows_differing": 1, "features": {
    ...     "a": {"differing": 1, "share": 0.25, "max_abs_diff": 2.0},
    ...     "b": {"differing": 0, "share": 0.0, "max_abs_diff": 0.0}}}
    >>> s.take(104.0, coordinator={"events": 300, "skew": skew}).point["skew"]["features"]
    {'a': {'differing': 1, 'share': 0.25, 'max_abs_diff': 2.0}}
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from streamfit.request_stats import empty_stats, minus, summary

QUALITY = ("accepted", "rejected", "events", "reasons", "null_rate", "watermark_lag_s")
NO_DRIFT: dict[str, Any] = {"psi": {}, "prediction_psi": None}
ERROR_METRICS = ("rmse", "mae")  # a regression version's live quality in a point, by version


@dataclass
class Sample:
    """One sample of every plane: the time-series point, and what moved since the previous sample."""

    point: dict[str, Any]
    coordinator: dict[str, Any] | None = None  # the coordinator's cumulative stats
    moved: dict[str, Any] = field(default_factory=dict)  # events, accepted, rejected, reasons since the last sample
    control: dict[str, Any] | None = None  # the rollout controller's status
    slots: dict[str, dict[str, Any]] = field(default_factory=dict)  # summary of each slot's requests since the last
    drift: dict[str, Any] = field(default_factory=lambda: dict(NO_DRIFT))
    stream_accuracy: dict[int, dict[str, Any]] = field(default_factory=dict)
    served_accuracy: dict[int, dict[str, Any]] = field(default_factory=dict)
    refits: list[dict[str, Any]] | None = None  # the trainer's refits (None: no trainer attached)
    refit_counts: dict[str, int] | None = None  # the trainer's accepted refits by reason, since the first
    refit_reason: str | None = None  # set when the alarm policy asks for a refit now
    skew: dict[str, Any] | None = None  # the coordinator's serving/training skew (None: not reported)
    freshness: dict[str, Any] | None = None  # served accuracy, stale share, seconds to 100 % (FreshnessTracker)


def differing_only(skew: dict[str, Any]) -> dict[str, Any]:
    """The skew figures without the features that never differed (what a point of the series keeps)."""
    return {**skew, "features": {f: s for f, s in skew.get("features", {}).items() if s.get("differing")}}


def moved_since(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What the coordinator's counters moved between two of its cumulative reports."""
    out: dict[str, Any] = {k: now.get(k, 0) - before.get(k, 0) for k in ("events", "accepted", "rejected")}
    out["reasons"] = {r: n - before.get("reasons", {}).get(r, 0) for r, n in now.get("reasons", {}).items()}
    return out


class Sampler:
    """The series of points, and the previous cumulative reports the next point's rates are taken against."""

    def __init__(self, points: int) -> None:
        self.series: deque[dict[str, Any]] = deque(maxlen=points)
        self.t: float | None = None
        self.coordinator: dict[str, Any] | None = None
        self.slot_stats: dict[str, Any] | None = None
        self.skew: dict[str, Any] | None = None

    def take(self, now: float, coordinator: dict[str, Any] | None = None, control: dict[str, Any] | None = None,
             drift: dict[str, Any] | None = None, accuracy: dict[int, dict[str, Any]] | None = None) -> Sample:
        """Append the point of ``now`` from the planes' reports (None: not attached) and return the sample."""
        dt = now - self.t if self.t is not None else 0.0
        sample = Sample({"t": now}, coordinator=coordinator, control=control, drift=drift or dict(NO_DRIFT))
        if coordinator is not None:
            self._coordinator(sample, coordinator, dt)
        if control is not None:
            self._slots(sample, control, dt)
        sample.point["psi"] = sample.drift["psi"]
        sample.point["prediction_psi"] = sample.drift.get("prediction_psi")
        accuracy = accuracy or {}
        sample.point["accuracy"] = {str(v): a["accuracy"] for v, a in accuracy.items() if "accuracy" in a}
        for metric in ERROR_METRICS:  # a regression task's versions: their errors instead of an accuracy
            if any(metric in a for a in accuracy.values()):
                sample.point[metric] = {str(v): a[metric] for v, a in accuracy.items() if metric in a}
        self.t = now
        self.series.append(sample.point)
        return sample

    def _coordinator(self, sample: Sample, c: dict[str, Any], dt: float) -> None:
        if self.coordinator is not None and dt > 0:
            sample.moved = moved_since(c, self.coordinator)
            sample.point["events_per_s"] = sample.moved["events"] / dt
            sample.point["rejected_per_s"] = sample.moved["rejected"] / dt
        sample.point["quality"] = {k: c.get(k) for k in QUALITY}
        if c.get("skew") is not None:
            sample.skew = self.skew = c["skew"]
            sample.point["skew"] = differing_only(c["skew"])
        self.coordinator = c

    def _slots(self, sample: Sample, st: dict[str, Any], dt: float) -> None:
        point = sample.point
        point["weights"], point["slots"] = st["weights"], st["slots"]
        point["p50_ms"], point["p99_ms"], point["requests_per_s"] = {}, {}, {}
        if self.slot_stats is not None:
            for slot, stats in st["slot_stats"].items():
                s = sample.slots[slot] = summary(minus(stats, self.slot_stats.get(slot, empty_stats())))
                point["p50_ms"][slot], point["p99_ms"][slot] = s["p50_ms"], s["p99_ms"]
                point["requests_per_s"][slot] = s["requests"] / dt if dt > 0 else None
        self.slot_stats = st["slot_stats"]
