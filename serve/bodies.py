"""Request and response bodies of the HTTP API (pydantic), validated before any handler runs.

The feature row is built from the configured feature names, so a missing, unknown or
non-finite feature is a 422 naming it, and OpenAPI lists every feature. A raw event
(``event_model``) is built from the configured input fields the same way: ``entity``
(required), ``event_time`` and ``event_id`` (optional), one JSON number per field (strict:
no strings, no booleans, finite) or, for a categorical field, its value as text (never a
number), nothing else.

Example:
    >>> Row = row_model(["a", "b"])
    >>> Row(a=1, b=2.5).b, sorted(Row.model_json_schema()["required"])
    (2.5, ['a', 'b'])
    >>> row_model(["x", "country"], categorical=["country"])(x=1, country="fr").country
    'fr'
    >>> from streamfit.config import FieldSpec
    >>> Event = event_model([FieldSpec(name="x0"), FieldSpec(name="x1", required=False)])
    >>> Event(entity="card-7", x0=3).model_dump(exclude_none=True)
    {'entity': 'card-7', 'x0': 3.0}
    >>> TrafficRequest(green=25).blue
    75

An ingest body (``POST /ingest``) is checked by ``ingest_columns`` before any frame is built: known
keys only (``kind``, ``entity``, ``event_time``, ``event_id``, ``label`` and the configured fields),
each value a JSON scalar, text no longer than the limit, at most so many events; the first event
with an unknown key is the 422 naming it, so a body of thousands of distinct keys costs nothing:

    >>> cols = ingest_columns([{"entity": "u1", "x0": 1}, {"entity": "u2", "kind": "label", "label": 1}],
    ...                       ["kind", "entity", "label", "x0"], max_events=10, max_chars=8)
    >>> cols["entity"], cols["x0"], cols["label"]
    (['u1', 'u2'], [1, None], [None, 1])
    >>> try:
    ...     ingest_columns([{"entity": "u1", "_partition": 3}], ["entity"], 10, 8)
    ... except BodyError as err:
    ...     err.status, err.detail[0]["loc"]
    (422, ['body', 'events', 0, '_partition'])
"""

import json
from typing import Annotated, Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from streamfit.config import FieldSpec

ID_CHARS = 200  # longest entity, event id or routing key


CATEGORY = Annotated[str, Field(strict=True, max_length=ID_CHARS)]  # a category is text: never a number


def row_model(feature_names: list[str], categorical: Sequence[str] = ()) -> type[BaseModel]:
    """A pydantic model with one required finite float per feature, or, for a ``categorical`` one, its value as
    text (null: missing); unknown keys refused."""
    cats = set(categorical)
    fields: dict[str, Any] = {name: ((CATEGORY | None, Field(..., description="a category (text); null: missing"))
                                     if name in cats else (float, Field(..., allow_inf_nan=False)))
                              for name in feature_names}
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
        kind, extra = (CATEGORY, {}) if f.categorical else (float, number)
        spec[f.name] = (kind, Field(..., **extra)) if f.required else (kind | None, Field(None, **extra))
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
        event_ids: list[Annotated[str, Field(max_length=ID_CHARS)]] | None = Field(
            None, description="one per row of a batch")
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



ECHO_DEPTH = 12  # an echoed input nested deeper is cut (a deeply nested body must not crash its 422)


def json_safe(value: Any, depth: int = 0) -> Any:
    """Echoed inputs may hold inf/NaN (JSON has no such numbers): render those as strings; cut deep nesting."""
    if isinstance(value, np.generic):  # a numpy scalar read back from a frame: JSON knows only Python's
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, (dict, list, tuple)) and depth >= ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {k: json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return value


async def read_capped(request: Any, max_bytes: int) -> bytes:
    """A request's body, refused (``BodyError`` 413) once it is over ``max_bytes``, as it streams in."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise BodyError(413, f"request body over {max_bytes} bytes")
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > max_bytes:
            raise BodyError(413, f"request body over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyError(Exception):
    """A request body refused before any frame is built: the HTTP status and FastAPI-style detail."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (by Content-Length, or as it streams in)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await self._too_large(send)
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Callable) -> None:
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _refuse(loc: list[Any], kind: str, msg: str) -> BodyError:
    return BodyError(422, [{"type": kind, "loc": ["body", *loc], "msg": msg}])


ECHO_KEY = 256  # an unknown key is named by at most this many characters
_SCALARS = frozenset({str, int, float, bool, type(None)})  # what json.loads makes of a JSON scalar
_NUMBERS = _SCALARS - {str}


def ingest_columns(events: Any, allowed: Sequence[str], max_events: int, max_chars: int) -> dict[str, list[Any]]:
    """The events of an ingest body as columns (``allowed`` order; ``allowed[0]`` always, so events without
    keys are rows too; None where an event lacks the key).

    Raises ``BodyError``: 413 over ``max_events``; 422 naming the event and key of an unknown key (the first
    in event order), a value that is not a JSON scalar, or text over ``max_chars``. Keys are checked per
    event and values per column with set and list operations, not a Python step per value."""
    if not isinstance(events, list) or not events:
        raise _refuse(["events"], "list_type", "a non-empty list of events")
    if len(events) > max_events:
        raise BodyError(413, f"{len(events)} events in one request; at most {max_events}")
    known = frozenset(allowed)
    for i, event in enumerate(events):
        if type(event) is not dict:
            raise _refuse(["events", i], "dict_type", "an event is a JSON object")
        if not known.issuperset(event):  # stops at the first bad event: thousands of distinct keys cost nothing
            key = next(k for k in event if k not in known)
            raise _refuse(["events", i, key[:ECHO_KEY]], "extra_forbidden",
                          f"unknown key {key[:ECHO_KEY]!r}; known: {', '.join(allowed)}")
    present = set().union(*events)
    cols: dict[str, list[Any]] = {}
    for key in allowed:
        if key in present or key == allowed[0]:
            col = cols[key] = [e.get(key) for e in events]
            kinds = set(map(type, col))
            if not kinds <= _NUMBERS:
                _check_values(col, kinds, key, max_chars)
    return cols


def _check_values(col: list[Any], kinds: set[type], key: str, max_chars: int) -> None:
    if not kinds <= _SCALARS:
        i = next(i for i, v in enumerate(col) if type(v) not in _SCALARS)
        raise _refuse(["events", i, key], "scalar_type", "a number, text, true/false or null")
    if max([len(v) for v in col if type(v) is str], default=0) > max_chars:
        i = next(i for i, v in enumerate(col) if type(v) is str and len(v) > max_chars)
        raise _refuse(["events", i, key], "string_too_long", f"at most {max_chars} characters")


def ingest_body(body: bytes, allowed: Sequence[str], max_events: int, max_chars: int) -> dict[str, list[Any]]:
    """``ingest_columns`` of a raw ``{"events": [...]}`` body; JSON nested too deeply to parse is a 400."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise BodyError(400, "the JSON body is nested too deeply") from None
    except ValueError as err:  # not JSON, or not UTF-8
        raise BodyError(422, [{"type": "json_invalid", "loc": ["body"], "msg": f"invalid JSON: {err}"[:200]}]) from None
    if type(data) is not dict or "events" not in data:
        raise _refuse(["events"], "missing", "a JSON object with 'events' (a list of events)")
    extra = [k for k in data if k != "events"]
    if extra:
        raise _refuse([extra[0][:ECHO_KEY]], "extra_forbidden", "the body holds 'events' only")
    return ingest_columns(data["events"], allowed, max_events, max_chars)


def ingest_schema(allowed: Sequence[str], max_events: int, max_chars: int) -> dict[str, Any]:
    """The OpenAPI schema of an ingest body: what ``ingest_body`` accepts."""
    scalar = {"anyOf": [{"type": "string", "maxLength": max_chars}, {"type": "number"}, {"type": "boolean"},
                        {"type": "null"}]}
    event = {"type": "object", "additionalProperties": False, "properties": {k: scalar for k in allowed}}
    return {"type": "object", "additionalProperties": False, "required": ["events"],
            "properties": {"events": {"type": "array", "minItems": 1, "maxItems": max_events, "items": event}}}


class IngestResponse(BaseModel):
    """What happened to each pushed row."""

    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]


class EventContext(BaseModel):
    """What every raw event's answer carries beside the prediction (``answers`` adds it per task)."""

    version: int
    model_version: int = Field(description="the same as version (the key of precomputed answers)")
    slot: str
    features_as_of: float | None = Field(description="the event time the owning shard had applied up to")
    event_id: str | None = Field(None, description="when the event carried one")
    features: dict[str, float | str | None] | None = Field(
        None, description="the served vector (return_features; a categorical field's value as text)")
    index: int | None = Field(None, description="the event's position in 'events' (batches)")
    ingested: IngestResponse | None = Field(None, description="what the stream took of it ('ingest': true)")


class EventPrediction(EventContext):
    """One raw event's prediction: the version and slot that answered, and how fresh its features were."""

    prediction: int
    probability: float


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
