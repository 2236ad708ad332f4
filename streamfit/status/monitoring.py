"""The monitoring plane's status: data quality, drift, skew, freshness, the time series and ``GET /monitor``.

Example:
    >>> Skew(compared_rows=200, rows_differing=4).share
    0.02
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from streamfit.status.base import ByVersion, Open


class FeatureSkew(Open):
    """One feature's skew: compared rows whose served value differed, their share, the largest gap."""

    differing: int = 0
    share: float = 0.0
    max_abs_diff: float = 0.0


class Skew(Open):
    """Serving/training skew: labelled scored events whose served vector differs from the point-in-time one."""

    compared_rows: int = 0
    rows_differing: int = 0
    features: dict[str, FeatureSkew] = {}

    @property
    def share(self) -> Optional[float]:
        """Share of the compared rows with any feature differing (None before the first comparison)."""
        return self.rows_differing / self.compared_rows if self.compared_rows else None

    def worst(self) -> Optional[tuple[str, FeatureSkew]]:
        """The feature that differs in the most rows (the larger gap breaks a tie); None if none differs."""
        differing = [(k, f) for k, f in self.features.items() if f.differing]
        return max(differing, key=lambda kv: (kv[1].share, kv[1].max_abs_diff), default=None)

    def text(self) -> str:
        """``1200 rows compared · 2.0% differ · worst x0_mean_5m: 1.5% of rows, max |Δ| 0.42``."""
        if not self.compared_rows:
            return "no scored event has its label yet"
        name, f = self.worst() or ("", None)
        worst = f" · worst {name}: {f.share:.1%} of rows, max |Δ| {f.max_abs_diff:.3g}" if f else ""
        return f"{self.compared_rows} rows compared · {self.share:.1%} differ{worst}"


class Quality(Open):
    """Data quality at the stream's entrance: rows accepted and rejected (by reason), null rates, lag."""

    accepted: Optional[int] = None
    rejected: Optional[int] = None
    events: Optional[int] = None
    reasons: dict[str, int] = {}
    null_rate: dict[str, float] = {}
    watermark_lag_s: Optional[float] = None

    def top_reasons(self, n: int = 6) -> str:
        """``missing:x2: 30, late: 4`` — the most frequent reject reasons."""
        top = sorted(self.reasons.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{k}: {v}" for k, v in top)

    def nulls(self) -> str:
        """``x0 1.0%, x1 0.0%``."""
        return ", ".join(f"{k} {v:.1%}" for k, v in self.null_rate.items())


class StreamStats(Quality):
    """The coordinator's figures: quality plus position, rows per shard and rows sent to training."""

    position: Any = None
    training_rows: int = 0
    per_shard_accepted: list[int] = []
    skew: Optional[Skew] = None


class ErrorDrift(Open):
    """The detector on the live version's per-row errors (regression and multiclass): rows fed, mean error (0/1;
    regression: in holdout MAEs), its alarm."""

    rows: int = 0
    mean_error: Optional[float] = None
    alarm: Optional[str] = None


class Drift(Open):
    """PSI and KS distance per feature and the live version's score PSI, against its reference; for multiclass
    the chi-square test of the predicted class mix, and for regression and multiclass the error drift."""

    psi: dict[str, float] = {}
    ks: dict[str, float] = {}
    prediction_psi: Optional[float] = None
    prediction_chi2: Optional[float] = None
    prediction_shift_p: Optional[float] = None
    error_drift: Optional[ErrorDrift] = None
    rows: int = 0
    version: Optional[int] = None
    alarm: Optional[str] = None

    def task_text(self) -> str:
        """``class mix chi-square p 3.2e-09 · mean error 1.84 (in holdout MAEs for regression)`` ('' for binary)."""
        parts = []
        if self.prediction_shift_p is not None:
            parts.append(f"class mix chi-square p {self.prediction_shift_p:.1e}")
        if self.error_drift is not None and self.error_drift.mean_error is not None:
            parts.append(f"mean error {self.error_drift.mean_error:.3f} (n={self.error_drift.rows})")
        return " · ".join(parts)

    def top_psi(self, n: int = 6, among: list[str] | None = None) -> str:
        """``x1 0.42, x0 0.03`` — the largest PSIs (of ``among`` when given)."""
        items = [(k, v) for k, v in self.psi.items() if not among or k in among]
        return ", ".join(f"{k} {v:.2f}" for k, v in sorted(items, key=lambda kv: -kv[1])[:n])


class RefitRequest(Open):
    """A refit the monitor asked for on a drift alarm."""

    t: float
    alarm: str
    version: Optional[int] = None


class ChangeToFull(Open):
    """One detected concept change and how long until a version trained after it served 100 %."""

    start: float = Field(description="estimated start of the concept (event time): the drift refit's newest row")
    wall: float = Field(description="when the change was detected (wall time): the sample that saw the drift refit")
    seconds: float = Field(description="from detection to 100 % (or until now, while not reached)")
    reached: bool
    version: Optional[int] = None


class Freshness(Open):
    """Is what requests are served fresh? Live there is no ground truth of when a concept begins: each
    drift-triggered refit (the trainer's detector or the monitor's drift alarm) is an estimated change."""

    served_accuracy: Optional[float] = Field(
        None, description="accuracy of the answers returned to requests whose labels arrived, request-weighted "
        "(shadow answers excluded), since the monitor started")
    labelled: int = 0
    served_accuracy_recent: Optional[float] = Field(None, description="the same over labels of the last window_s")
    labelled_recent: int = 0
    window_s: Optional[float] = None
    stale_share: Optional[float] = Field(
        None, description="share of requests answered by a version trained only on rows older than the start of "
        "the newest change detected by then (estimated: drift refits)")
    stale_share_recent: Optional[float] = Field(None, description="the same over requests of the last window_s")
    requests: int = 0
    changes: list[ChangeToFull] = Field(default_factory=list, description="per detected change, newest last")
    detected_changes: int = 0
    p50_s: Optional[float] = Field(None, description="median seconds from a detected change to 100 % (per change)")
    max_s: Optional[float] = Field(None, description="longest of them (a change not reached yet: until now)")

    def text(self) -> str:
        """``served 0.812 (n=4,210; 0.790 recent) · stale 6.0% · to 100 %: p50 21 s, max 48 s (3 changes)``."""
        if self.served_accuracy is None and not self.requests:
            return "no answered request yet"
        acc = "–" if self.served_accuracy is None else f"{self.served_accuracy:.3f}"
        recent = "" if self.served_accuracy_recent is None else f"; {self.served_accuracy_recent:.3f} recent"
        stale = "–" if self.stale_share is None else f"{self.stale_share:.1%}"
        n = self.detected_changes or len(self.changes)
        full = (f"p50 {self.p50_s:.0f} s, max {self.max_s:.0f} s ({n} detected change{'s' if n != 1 else ''})"
                if self.p50_s is not None and self.max_s is not None else "no drift detected")
        return f"served {acc} (n={self.labelled:,}{recent}) · stale {stale} · to 100 %: {full}"


class SeriesPoint(Open):
    """One sample of every plane, for the status page's charts."""

    t: float
    events_per_s: Optional[float] = None
    rejected_per_s: Optional[float] = None
    quality: Optional[Quality] = None
    weights: dict[str, int] = {}
    psi: dict[str, float] = {}
    prediction_psi: Optional[float] = None
    accuracy: dict[str, Optional[float]] = {}
    rmse: dict[str, Optional[float]] = {}  # regression versions (no accuracy)
    mae: dict[str, Optional[float]] = {}
    p50_ms: dict[str, Optional[float]] = {}
    p99_ms: dict[str, Optional[float]] = {}
    requests_per_s: dict[str, Optional[float]] = {}
    skew: Optional[Skew] = None  # only the features that differ
    freshness: Optional[Freshness] = None  # without the per-change list


def latest_quality(series: list[SeriesPoint]) -> Quality:
    """The newest quality figures in a time series (empty before the first sample)."""
    return next((p.quality for p in reversed(series) if p.quality is not None), Quality())


class MonitorReport(Open):
    """``GET /monitor``: data quality, drift, live accuracy per version, the refits drift asked for, the
    serving/training skew (None until the coordinator reports it) and the freshness of what requests are served."""

    quality: Quality = Quality()
    drift: Drift = Drift()
    live_accuracy: ByVersion = {}
    refit_requests: list[RefitRequest] = []
    skew: Optional[Skew] = None
    freshness: Freshness = Freshness()

    @classmethod
    def from_monitor(cls, stats: dict[str, Any], series: list[dict[str, Any]]) -> "MonitorReport":
        """Build from the monitor actor's ``stats()`` and ``timeseries()``."""
        points = [SeriesPoint.model_validate(p) for p in series]
        return cls(quality=latest_quality(points), drift=Drift.model_validate(stats.get("drift") or {}),
                   live_accuracy=stats.get("per_version") or {}, refit_requests=stats.get("refit_requests") or [],
                   skew=stats.get("skew"), freshness=stats.get("freshness") or {})
