"""Config of what is persisted: aligned checkpoints and the model registry."""

from __future__ import annotations

from pydantic import Field

from streamfit.config.base import Strict as _Strict


class CheckpointConfig(_Strict):
    """Aligned checkpoints of the shards' state (local path or object-store URI)."""

    enabled: bool = True
    uri: str = ".streamfit/checkpoints"
    interval_s: float = Field(10.0, gt=0, description="seconds between aligned checkpoints")


class RegistryConfig(_Strict):
    """Where versions, aliases and the audit log live (local path or object-store URI)."""

    uri: str = ".streamfit/registry"
