"""Config of the data plane: the event schema, sources, feature windows and shards.

Example:
    >>> FeaturesConfig().feature_names()[:3]
    ['x0', 'x1', 'x2']
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveFloat, model_validator

from streamfit.config.base import Strict as _Strict

if TYPE_CHECKING:
    from streamfit.config.learning import ModelConfig


class FieldSpec(_Strict):
    """One input field of the event schema: a number (a value outside [min, max] is rejected, or clipped) or a
    category (text; a value outside ``allowed``, when given, is rejected)."""

    name: str
    type: Literal["numeric", "categorical"] = Field(
        "numeric", description="categorical: text values, given to XGBoost as native categories")
    required: bool = True
    min: float | None = None
    max: float | None = None
    clip: bool = Field(False, description="clip out-of-range values to [min, max] instead of rejecting the row")
    allowed: list[str] | None = Field(
        None, min_length=1, description="categorical only: the values accepted (others: unknown_category:<field>)")

    @model_validator(mode="after")
    def _options_fit_the_type(self) -> "FieldSpec":
        if self.type == "categorical":
            for option in ("min", "max"):
                if getattr(self, option) is not None:
                    raise ValueError(f"@{option}: a categorical field has no range")
            if self.clip:
                raise ValueError("@clip: a categorical field has no range to clip to")
            repeated = sorted({v for v in self.allowed or [] if self.allowed.count(v) > 1})
            if repeated:
                raise ValueError(f"@allowed: repeated values {repeated}")
        elif self.allowed is not None:
            raise ValueError("@allowed: only for a categorical field (type: categorical)")
        return self

    @property
    def categorical(self) -> bool:
        """Whether the field holds categories (text) rather than numbers."""
        return self.type == "categorical"


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
    max_body_bytes: int = Field(1_000_000, gt=0, description="a larger POST /ingest body is refused (413)")
    max_events: int = Field(10_000, gt=0, description="events per POST /ingest request, at most (else 413)")
    max_id_chars: int = Field(256, gt=0, description="longest entity, event_id or other text value (else 422)")
    buffer_max_bytes: int = Field(
        256_000_000, gt=0, description="rows held by the ingest buffer until a checkpoint, in bytes; when full, "
        "POST /ingest answers 429 with Retry-After (counted, nothing dropped)",
    )
    retry_after_s: int = Field(2, gt=0, description="the Retry-After of a 429 (the buffer drains at a checkpoint)")


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
    max_event_time_skew_s: float | None = Field(
        300.0, gt=0, description="reject (event_time_future) a row, from any source, whose event time is further "
        "than this ahead of the wall clock, so one bad client clock cannot move the watermark; null = no limit "
        "(e.g. to replay a simulation dated in the future)",
    )
    replay_max_bytes: int = Field(
        256_000_000, gt=0, description="with checkpoints off, batches kept to rebuild a restarted shard, in bytes; "
        "the oldest go past it (counted: replay_dropped_batches), and a shard restarted before them misses them",
    )
    max_event_age_s: float | None = Field(
        None, gt=0, description="reject (event_time_past) a row further than this behind the latest event time of "
        "its partition (the stream's own clock, so replays of old files work); null = no limit (late_policy drop "
        "already rejects rows behind the watermark)",
    )

    @model_validator(mode="after")
    def _source_section_present(self) -> "StreamConfig":
        if self.source in ("file", "kafka") and getattr(self, self.source) is None:
            raise ValueError(f"{self.source}: section required when source is {self.source!r}")
        return self


WindowOp = Literal["sum", "mean", "std", "min", "max", "distinct"]  # distinct: categorical fields only
_SCORING_ONLY = ("served_log_capacity", "max_future_s", "max_past_s")


class AggregateSpec(_Strict):
    """Window aggregates of one field; ``last`` adds the entity's previous value (any age). A categorical field
    takes ``distinct`` only (how many different categories the entity's events had in the window) and ``last``
    (the category of the entity's previous event, as text)."""

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
            if specs[agg.field].categorical:
                if set(agg.ops) - {"distinct"}:
                    raise ValueError(f"@aggregates.{i}.field: {agg.field!r} is categorical; window aggregates need "
                                     "numbers (a categorical field takes ops [distinct] only, and last)")
            elif "distinct" in agg.ops:
                raise ValueError(f"@aggregates.{i}.ops: distinct is for a categorical field, {agg.field!r} is numeric")
        names = self.feature_names()
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"@aggregates: feature names would repeat: {repeated} (same window or aggregate twice?)")
        return self

    def schema_hash(self, model: ModelConfig | None = None) -> str:
        """A short hash of everything that shapes the feature vector (a model is only valid for one); the task
        of ``model`` (and its classes) shapes the label history: a binary task (or None) leaves today's hash."""
        import hashlib

        # The scoring limits do not shape the vector, nor does a field's type at its default (numeric):
        # leaving them out keeps the hashes of versions registered before they existed valid.
        exclude: dict[str, Any] = {k: True for k in _SCORING_ONLY}
        plain = {i: {"type", "allowed"} for i, f in enumerate(self.fields) if not f.categorical}
        if plain:
            exclude["fields"] = plain
        dumped = self.model_dump_json(exclude=exclude)
        if model is not None and model.task != "binary":
            dumped += json.dumps({"task": model.task, "classes": model.classes})
        return hashlib.sha256(dumped.encode()).hexdigest()[:16]

    def categorical_fields(self) -> list[str]:
        """The categorical fields, in config order."""
        return [f.name for f in self.fields if f.categorical]

    def categorical_columns(self, model: ModelConfig | None = None) -> list[str]:
        """The model-row columns that hold text, in ``feature_names(model)`` order: the categorical fields, then
        ``<field>_last`` of each categorical field aggregated with ``last`` (the label history is numbers).

        >>> cfg = FeaturesConfig(fields=[{"name": "x0"}, {"name": "city", "type": "categorical"}],
        ...                      aggregates=[{"field": "city", "ops": [], "last": True}])
        >>> cfg.categorical_columns(), cfg.categorical_fields()
        (['city', 'city_last'], ['city'])
        """
        cats = set(self.categorical_fields())
        text = cats | {f"{a.field}_last" for a in self.aggregates if a.last and a.field in cats}
        return [n for n in self.feature_names(model) if n in text]

    def aggregated_fields(self) -> list[str]:
        """Fields that any aggregate reads, in config order, once each."""
        return list(dict.fromkeys(a.field for a in self.aggregates))

    def feature_names(self, model: ModelConfig | None = None) -> list[str]:
        """Columns of the model's input, in order: raw fields, window aggregates, last/age, label history (whose
        columns depend on ``model``'s task: None = binary).

        >>> from streamfit.config.learning import ModelConfig
        >>> cfg = FeaturesConfig(label_history={"windows_s": [60]})
        >>> cfg.feature_names(ModelConfig(task="regression"))[-4:]
        ['label_last', 'label_mean_1m', 'label_std_1m', 'label_count_1m']
        >>> cfg.feature_names(ModelConfig(task="multiclass", classes=["a", "b"]))[-4:]
        ['label_last', 'label_rate_c0_1m', 'label_rate_c1_1m', 'label_count_1m']
        """
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
            task = "binary" if model is None else model.task
            for w in self.label_history.windows_s:
                tag = window_tag(w)
                if task == "regression":
                    names += [f"label_mean_{tag}", f"label_std_{tag}"]
                elif task == "multiclass":
                    names += [f"label_rate_c{i}_{tag}" for i in range(len(model.classes or ()))]
                else:
                    names.append(f"label_rate_{tag}")
                names.append(f"label_count_{tag}")
        return names


class ShardsConfig(_Strict):
    """Feature shard actors."""

    num_shards: int = Field(2, gt=0)
    max_in_flight: int = Field(2, gt=0, description="batches in flight per shard (backpressure)")
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per shard actor")


def window_tag(seconds: float) -> str:
    """Short label for a window length: 300 -> '5m', 7200 -> '2h', 45 -> '45s', 0.5 -> '500ms'."""
    ms = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
