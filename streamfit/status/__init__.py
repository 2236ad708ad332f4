"""Typed status of the planes: what the rollout controller, the monitor and the trainer report.

The actors return plain dicts (they cross Ray as such); every consumer — the HTTP API, the
CLI, the status page and the demo — parses a dict once with ``Model.model_validate`` and reads
typed attributes. The models are strict on the fields consumers use and keep any other key a
producer adds (``extra="allow"``), so a new figure never breaks a reader.

Example:
    >>> t = TrafficStatus.model_validate({"slots": {"blue": 3, "green": None}, "revision": 4,
    ...                                   "weights": {"blue": 100, "green": 0}, "live_slot": "blue", "flips": 0})
    >>> t.live_version, t.weight("green"), t.figures("blue").requests
    (3, 0, 0)
    >>> MonitorReport.from_monitor({"drift": {"psi": {"x0": 0.3}}, "per_version": {3: {"labelled": 9,
    ...     "accuracy": 0.9}}, "refit_requests": []}, [{"t": 1.0, "quality": {"rejected": 2}}]).quality.rejected
    2
"""

from streamfit.status.base import Accuracy, ByVersion, Open, RequestFigures, SlotSummary
from streamfit.status.monitoring import (ChangeToFull, Drift, FeatureSkew, Freshness, MonitorReport, Quality,
                                         RefitRequest, SeriesPoint, Skew, StreamStats, latest_quality)
from streamfit.status.traffic import (CanaryStep, Deploy, Rollout, RolloutRecord, ServingView, Shadow,
                                      TrafficStatus)
from streamfit.status.training import PlaneStats, RefitAttempt, RefitResult, Scores, TrainerReport

__all__ = ["Accuracy", "ByVersion", "CanaryStep", "ChangeToFull", "Deploy", "Drift", "FeatureSkew", "Freshness",
           "MonitorReport", "Open",
           "PlaneStats", "Quality", "RefitAttempt", "RefitRequest", "RefitResult", "Rollout", "RolloutRecord",
           "Scores", "SeriesPoint", "ServingView", "Shadow", "Skew", "SlotSummary", "StreamStats", "TrafficStatus",
           "TrainerReport", "latest_quality"]
