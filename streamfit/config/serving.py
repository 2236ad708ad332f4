"""Config of serving, rollouts and monitoring: the Router, canary steps and analysis, drift alarms."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from streamfit.config.base import Strict as _Strict


class ServingConfig(_Strict):
    """Ray Serve app: Router ingress with blue/green slots."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    replicas: int = Field(1, gt=0)
    max_ongoing_requests: int = Field(64, gt=0)
    fast_ingress: bool = Field(
        True, description="RAY_SERVE_THROUGHPUT_OPTIMIZED + RAY_SERVE_ENABLE_HA_PROXY (set before Ray starts)"
    )
    flip_timeout_s: float = Field(60.0, gt=0, description="how long replicas may take to load a version")
    isolated_slots: bool = Field(False, description="blue and green as separate Serve deployments")
    access_log: bool = Field(False, description="Serve's per-request access log in the replica logs")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Ray's Prometheus metrics-export port "
                                     "when streamfit starts Ray (default: Ray's choice)")
    slot_batch_size: int = Field(32, gt=0, description="@serve.batch size of isolated slots")
    max_request_bytes: int = Field(1_000_000, gt=0, description="larger request bodies get 413")
    routing_key_header: str = "X-Routing-Key"
    lookup_timeout_s: float = Field(1.0, gt=0, description="a shard lookup slower than this answers 503 + Retry-After")
    lookup_wait_ms: float = Field(2.0, ge=0, description="micro-batch tick: lookups gathered per shard for this long")
    lookup_max_batch: int = Field(256, gt=0, description="... or until this many events wait for one shard")
    lookup_max_gap_ms: float = Field(100.0, ge=0, description="a shard busy applying batches is sent lookups at "
                                     "most this often (plus the call), so it gets fewer, larger calls; 0: never held back")
    max_batch_events: int = Field(1000, gt=0, description="raw events per /predict request, at most (else 4xx)")
    pin_slot_header: str = "X-Streamfit-Slot"
    actor_timeout_s: float = Field(
        10.0, gt=0, description="a call from the Router to another plane (the controller's status, the monitor, a "
        "shard's features, the ingest log, a slot deployment) slower than this answers 503 + Retry-After")
    command_timeout_s: float = Field(
        120.0, gt=0, description="... the same bound for traffic commands and manual refits (a rollback waits for the "
        "replicas to load, up to flip_timeout_s; a refit trains)")
    request_timeout_s: float = Field(
        180.0, gt=0, description="Serve's end-to-end HTTP timeout (Serve answers 408); above command_timeout_s, so "
        "a slow actor is a 503 naming it first")
    max_queued_requests: int = Field(
        256, ge=-1, description="requests waiting for a Router replica beyond max_ongoing_requests (per replica); "
        "more are shed by Serve with 503 + Retry-After; -1: no limit")
    retry_after_s: float = Field(1.0, gt=0, description="Retry-After of the 503s for an unavailable actor, no model "
                                 "yet, or a full queue")

    @model_validator(mode="after")
    def _timeouts_nest(self) -> "ServingConfig":
        if not self.actor_timeout_s <= self.command_timeout_s < self.request_timeout_s:
            raise ValueError("@command_timeout_s: at least actor_timeout_s and below request_timeout_s (an actor's "
                             "503 must come before Serve's 408)")
        if self.command_timeout_s <= self.flip_timeout_s:
            raise ValueError("@command_timeout_s: above flip_timeout_s (a rollback waits for the replicas to load)")
        if self.max_queued_requests == 0:
            raise ValueError("@max_queued_requests: -1 (no limit) or at least 1")
        return self


class RolloutConfig(_Strict):
    """Canary steps, bake time, and the thresholds of the analysis that promotes or rolls back."""

    mode: Literal["canary", "flip"] = Field("canary", description="canary steps, or a direct blue-green flip")
    steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100], min_length=1)
    bake_s: float = Field(20.0, gt=0, description="time at each step before it is analysed")
    min_requests: int = Field(20, ge=0, description="candidate requests a step needs (its bake is extended up to "
                              "evidence_bakes bakes for them, then on_no_evidence decides)")
    evidence_bakes: int = Field(3, ge=1, description="a step short of its evidence (min_requests; min_labels pairs "
                                "while labels flow) bakes again, up to this many bakes in all")
    on_no_evidence: Literal["fail", "pass"] = Field(
        "fail", description="a step still without its evidence after evidence_bakes: roll back (fail closed) or "
        "pass it anyway; either way the reason is in the audit log")
    max_error_rate_delta: float = Field(0.01, ge=0, description="candidate error rate minus live, at most")
    max_latency_ratio: float = Field(1.5, gt=0, description="candidate p99 / live p99, at most (+ 5 ms slack)")
    max_prediction_psi: float = Field(0.5, gt=0, description="PSI of candidate vs live prediction scores, at most")
    prediction_shift_p: float = Field(
        0.001, gt=0, lt=1, description="... and a step fails on it only if a chi-square test is this sure")
    max_accuracy_drop: float = Field(0.02, ge=0, description="live accuracy minus candidate's on labelled requests")
    min_labels: int = Field(30, ge=0, description="labelled requests per version before accuracy counts")
    verify_sample: int = Field(32, ge=0, description="rows the candidate must reproduce the registry's predictions on")
    on_new_candidate: Literal["supersede", "wait"] = Field(
        "wait", description="a candidate arriving mid-rollout: wait (the newest one goes next, replacing any "
        "queued one; it supersedes a rollout still judged in shadow) or supersede")
    drift_supersedes: bool = Field(
        True, description="with on_new_candidate: wait, a drift refit's candidate still replaces a rollout in "
        "progress that has not proven itself better (no fast path) — once in a row")
    pause_before: list[int] = Field(default_factory=list, description="steps (weights) that wait for `rollout promote`")
    shadow_share: float = Field(0.0, ge=0, le=1, description="share of requests copied to the idle slot")
    shadow_judging: bool = Field(
        True, description="while a candidate rolls out, each request with an event id is also scored by the other "
        "slot in shadow (never returned) and logged, so both versions are judged on the same labelled requests")
    shadow_max_s: float = Field(
        30.0, ge=0, description="before its first step, a loaded candidate is judged in shadow until it has "
        "min_labels paired requests, or this long at most (skipped when no labelled request of the live version "
        "comes within a bake)")
    decision_p: float = Field(
        0.05, gt=0, lt=1, description="one-sided p-value an accuracy difference needs to roll back (or to count "
        "as better): McNemar's exact test on paired requests, Fisher's on unpaired ones")
    fast_path_margin: float = Field(
        0.15, ge=0, le=1, description="fast path when, on the newest paired requests, the candidate's accuracy "
        "beats live's by this much (with confidence)")
    fast_path_rows: int = Field(100, gt=0, description="the newest paired requests the fast path looks at")
    fast_path_steps: list[int] = Field(default_factory=lambda: [100], min_length=1,
                                       description="the remaining steps on the fast path")
    fast_path_bake_s: float = Field(5.0, gt=0, description="bake of each fast-path step")

    @model_validator(mode="after")
    def _steps_increase_to_100(self) -> "RolloutConfig":
        for name in ("steps", "fast_path_steps"):
            steps = getattr(self, name)
            if any(not 0 < w <= 100 for w in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
                raise ValueError(f"@{name}: increasing percentages in (0, 100], ending at 100")
        return self


class MonitorConfig(_Strict):
    """Data quality, drift and live performance: windows, the drift alarm, sampling."""

    window_rows: int = Field(2000, gt=0, description="labelled rows drift and live accuracy are measured over")
    min_rows: int = Field(200, ge=0, description="rows needed before PSI is reported")
    psi_alarm: float = Field(0.25, gt=0, description="a feature PSI above this raises the drift alarm")
    alarm_on: Literal["fields", "all"] = Field(
        "fields", description="which PSIs can raise the alarm: the raw input fields, or every feature (window "
        "counts grow while a stream warms up, so they drift by design)")
    alarm_triggers_refit: bool = Field(True, description="the drift alarm asks the trainer for a refit")
    alarm_cooldown_s: float = Field(30.0, ge=0)
    sample_s: float = Field(2.0, gt=0, description="time-series sampling interval (status page, metrics)")
    series_points: int = Field(900, gt=0)
    freshness_window_s: float = Field(
        300.0, gt=0, description="served accuracy and stale share are also reported over the newest N seconds")
