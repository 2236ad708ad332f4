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

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from streamfit.names import ACTIVE_PHASES, SLOTS, Phase, Slot
from streamfit.request_stats import empty_stats, summary


class Open(BaseModel):
    """Base of every status model: unknown keys are kept; non-finite floats travel as strings in JSON."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")


def _str_keys(value: Any) -> Any:
    """Versions key some dicts as ints inside the actors and as strings in JSON: accept both."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


# -- request figures and accuracy -----------------------------------------------------------
class SlotSummary(Open):
    """Requests, errors and latency percentiles of one slot over some span."""

    requests: int = 0
    errors: int = 0
    error_rate: Optional[float] = None
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None


class RequestFigures(Open):
    """One slot's cumulative request counters and histograms (summed over Router replicas)."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = Field(default_factory=lambda: empty_stats()["latency"])
    preds: list[int] = Field(default_factory=lambda: empty_stats()["preds"])

    def summary(self) -> SlotSummary:
        """Requests, errors, error rate, p50 and p99."""
        return SlotSummary.model_validate(summary(self.model_dump()))


class Accuracy(Open):
    """How one version did on labelled rows: served requests (``source="served"``) or the stream."""

    labelled: int
    accuracy: float
    logloss: Optional[float] = None
    auc: Optional[float] = None
    source: Optional[str] = None

    def text(self) -> str:
        """``0.912 (n=340)``."""
        return f"{self.accuracy:.3f} (n={self.labelled})"


ByVersion = Annotated[dict[str, Accuracy], BeforeValidator(_str_keys)]
"""Accuracy per version, keyed by the version number as a string."""


# -- traffic and rollouts -------------------------------------------------------------------
class CanaryStep(Open):
    """The analysis of one canary step: candidate against live on that step's requests."""

    weight: int
    passed: bool
    reasons: list[str] = []
    live: Optional[SlotSummary] = None
    candidate: Optional[SlotSummary] = None
    prediction_psi: Optional[float] = None
    prediction_shift_p: Optional[float] = None
    judged_on: Optional[str] = None
    time: Optional[float] = None


class Rollout(Open):
    """One candidate's way to production, as the controller reports it."""

    version: int
    slot: Slot
    live_version: Optional[int] = None
    steps: list[int]
    bake_s: float
    phase: Phase
    step: int = 0
    reason: str = ""
    actor: str = ""
    outcome: str = ""
    approved: bool = False
    started: Optional[float] = None
    step_started: Optional[float] = None
    results: list[CanaryStep] = []
    id: str = ""

    @property
    def active(self) -> bool:
        """Still loading, baking or paused."""
        return self.phase in ACTIVE_PHASES

    @property
    def weight(self) -> int:
        """The candidate's weight at the step in progress (or the last one)."""
        return self.steps[min(self.step, len(self.steps) - 1)]

    @property
    def stepping(self) -> bool:
        """At a canary step (baking or waiting for approval)."""
        return self.phase in (Phase.BAKING, Phase.PAUSED)

    def headline(self) -> str:
        """``v4 → green: baking at 25% (step 2/4)``, or the outcome once it ended."""
        head = f"v{self.version} → {self.slot}: {self.phase}"
        if self.stepping:
            return f"{head} at {self.weight}% (step {min(self.step + 1, len(self.steps))}/{len(self.steps)})"
        return f"{head} — {self.outcome}" if self.outcome else head


class RolloutRecord(Open):
    """A finished rollout in the history."""

    version: int
    phase: Phase
    outcome: str = ""
    reason: str = ""
    steps: list[int] = []
    seconds: Optional[float] = None


class ServingView(Open):
    """The desired serving state: which version each slot holds, the split, the rollout in progress."""

    slots: dict[Slot, Optional[int]]
    weights: dict[Slot, int]
    revision: int
    live_slot: Slot
    flips: int
    shadow_share: float = 0.0
    rollout: Optional[Rollout] = None
    history: list[RolloutRecord] = []

    @property
    def live_version(self) -> Optional[int]:
        """The version in the live slot (None before the first one)."""
        return self.slots.get(self.live_slot)

    def weight(self, slot: str) -> int:
        """Percent of traffic to ``slot``."""
        return self.weights.get(Slot(slot), 0)

    def split(self) -> str:
        """``blue 75% / green 25%``."""
        return " / ".join(f"{s} {self.weight(s)}%" for s in SLOTS)

    def outcomes(self) -> dict[str, int]:
        """Finished rollouts counted by how they ended."""
        return dict(sorted(Counter(h.phase.value for h in self.history).items()))


class Shadow(Open):
    """Requests copied to the idle slot and how often its answer agreed."""

    compared: int = 0
    agreed: int = 0


class Deploy(Open):
    """One rollout's result, in the controller's deploy list."""

    version: int
    slot: Slot
    ok: bool
    phase: Phase
    outcome: str = ""


class TrafficStatus(ServingView):
    """``GET /traffic``: the serving state, what each live Router replica holds, per-slot figures,
    live accuracy per version, the deploys and the rollout settings."""

    replicas: dict[str, dict[str, Optional[int]]] = {}
    slot_stats: dict[Slot, RequestFigures] = {}
    shadow: Shadow = Shadow()
    deploys: list[Deploy] = []
    live_accuracy: ByVersion = {}
    rollout_config: dict[str, Any] = {}

    def figures(self, slot: str) -> SlotSummary:
        """Requests, errors and latency of ``slot`` since the replicas started."""
        return self.slot_stats.get(Slot(slot), RequestFigures()).summary()

    def accuracy_of(self, slot: str) -> Optional[Accuracy]:
        """Live accuracy of the version ``slot`` holds, if measured."""
        version = self.slots.get(Slot(slot))
        return None if version is None else self.live_accuracy.get(str(version))


# -- monitoring -----------------------------------------------------------------------------
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


class Drift(Open):
    """PSI and KS distance per feature and the live version's score PSI, against its reference."""

    psi: dict[str, float] = {}
    ks: dict[str, float] = {}
    prediction_psi: Optional[float] = None
    rows: int = 0
    version: Optional[int] = None
    alarm: Optional[str] = None

    def top_psi(self, n: int = 6, among: list[str] | None = None) -> str:
        """``x1 0.42, x0 0.03`` — the largest PSIs (of ``among`` when given)."""
        items = [(k, v) for k, v in self.psi.items() if not among or k in among]
        return ", ".join(f"{k} {v:.2f}" for k, v in sorted(items, key=lambda kv: -kv[1])[:n])


class RefitRequest(Open):
    """A refit the monitor asked for on a drift alarm."""

    t: float
    alarm: str
    version: Optional[int] = None


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
    p50_ms: dict[str, Optional[float]] = {}
    p99_ms: dict[str, Optional[float]] = {}
    requests_per_s: dict[str, Optional[float]] = {}
    skew: Optional[Skew] = None  # only the features that differ


def latest_quality(series: list[SeriesPoint]) -> Quality:
    """The newest quality figures in a time series (empty before the first sample)."""
    return next((p.quality for p in reversed(series) if p.quality is not None), Quality())


class MonitorReport(Open):
    """``GET /monitor``: data quality, drift, live accuracy per version, the refits drift asked for, and the
    serving/training skew (None until the coordinator reports it)."""

    quality: Quality = Quality()
    drift: Drift = Drift()
    live_accuracy: ByVersion = {}
    refit_requests: list[RefitRequest] = []
    skew: Optional[Skew] = None

    @classmethod
    def from_monitor(cls, stats: dict[str, Any], series: list[dict[str, Any]]) -> "MonitorReport":
        """Build from the monitor actor's ``stats()`` and ``timeseries()``."""
        points = [SeriesPoint.model_validate(p) for p in series]
        return cls(quality=latest_quality(points), drift=Drift.model_validate(stats.get("drift") or {}),
                   live_accuracy=stats.get("per_version") or {}, refit_requests=stats.get("refit_requests") or [],
                   skew=stats.get("skew"))


# -- training -------------------------------------------------------------------------------
class Scores(Open):
    """A model's scores on a held-out slice."""

    accuracy: float
    logloss: Optional[float] = None
    auc: Optional[float] = None


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
