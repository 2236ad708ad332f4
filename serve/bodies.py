"""Request and response bodies of the HTTP API (pydantic), validated before any handler runs.

The feature row is built from the configured feature names, so a missing, unknown or
non-finite feature is a 422 naming it, and OpenAPI lists every feature.

Example:
    >>> Row = row_model(["a", "b"])
    >>> Row(a=1, b=2.5).b, sorted(Row.model_json_schema()["required"])
    (2.5, ['a', 'b'])
    >>> TrafficRequest(green=25).blue
    75
"""

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator


def row_model(feature_names: list[str]) -> type[BaseModel]:
    """A pydantic model with one required finite float per feature (unknown keys refused)."""
    fields: dict[str, Any] = {name: (float, Field(..., allow_inf_nan=False)) for name in feature_names}
    return create_model("FeatureRow", __config__=ConfigDict(extra="forbid"), **fields)


def predict_request_model(row: type[BaseModel]) -> type[BaseModel]:
    """The body of ``POST /predict`` for rows of ``row``."""

    class PredictRequest(BaseModel):
        """Either ``features`` (one row) or ``rows`` (a batch)."""

        model_config = ConfigDict(extra="forbid")
        features: row | None = None  # type: ignore[valid-type]
        rows: list[row] | None = Field(None, min_length=1, max_length=10_000)  # type: ignore[valid-type]
        event_id: str | None = Field(None, max_length=200, description="joins the prediction with its label later")
        event_ids: list[str] | None = Field(None, description="one per row of a batch")
        routing_key: str | None = Field(None, max_length=200, description="sticky routing (e.g. the entity)")

        @model_validator(mode="after")
        def _one_of(self) -> "PredictRequest":
            if (self.features is None) == (self.rows is None):
                raise ValueError("give exactly one of 'features' (one row) or 'rows' (a batch)")
            if self.event_ids is not None and (self.rows is None or len(self.event_ids) != len(self.rows)):
                raise ValueError("event_ids: one per row of 'rows'")
            return self

    return PredictRequest


class Prediction(BaseModel):
    """One prediction, with the version and slot that made it."""

    prediction: int
    probability: float
    model_version: int
    slot: str


class BatchPrediction(BaseModel):
    """Predictions for a batch of rows, all made by one version."""

    predictions: list[int]
    probabilities: list[float]
    model_version: int
    slot: str


def json_safe(value: Any) -> Any:
    """Echoed inputs may hold inf/NaN (JSON has no such numbers): render those as strings."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class IngestRequest(BaseModel):
    """Events and labels pushed by a client; ``event_id`` makes a retried request harmless."""

    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]] = Field(..., min_length=1, max_length=100_000)


class IngestResponse(BaseModel):
    """What happened to each pushed row."""

    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]


class TrafficRequest(BaseModel):
    """A split by hand (percentages summing to 100; one slot given means the other gets the rest)."""

    model_config = ConfigDict(extra="forbid")
    blue: int | None = Field(None, ge=0, le=100)
    green: int | None = Field(None, ge=0, le=100)
    shadow_share: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _complete(self) -> "TrafficRequest":
        if self.blue is None and self.green is None:
            if self.shadow_share is None:
                raise ValueError("give blue and/or green (percent), or shadow_share")
            return self
        if self.blue is None:
            self.blue = 100 - self.green
        if self.green is None:
            self.green = 100 - self.blue
        if self.blue + self.green != 100:
            raise ValueError(f"blue + green must be 100, got {self.blue} + {self.green}")
        return self


class RolloutRequest(BaseModel):
    """Start a rollout (defaults: the newest registered version, the configured steps and bake time)."""

    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1)
    steps: list[int] | None = Field(None, min_length=1)
    bake_s: float | None = Field(None, gt=0, le=86_400)
    mode: Literal["canary", "flip"] | None = None
    reason: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _steps(self) -> "RolloutRequest":
        if self.steps is not None and (any(not 0 < w <= 100 for w in self.steps)
                                       or self.steps != sorted(set(self.steps)) or self.steps[-1] != 100):
            raise ValueError("steps: increasing percentages in (0, 100], ending at 100")
        return self


class ActionRequest(BaseModel):
    """Why (recorded in the audit log)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500)


class RetrainRequest(BaseModel):
    """Why an operator asks for a refit (recorded with the version)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field("manual", max_length=500)
