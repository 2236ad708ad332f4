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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamfit.errors import ConfigError


class _Strict(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class FieldSpec(_Strict):
    """One numeric input field of the event schema."""

    name: str
    required: bool = True
    min: float | None = None
    max: float | None = None


class StreamConfig(_Strict):
    """Where events come from; the synthetic drifting generator is the embedded default."""

    source: Literal["synthetic"] = "synthetic"
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


class FeaturesConfig(_Strict):
    """Input schema and the per-entity event-time window aggregates."""

    fields: list[FieldSpec] = Field(
        default_factory=lambda: [
            FieldSpec(name="x0", min=-50, max=50),
            FieldSpec(name="x1", min=-50, max=50),
            FieldSpec(name="x2", min=-50, max=50),
        ]
    )
    window_s: float = Field(300.0, gt=0, description="sliding event-time window length in seconds")
    mean_of: list[str] = Field(default_factory=lambda: ["x0"], description="fields whose window mean is a feature")
    allowed_lateness_s: float = Field(5.0, ge=0)

    @model_validator(mode="after")
    def _mean_fields_exist(self) -> "FeaturesConfig":
        names = {f.name for f in self.fields}
        for i, name in enumerate(self.mean_of):
            if name not in names:
                raise ValueError(f"mean_of.{i}: unknown field {name!r} (fields: {sorted(names)})")
        return self

    def feature_names(self) -> list[str]:
        """Columns of the model's input, in order: raw fields then window aggregates."""
        tag = _window_tag(self.window_s)
        return [f.name for f in self.fields] + [f"count_{tag}"] + [f"{m}_mean_{tag}" for m in self.mean_of]


class ShardsConfig(_Strict):
    """Feature shard actors."""

    num_shards: int = Field(2, gt=0)
    max_in_flight: int = Field(2, gt=0, description="batches in flight per shard (backpressure)")
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per shard actor")


class TrainerConfig(_Strict):
    """When and how the trainer refits XGBoost."""

    refit_every_rows: int = Field(8000, gt=0)
    window_rows: int = Field(16000, gt=0, description="train on the newest N labelled rows")
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    num_boost_round: int = Field(60, gt=0)
    max_depth: int = Field(5, gt=0)
    eta: float = Field(0.2, gt=0)
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved for the trainer actor")


class ServingConfig(_Strict):
    """Ray Serve app: Router ingress with blue/green slots."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    replicas: int = Field(1, gt=0)
    max_ongoing_requests: int = Field(64, gt=0)
    fast_ingress: bool = Field(
        True, description="RAY_SERVE_THROUGHPUT_OPTIMIZED + RAY_SERVE_ENABLE_HA_PROXY (set before Ray starts)"
    )
    flip_timeout_s: float = Field(60.0, gt=0)


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


def _window_tag(seconds: float) -> str:
    """Short label for a window length: 300 -> '5m', 45 -> '45s'."""
    s = int(seconds)
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


def format_validation_error(err: ValidationError) -> str:
    """Render pydantic errors as 'path.to.field: message' lines."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{path}: {e['msg']}")
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
