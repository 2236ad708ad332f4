"""Typed configuration for every plane, loaded from YAML or taken from built-in defaults.

Example:
    >>> cfg = Config()
    >>> cfg.shards.num_shards
    2
    >>> Config.model_validate({"shards": {"num_shards": 3}}).shards.num_shards
    3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, model_validator

from streamfit.errors import ConfigError


class _Strict(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class FieldSpec(_Strict):
    """One numeric input field of the event schema: a value outside [min, max] is rejected, or clipped."""

    name: str
    required: bool = True
    min: float | None = None
    max: float | None = None
    clip: bool = Field(False, description="clip out-of-range values to [min, max] instead of rejecting the row")


class FileSourceConfig(_Strict):
    """Replay of a CSV, Parquet or JSON-lines file in event-time order."""

    path: str
    format: Literal["csv", "parquet", "jsonl"] | None = Field(None, description="default: from the file suffix")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="streamfit column -> file column, e.g. {entity: customer_id, event_time: ts, label: y}",
    )
    time_unit: Literal["s", "ms", "us", "ns", "datetime"] = Field(
        "s", description="unit of a numeric time column; 'datetime' parses strings/timestamps"
    )
    label_delay_s: float = Field(
        0.0, ge=0, description="when each row carries its label: emit it as a label event this much later"
    )
    speed: float | None = Field(None, gt=0, description="null = as fast as possible; 1 = real time; 10 = 10x")
    batch_size: int = Field(5000, gt=0)


class KafkaSourceConfig(_Strict):
    """A Kafka topic read by a consumer group; offsets are committed only when a checkpoint completes."""

    bootstrap_servers: str
    topic: str
    group_id: str = "streamfit"
    batch_size: int = Field(5000, gt=0)
    poll_timeout_s: float = Field(1.0, gt=0)
    extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="further confluent-kafka consumer settings"
    )


class HttpSourceConfig(_Strict):
    """Events pushed to POST /ingest, kept in a write-ahead log until a checkpoint covers them."""

    batch_size: int = Field(5000, gt=0)


class StreamConfig(_Strict):
    """Where events come from; the synthetic drifting generator is the embedded default."""

    source: Literal["synthetic", "file", "kafka", "http"] = "synthetic"
    file: FileSourceConfig | None = None
    kafka: KafkaSourceConfig | None = None
    http: HttpSourceConfig = Field(default_factory=HttpSourceConfig)
    seed: int = 7
    entities: int = Field(200, gt=0)
    batch_size: int = Field(500, gt=0)
    events_per_second: float = Field(
        50.0, gt=0, description="event-time rate: seconds of event time advance 1/rate per event"
    )
    max_events_per_s: float | None = Field(
        1000.0, description="wall-clock pacing of the source; null = as fast as possible"
    )
    max_events: int | None = Field(None, description="stop after this many events; null = unbounded")
    label_delay_events: int = Field(300, ge=0, description="labels arrive this many events after their event")
    drift_every: int = Field(40000, gt=0, description="abrupt concept drift every N events")
    bad_row_rate: float = Field(0.002, ge=0, le=1, description="share of malformed rows injected")

    @model_validator(mode="after")
    def _source_section_present(self) -> "StreamConfig":
        if self.source in ("file", "kafka") and getattr(self, self.source) is None:
            raise ValueError(f"{self.source}: section required when source is {self.source!r}")
        return self


WindowOp = Literal["sum", "mean", "std", "min", "max"]
_SCORING_ONLY = ("served_log_capacity", "max_future_s", "max_past_s")


class AggregateSpec(_Strict):
    """Window aggregates of one field; ``last`` adds the entity's previous value (any age)."""

    field: str
    ops: list[WindowOp] = Field(default_factory=lambda: ["mean"])
    last: bool = False


class LabelHistoryConfig(_Strict):
    """Features from an entity's own past labels, counting only labels that had arrived before the event."""

    enabled: bool = True
    windows_s: list[PositiveFloat] = Field(default_factory=lambda: [300.0, 3600.0])


class FeaturesConfig(_Strict):
    """Input schema, cleaning, and the per-entity event-time window aggregates."""

    fields: list[FieldSpec] = Field(
        default_factory=lambda: [
            FieldSpec(name="x0", min=-50, max=50),
            FieldSpec(name="x1", min=-50, max=50),
            FieldSpec(name="x2", min=-50, max=50),
        ]
    )
    windows_s: list[PositiveFloat] = Field(
        default_factory=lambda: [300.0, 3600.0], min_length=1,
        description="sliding event-time windows [t - W, t) in seconds",
    )
    aggregates: list[AggregateSpec] = Field(
        default_factory=lambda: [
            AggregateSpec(field="x0", ops=["mean", "std", "min", "max"], last=True),
            AggregateSpec(field="x1", ops=["mean"]),
        ]
    )
    count: bool = Field(True, description="events per window: count_<window>")
    age: bool = Field(True, description="seconds since the entity's previous event: age_s")
    label_history: LabelHistoryConfig = Field(default_factory=LabelHistoryConfig)
    allowed_lateness_s: float = Field(5.0, ge=0)
    late_policy: Literal["drop", "apply"] = "drop"
    dedup_capacity: int = Field(1_000_000, gt=0, description="event ids remembered for dedup")
    label_timeout_s: float = Field(3600.0, gt=0, description="unlabelled events expire after this (event time)")
    served_log_capacity: int = Field(100_000, gt=0, description="served vectors kept per shard for labels (oldest go)")
    max_future_s: float = Field(300.0, ge=0, description="scored event time: at most this far past the stream clock")
    max_past_s: float = Field(3600.0, ge=0, description="... and at most this far behind it")

    @model_validator(mode="after")
    def _aggregated_fields_exist(self) -> "FeaturesConfig":
        specs = {f.name: f for f in self.fields}
        for i, agg in enumerate(self.aggregates):
            if agg.field not in specs:
                raise ValueError(f"@aggregates.{i}.field: unknown field {agg.field!r} (fields: {sorted(specs)})")
            if not specs[agg.field].required:
                raise ValueError(f"@aggregates.{i}.field: {agg.field!r} must be required to be aggregated")
        names = self.feature_names()
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"@aggregates: feature names would repeat: {repeated} (same window or aggregate twice?)")
        return self

    def schema_hash(self) -> str:
        """A short hash of everything that shapes the feature vector (a model is only valid for one)."""
        import hashlib

        # The scoring limits do not shape the vector; leaving them out keeps the hashes of versions
        # registered before they existed valid.
        dumped = self.model_dump_json(exclude=set(_SCORING_ONLY))
        return hashlib.sha256(dumped.encode()).hexdigest()[:16]

    def aggregated_fields(self) -> list[str]:
        """Fields that any aggregate reads, in config order, once each."""
        return list(dict.fromkeys(a.field for a in self.aggregates))

    def feature_names(self) -> list[str]:
        """Columns of the model's input, in order: raw fields, window aggregates, last/age, label history."""
        names = [f.name for f in self.fields]
        for w in self.windows_s:
            tag = window_tag(w)
            if self.count:
                names.append(f"count_{tag}")
            for a in self.aggregates:
                names += [f"{a.field}_{op}_{tag}" for op in a.ops]
        names += [f"{a.field}_last" for a in self.aggregates if a.last]
        if self.age:
            names.append("age_s")
        if self.label_history.enabled:
            names.append("label_last")
            for w in self.label_history.windows_s:
                tag = window_tag(w)
                names += [f"label_rate_{tag}", f"label_count_{tag}"]
        return names


class ShardsConfig(_Strict):
    """Feature shard actors."""

    num_shards: int = Field(2, gt=0)
    max_in_flight: int = Field(2, gt=0, description="batches in flight per shard (backpressure)")
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per shard actor")


class TrainerConfig(_Strict):
    """When and how the trainer refits XGBoost, and the gate a candidate must pass.

    The defaults — a refit every 500 labelled rows on a sliding window, plus a drift trigger
    that cuts the window at the alarm and follows up on rows after it — were chosen with
    ``streamfit bench quality`` (prequential accuracy on 50,000-row streams with and without
    drift): small refit intervals mattered most; a long window is safe once a drift alarm cuts it.
    """

    # -- triggers (any that is set can fire; each refit records which one did) --
    refit_every_rows: int | None = Field(500, gt=0, description="volume: after N new labelled rows")
    refit_every_s: float | None = Field(None, gt=0, description="time: after N seconds of event time")
    accuracy_below: float | None = Field(
        None, gt=0, lt=1, description="performance: live version's accuracy on the newest labelled rows below this"
    )
    accuracy_window: int = Field(1000, gt=0, description="labelled rows the live accuracy is measured over")
    drift_detector: Literal["page_hinkley", "adwin"] | None = Field(
        "page_hinkley", description="drift: a detector on the live version's error stream"
    )
    psi_above: float | None = Field(None, gt=0, description="drift: any feature's PSI against the live reference above this")
    min_rows_between: int = Field(500, ge=0, description="no automatic refit before this many new rows")
    # -- how --
    training_features: Literal["served", "point_in_time"] = Field(
        "served", description="a scored event's training row: the feature vector it was served with (what the "
                              "model saw), or the one recomputed when the event arrived in the stream")
    strategy: Literal["full", "incremental"] = "full"
    window_rows: int = Field(8000, gt=0, description="full refit on the newest N labelled rows")
    window_s: float | None = Field(None, gt=0, description="... and at most the newest N seconds of event time")
    drift_window_rows: int = Field(1000, gt=0, description="after a drift alarm, refit on only the newest N rows")
    grow_window_after_drift: bool = Field(
        True, description="after a drift refit, full refits learn only from rows since the alarm (at least "
                          "drift_window_rows), growing back to window_rows"
    )
    drift_followups: int = Field(
        3, ge=0, description="after a drift refit, refit again once 1x, 2x, 4x … drift_window_rows new rows "
                             "have arrived (this many times), so the new concept is learnt from rows after the alarm"
    )
    incremental_trees: int = Field(10, gt=0, description="trees added per incremental update")
    max_trees: int = Field(300, gt=0, description="an incremental update past this many trees is a full refit")
    # -- gate --
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    gate_metric: Literal["logloss", "auc", "accuracy"] = "logloss"
    gate_margin: float = Field(0.0, ge=0, description="a candidate may be worse than live by at most this")
    # -- the model --
    num_boost_round: int = Field(60, gt=0)
    max_depth: int = Field(5, gt=0)
    eta: float = Field(0.2, gt=0)
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved for the trainer actor")
    distributed_above_rows: int | None = Field(
        None, gt=0, description="fit with Ray Train's XGBoostTrainer when the training set is larger"
    )
    distributed_workers: int = Field(2, gt=0)


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
    max_batch_events: int = Field(1000, gt=0, description="raw events per /predict request, at most (else 4xx)")
    pin_slot_header: str = "X-Streamfit-Slot"


class RolloutConfig(_Strict):
    """Canary steps, bake time, and the thresholds of the analysis that promotes or rolls back."""

    mode: Literal["canary", "flip"] = Field("canary", description="canary steps, or a direct blue-green flip")
    steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100], min_length=1)
    bake_s: float = Field(20.0, gt=0, description="time at each step before it is analysed")
    min_requests: int = Field(20, ge=0, description="candidate requests a step needs (bake is extended up to 3x)")
    max_error_rate_delta: float = Field(0.01, ge=0, description="candidate error rate minus live, at most")
    max_latency_ratio: float = Field(1.5, gt=0, description="candidate p99 / live p99, at most (+ 5 ms slack)")
    max_prediction_psi: float = Field(0.5, gt=0, description="PSI of candidate vs live prediction scores, at most")
    prediction_shift_p: float = Field(
        0.001, gt=0, lt=1, description="... and a step fails on it only if a chi-square test is this sure")
    max_accuracy_drop: float = Field(0.02, ge=0, description="live accuracy minus candidate's on labelled requests")
    min_labels: int = Field(30, ge=0, description="labelled requests per version before accuracy counts")
    verify_sample: int = Field(32, ge=0, description="rows the candidate must reproduce the registry's predictions on")
    on_new_candidate: Literal["supersede", "wait"] = Field(
        "wait", description="a candidate arriving mid-rollout: wait (the newest one goes next) or supersede")
    pause_before: list[int] = Field(default_factory=list, description="steps (weights) that wait for `rollout promote`")
    shadow_share: float = Field(0.0, ge=0, le=1, description="share of requests copied to the idle slot")

    @model_validator(mode="after")
    def _steps_increase_to_100(self) -> "RolloutConfig":
        if any(not 0 < w <= 100 for w in self.steps) or self.steps != sorted(set(self.steps)) or self.steps[-1] != 100:
            raise ValueError("@steps: increasing percentages in (0, 100], ending at 100")
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


class CheckpointConfig(_Strict):
    """Aligned checkpoints of the shards' state (local path or object-store URI)."""

    enabled: bool = True
    uri: str = ".streamfit/checkpoints"
    interval_s: float = Field(10.0, gt=0, description="seconds between aligned checkpoints")


class RegistryConfig(_Strict):
    """Where versions, aliases and the audit log live (local path or object-store URI)."""

    uri: str = ".streamfit/registry"


class Config(_Strict):
    """The whole streamfit configuration."""

    stream: StreamConfig = Field(default_factory=StreamConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    shards: ShardsConfig = Field(default_factory=ShardsConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)


def window_tag(seconds: float) -> str:
    """Short label for a window length: 300 -> '5m', 7200 -> '2h', 45 -> '45s', 0.5 -> '500ms'."""
    ms = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def format_validation_error(err: ValidationError) -> str:
    """Render pydantic errors as 'path.to.field: message' lines."""
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        msg = e["msg"]
        # Model-level validators name the nested field as "@sub.path: message" (pydantic can only
        # place their errors at the model); fold that into the path.
        if "@" in msg and ": " in msg.split("@", 1)[1]:
            sub, msg = msg.split("@", 1)[1].split(": ", 1)
            loc += sub.split(".")
        lines.append(f"{'.'.join(loc) or '(root)'}: {msg}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Validate a plain dict into a Config, raising ConfigError with field paths."""
    try:
        return Config.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(path: str | Path | None) -> Config:
    """Load and validate a YAML config file; None gives the built-in default."""
    if path is None:
        return Config()
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return config_from_dict(data)
