"""The training plane's status: refit attempts and the trainer's report; the demo's snapshot of every plane.

Example:
    >>> TrainerReport.model_validate({"refits": [{"reason": "drift", "strategy": "full", "rows": 10,
    ...     "event_time": 1.0, "accepted": True}]}).refit_reasons()
    {'drift': 1}
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from streamfit.status.base import ByVersion, Open
from streamfit.status.monitoring import Drift, Freshness, StreamStats
from streamfit.status.traffic import TrafficStatus


class Scores(Open):
    """A model's scores on a held-out slice, in its task's metrics (regression: RMSE, MAE, pinball)."""

    accuracy: Optional[float] = None
    logloss: Optional[float] = None
    auc: Optional[float] = None
    rmse: Optional[float] = None
    mae: Optional[float] = None
    pinball: Optional[float] = None


class RefitAttempt(Open):
    """One refit: why, how, on how many rows, and whether the gate let it through."""

    reason: str
    strategy: str
    rows: int
    event_time: float
    accepted: bool
    version: Optional[int] = None
    why: Optional[str] = None
    candidate: Optional[Scores] = None
    live: Optional[Scores] = None
    fit_seconds: Optional[float] = None


class TrainerReport(Open):
    """The trainer's figures: rows seen and held, the live version and its accuracy, every refit."""

    rows_seen: int = 0
    rows_buffered: int = 0
    live_version: Optional[int] = None
    live_accuracy: Optional[float] = None
    refits: list[RefitAttempt] = []
    rejected: list[RefitAttempt] = []

    def refit_reasons(self) -> dict[str, int]:
        """Registered versions counted by what triggered them."""
        return dict(Counter(r.reason for r in self.refits))


class RefitResult(Open):
    """``POST /retrain``: the new version (None if the gate or the data said no) and the attempt."""

    version: Optional[int] = None
    attempt: Optional[RefitAttempt] = None


class PlaneStats(Open):
    """One snapshot of every plane (``Pipeline.stats()``), as the demo shows it."""

    coordinator: StreamStats
    trainer: TrainerReport
    traffic: TrafficStatus
    live_accuracy: ByVersion = {}
    drift: Drift = Drift()
    freshness: Freshness = Freshness()
