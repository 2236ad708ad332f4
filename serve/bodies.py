"""Request and response bodies of the HTTP API (pydantic), validated before any handler runs.

The feature row is built from the configured feature names, so a missing, unknown or
non-finite feature is a 422 naming it, and OpenAPI lists every feature. A raw event
(``event_model``) is built from the configured input fields the same way: ``entity``
(required), ``event_time`` and ``event_id`` (optional), one JSON number per field (strict:
no strings, no booleans, finite), nothing else.

Example:
    >>> Row = row_model(["a", "b"])
    >>> Row(a=1, b=2.5).b, sorted(Row.model_json_schema()["required"])
    (2.5, ['a', 'b'])
    >>> from streamfit.config import FieldSpec
    >>> Event = event_model([FieldSpec(name="x0"), FieldSpec(name="x1", required=False)])
    >>> Event(entity="card-7", x0=3).model_dump(exclude_none=True)
    {'entity': 'card-7', 'x0': 3.0}
    >>> TrafficRequest(green=25).blue
    75
"""

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from streamfit.config import FieldSpec

ID_CHARS = 200  # longest entity, event id or routing key


def row_model(feature_names: list[str]) -> type[BaseModel]:
    """A pydantic model with one required finite float per feature (unknown keys refused)."""
    fields: dict[str, Any] = {name: (float, Field(..., allow_inf_nan=False)) for name in feature_names}
    return create_model("FeatureRow", __config__=ConfigDict(extra="forbid"), **fields)


def event_model(fields: list[FieldSpec]) -> type[BaseModel]:
    """A pydantic model of one raw event: entity, optional event_time and event_id, the configured fields."""
    number = {"strict": True, "allow_inf_nan": False}  # a JSON number: no strings, no booleans, finite
    spec: dict[str, Any] = {
        "entity": (str, Field(..., strict=True, min_length=1, max_length=ID_CHARS)),
        "event_time": (float | None, Field(None, **number, description="seconds since the epoch; default: the "
                                           "stream's clock (the latest event time the shards have applied)")),
        "event_id": (str | None, Field(None, strict=True, min_length=1, max_length=ID_CHARS,
                                       description="records the served features; joins the event with its label")),
    }
    for f in fields:
        spec[f.name] = (float, Field(..., **number)) if f.required else (float | None, Field(None, **number))
    return create_model("Event", __config__=ConfigDict(extra="forbid"), **spec)


def predict_request_model(row: type[BaseModel], raw: type[BaseModel] | None = None,
                          max_events: int = 1000) -> type[BaseModel]:
    """The body of ``POST /predict`` for rows of ``row`` and, given ``raw`` (an ``event_model``), raw events."""

    class PredictRequest(BaseModel):
        """One of ``features`` (one row), ``rows`` (a batch), ``event`` (one raw event), ``events`` (raw events)."""

        model_config = ConfigDict(extra="forbid")
        features: row | None = None  # type: ignore[valid-type]
        rows: list[row] | None = Field(None, min_length=1, max_length=10_000)  # type: ignore[valid-type]
        event_id: str | None = Field(None, max_length=ID_CHARS, description="joins the prediction with its label later")
        event_ids: list[str] | None = Field(None, description="one per row of a batch")
        routing_key: str | None = Field(None, max_length=ID_CHARS, description="sticky routing (e.g. the entity)")
        if raw is not None:
            event: raw | None = Field(None, description="one raw event, scored with its entity's live features")  # type: ignore[valid-type]
            events: list[raw] | None = Field(None, min_length=1, max_length=max_events,  # type: ignore[valid-type]
                                             description="raw events, scored with their entities' live features")
            ingest: bool = Field(False, description="the scored events also enter the stream (stream.source: http)")
            return_features: bool = Field(False, description="answer with the features each event was scored on")

        @model_validator(mode="after")
        def _one_of(self) -> "PredictRequest":
            kinds = ("features", "rows", "event", "events")
            if sum(getattr(self, k, None) is not None for k in kinds) != 1:
                raise ValueError("give exactly one of " + ("'features' (one row), 'rows' (a batch), 'event' (one raw "
                                 "event) or 'events' (raw events)" if raw is not None
                                 else "'features' (one row) or 'rows' (a batch)"))
            if self.event_ids is not None and (self.rows is None or len(self.event_ids) != len(self.rows)):
                raise ValueError("event_ids: one per row of 'rows'")
            if self.is_raw() and self.event_id is not None:
                raise ValueError("event_id: a raw event carries its own (event.event_id)")
            if not self.is_raw() and (getattr(self, "ingest", False) or getattr(self, "return_features", False)):
                raise ValueError("'ingest' and 'return_features' go with raw events ('event' or 'events')")
            return self

        def is_raw(self) -> bool:
            """True for raw events (``event`` / ``events``)."""
            return getattr(self, "event", None) is not None or getattr(self, "events", None) is not None

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


class EventPrediction(BaseModel):
    """One raw event's prediction: the version and slot that answered, and how fresh its features were."""

    prediction: int
    probability: float
    version: int
    model_version: int = Field(description="the same as version (the key of precomputed answers)")
    slot: str
    features_as_of: float | None = Field(description="the event time the owning shard had applied up to")
    event_id: str | None = Field(None, description="when the event carried one")
    features: dict[str, float | None] | None = Field(None, description="the served vector (return_features)")
    index: int | None = Field(None, description="the event's position in 'events' (batches)")
    ingested: IngestResponse | None = Field(None, description="what the stream took of it ('ingest': true)")


class RejectedEvent(BaseModel):
    """An event of a batch that was not scored, and why."""

    index: int
    reason: str


class EventBatchPrediction(BaseModel):
    """Raw events' predictions, one per scored event, and the rejected ones."""

    predictions: list[EventPrediction]
    rejected: list[RejectedEvent]
    ingested: IngestResponse | None = None


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
