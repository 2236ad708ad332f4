"""The monitor's state behind its actor: inputs joined, queries answered, one sample per tick.

``Monitor`` holds the ``PredictionLog`` (served predictions and their labels), the
``StreamMonitor`` (drift and accuracy on the stream, following the registry's live version),
the ``Sampler`` (time series) and the ``RefitAlarm`` (when to ask for a refit). It reads no
clock and calls no actor: ``MonitorActor`` passes ``now`` and the planes' reports.

Example:
    >>> from streamfit.config import MonitorConfig
    >>> mon = Monitor(MonitorConfig())
    >>> mon.record([("e1", 1, "blue", 0.8, 10.0)])
    >>> mon.labels(["e1"], [1.0], now=11.0)
    1
    >>> mon.per_version()[1]["source"], mon.stats()["joined"]
    ('served', 1)
    >>> mon.sample(12.0).point["accuracy"]
    {'1': 1.0}
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from streamfit.config import MonitorConfig
from streamfit.registry import Registry
from streamfit.task import TaskSpec
from streamfit.actors.monitoring.alarms import RefitAlarm
from streamfit.actors.monitoring.freshness import FreshnessTracker
from streamfit.actors.monitoring.prediction_log import PredictionLog
from streamfit.actors.monitoring.sampler import Sample, Sampler
from streamfit.actors.monitoring.stream_monitor import StreamMonitor

MIN_SERVED_LABELS = 30  # below this many labelled served predictions, the stream's accuracy speaks for a version
ALIAS_CHECK_S = 1.0
# The freshness figures a point of the time series keeps (the per-change list stays in stats()).
POINT_FRESHNESS = ("served_accuracy", "served_accuracy_recent", "labelled", "stale_share", "stale_share_recent",
                   "requests", "detected_changes", "p50_s", "max_s")


def merge_accuracy(stream: dict[int, dict[str, Any]], served: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each version's quality on served, labelled requests where there are enough, else on the stream."""
    out = {}
    for v in set(stream) | set(served):
        s, st = served.get(v), stream.get(v)
        if s is not None and (s["labelled"] >= MIN_SERVED_LABELS or st is None):
            out[v] = {**s, "source": "served"}
        else:
            out[v] = {**st, "source": "stream"}
    return out


class Monitor:
    """Prediction log, stream monitor, time series and refit alarm of one deployment."""

    def __init__(self, cfg: MonitorConfig, registry: Registry | None = None, feature_names: list[str] | None = None,
                 fields: list[str] | None = None, spec: TaskSpec | None = None) -> None:
        self.cfg = cfg
        self.registry = registry
        self.spec = spec or TaskSpec()
        self.log = PredictionLog(spec=self.spec)
        self.stream = StreamMonitor(cfg, feature_names or [], fields, self.spec)
        self.sampler = Sampler(cfg.series_points)
        self.alarm = RefitAlarm(cfg)
        self.freshness = FreshnessTracker(cfg.freshness_window_s, self.trained_through, right=self.log.right)
        self.trained: dict[int, float | None] = {}
        self.now = 0.0  # the newest time a caller passed (stats() reports freshness as of then)
        self.alias_checked = float("-inf")
        self.rows_observed = 0
        self.last_error: str | None = None

    # -- inputs ------------------------------------------------------------------------
    def record(self, rows: list[tuple[Any, ...]]) -> None:
        """Predictions a Router replica served: (event_id, version, slot, prediction, time[, shadow]); the
        prediction is a probability (binary), a value (regression) or k class probabilities (multiclass)."""
        self.log.record(rows)
        self.freshness.record(rows)

    def labels(self, event_ids: list[str], labels: list[float], now: float | None = None) -> int:
        """Labels that arrived; returns how many matched a logged prediction."""
        event_ids, labels = list(event_ids), list(labels)
        self.now = max(self.now, now or 0.0)
        self.freshness.labels(event_ids, labels, self.now if now is None else now)
        return self.log.labels(event_ids, labels, now)

    def observe_rows(self, rows: pd.DataFrame, now: float) -> None:
        """Labelled rows from the coordinator: labels for the prediction log, rows for drift and accuracy."""
        self.labels(rows["event_id"].astype(str).tolist(), rows["label"].astype(float).tolist(), now)
        self.follow_live(now)
        self.stream.observe(rows)
        self.rows_observed += len(rows)

    def follow_live(self, now: float) -> None:
        """Measure against the registry's live version (looked up at most once a second)."""
        if self.registry is None or now - self.alias_checked < ALIAS_CHECK_S:
            return
        self.alias_checked = now
        live = self.registry.aliases().get("live")
        if live is not None and live != self.stream.version:
            booster, meta = self.registry.load(live)
            self.stream.set_live(live, booster, meta)

    def trained_through(self, version: int) -> float | None:
        """The newest event time among ``version``'s training rows (its registry metadata), cached."""
        if version not in self.trained and self.registry is not None:
            try:
                self.trained[version] = self.registry.meta(version).get("window", {}).get("end")
            except Exception:  # not readable yet: ask again next time
                return None
        return self.trained.get(version)

    # -- outputs -----------------------------------------------------------------------
    def accuracy_since(self, version: int, since: float) -> tuple[Any, ...] | None:
        """(labelled served predictions, accuracy) of ``version`` since ``since``; None if none (regression:
        (labelled, value, metric, sd of the per-row loss) of the canary's metric)."""
        return self.log.accuracy_since(version, since)

    def paired_since(self, live: int, candidate: int, since: float, newest: int = 100) -> dict[str, Any]:
        """Labelled requests both versions answered since ``since`` (one served, one in shadow): who was right."""
        return self.log.paired_since(live, candidate, since, newest)

    def per_version(self) -> dict[int, dict[str, Any]]:
        """Live quality per version (the task's metrics): on served, labelled requests where there are enough, else
        on the stream."""
        return merge_accuracy(self.stream.live_accuracy(), self.log.per_version())

    def freshness_figures(self) -> dict[str, Any]:
        """Request-weighted served accuracy, stale share and seconds to 100 % per detected change (``freshness``)."""
        return self.freshness.figures(self.now)

    def drift(self) -> dict[str, Any]:
        """PSI and KS per feature, prediction shift, error drift and the alarm, against the live version."""
        return self.stream.drift()

    def timeseries(self) -> list[dict[str, Any]]:
        """The sampled points, oldest first."""
        return list(self.sampler.series)

    def stats(self) -> dict[str, Any]:
        """The monitor's report: joins, accuracy per version and by source, drift, refit requests, last error,
        and the serving/training skew of the coordinator's latest report (None before one had it)."""
        return {"predictions_logged": self.log.predictions_logged, "joined": self.log.joined,
                "waiting": len(self.log.waiting), "per_version": self.per_version(),
                "stream_accuracy": self.stream.live_accuracy(), "served_accuracy": self.log.per_version(),
                "drift": self.stream.drift(), "refit_requests": list(self.alarm.requests),
                "last_error": self.last_error, "skew": self.sampler.skew,
                "freshness": self.freshness_figures()}

    # -- sampling ----------------------------------------------------------------------
    def sample(self, now: float, coordinator: dict[str, Any] | None = None, controller: dict[str, Any] | None = None,
               trainer: dict[str, Any] | None = None) -> Sample:
        """One point of the time series from the planes' reports (None: not attached); says if a refit is due."""
        self.follow_live(now)  # also while no labelled rows come: drift() then names the version it measures
        self.now = max(self.now, now)
        self.freshness.observe(now, controller, trainer)
        drift = self.stream.drift()
        stream, served = self.stream.live_accuracy(), self.log.per_version()
        sample = self.sampler.take(now, coordinator, controller, drift, merge_accuracy(stream, served))
        sample.stream_accuracy, sample.served_accuracy = stream, served
        sample.freshness = self.freshness.figures(now)
        sample.point["freshness"] = {k: v for k, v in sample.freshness.items() if k in POINT_FRESHNESS}
        if trainer is not None:
            sample.refits = trainer["refits"]
            sample.refit_counts = trainer.get("refit_counts")
            sample.refit_reason = self.alarm.due(now, drift.get("alarm"))
        return sample
