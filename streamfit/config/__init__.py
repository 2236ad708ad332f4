"""Typed configuration for every plane, loaded from YAML or taken from built-in defaults.

One module per plane holds its sections (``data``, ``learning``, ``serving``, ``storage``);
this package assembles them into ``Config`` and loads it.

Example:
    >>> cfg = Config()
    >>> cfg.shards.num_shards
    2
    >>> Config.model_validate({"shards": {"num_shards": 3}}).shards.num_shards
    3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from streamfit.config.base import Strict as _Strict
from streamfit.config.data import (
    AggregateSpec,
    FeaturesConfig,
    FieldSpec,
    FileSourceConfig,
    HttpSourceConfig,
    KafkaSourceConfig,
    LabelHistoryConfig,
    ShardsConfig,
    StreamConfig,
    WindowOp,
    window_tag,
)
from streamfit.config.learning import ModelConfig, TrainerConfig
from streamfit.config.security import SCOPES, AuthConfig
from streamfit.config.serving import MonitorConfig, RolloutConfig, ServingConfig
from streamfit.config.storage import CheckpointConfig, RegistryConfig
from streamfit.errors import ConfigError
from streamfit.task import TaskSpec

__all__ = [
    "AggregateSpec", "AuthConfig", "CheckpointConfig", "Config", "FeaturesConfig", "FieldSpec", "FileSourceConfig",
    "HttpSourceConfig", "KafkaSourceConfig", "LabelHistoryConfig", "ModelConfig", "MonitorConfig",
    "RegistryConfig", "RolloutConfig", "SCOPES", "ServingConfig", "ShardsConfig", "StreamConfig", "TrainerConfig", "WindowOp",
    "config_from_dict", "format_validation_error", "load_config", "window_tag",
]

class Config(_Strict):
    """The whole streamfit configuration."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    shards: ShardsConfig = Field(default_factory=ShardsConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)

    @model_validator(mode="after")
    def _trainer_speaks_the_task(self) -> "Config":
        spec = self.model.task_spec()
        trainer = self.trainer
        if "gate_metric" not in trainer.model_fields_set:
            trainer.gate_metric = spec.gate_metric  # the task's own loss
        elif trainer.gate_metric not in spec.metric_names():
            raise ValueError(f"@trainer.gate_metric: {trainer.gate_metric!r} is no metric of task {spec.task.value}"
                             f"{' (' + spec.objective + ')' if spec.objective else ''}; one of "
                             f"{', '.join(spec.metric_names())}")
        problem = trainer.task_problem(spec)  # a performance trigger of another task's metric
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _label_history_names_are_free(self) -> "Config":
        names = self.feature_names()
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"@features.fields: feature names of task {self.model.task} would repeat: {repeated}")
        return self

    def task_spec(self) -> TaskSpec:
        """What the model predicts: ``model.task_spec()``."""
        return self.model.task_spec()

    def feature_names(self) -> list[str]:
        """The model's input columns for this config's task: ``features.feature_names(model)``.

        >>> Config.model_validate({"model": {"task": "regression"}}).feature_names()[-3:]
        ['label_mean_1h', 'label_std_1h', 'label_count_1h']
        """
        return self.features.feature_names(self.model)

    def schema_hash(self) -> str:
        """The feature schema's hash for this config's task: ``features.schema_hash(model)`` (binary: unchanged)."""
        return self.features.schema_hash(self.model)


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
