"""The HTTP API (FastAPI): request/response models and routes, independent of Ray.

``build_api`` takes a ``RouterCore`` and a ``Backend`` for the parts that live elsewhere
(registry, controller, shards, trainer), so it can be tested with FastAPI's TestClient alone.

Example:
    >>> from streamfit.serve.router import RouterCore
    >>> from fastapi.testclient import TestClient
    >>> client = TestClient(build_api(RouterCore(["a", "b"])))
    >>> r = client.post("/predict", json={"features": {"a": 1.0}})
    >>> r.status_code, r.json()["detail"][0]["loc"]
    (422, ['body', 'features', 'b'])
"""


import asyncio
import hmac
import json
import time
from typing import Any, Awaitable, Callable, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from streamfit.config import FeaturesConfig
from streamfit.schema import validate
from streamfit.actors.stream import ingest_frame
from streamfit.serve.router import NoModelError, RouterCore, SlotNotReadyError
from streamfit.serve.status_page import render as render_status_page


def row_model(feature_names: list[str]) -> type[BaseModel]:
    """A pydantic model with one required finite float per feature (unknown keys refused)."""
    fields: dict[str, Any] = {name: (float, Field(..., allow_inf_nan=False)) for name in feature_names}
    return create_model("FeatureRow", __config__=ConfigDict(extra="forbid"), **fields)


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


def _json_safe(value: Any) -> Any:
    """Echoed inputs may hold inf/NaN (JSON has no such numbers): render those as strings."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


async def validation_error_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, made JSON-safe so a bad number never turns into a 500."""
    return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))})


class IngestRequest(BaseModel):
    """Events and labels pushed by a client; ``event_id`` makes a retried request harmless."""

    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]] = Field(..., min_length=1, max_length=100_000)


class IngestResponse(BaseModel):
    """What happened to each pushed row."""

    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]


class Backend:
    """What the HTTP API needs from the rest of the system; the Serve Router implements it.

    Every method may be left unimplemented: the matching endpoint then answers 501.
    """

    def models(self) -> dict[str, Any]:
        """Registered versions and aliases (blocking: called in a thread)."""
        raise NotImplementedError

    async def traffic(self) -> dict[str, Any]:
        """Desired and actual serving state."""
        raise NotImplementedError

    async def features(self, entity: str) -> dict[str, Any] | None:
        """An entity's current features, None if unknown."""
        raise NotImplementedError

    async def ingest(self, rows: Any) -> tuple[int, int]:
        """Append validated rows to the ingest log; (accepted, duplicates)."""
        raise NotImplementedError

    async def retrain(self, reason: str) -> dict[str, Any]:
        """Ask the trainer for a refit now."""
        raise NotImplementedError

    async def control(self, command: str, **kwargs: Any) -> dict[str, Any]:
        """A traffic command for the rollout controller (set_traffic, set_shadow, start_rollout, promote,
        abort, rollback); raises ValueError for a request that cannot be done now."""
        raise NotImplementedError

    def log_predictions(self, rows: list[tuple[str, int, str, float, float]]) -> None:
        """Predictions that carry an event id, for live accuracy once labels arrive."""

    async def status_page_data(self) -> dict[str, Any]:
        """What the status page shows (see ``status_page.render``)."""
        raise NotImplementedError

    async def monitor(self) -> dict[str, Any]:
        """Data quality, drift and live accuracy per version."""
        raise NotImplementedError


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


def admin_guard(token: str | None) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency: 401 without a bearer token, 403 with a wrong one (compared in constant time)."""

    async def check(authorization: str | None = Header(None)) -> None:
        if not token:
            raise HTTPException(status_code=503, detail="admin endpoints are off: set STREAMFIT_ADMIN_TOKEN")
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(status_code=401, detail="missing bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(authorization[7:].strip().encode(), token.encode()):
            raise HTTPException(status_code=403, detail="wrong admin token")

    return check


async def _call(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    try:
        return await fn(*args, **kwargs)
    except NotImplementedError:
        raise HTTPException(status_code=501, detail="not available in this deployment") from None


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


def build_api(core: RouterCore, backend: Backend | None = None, features_cfg: FeaturesConfig | None = None,
              admin_token: str | None = None, ingest_enabled: bool = False, max_request_bytes: int = 1_000_000,
              routing_key_header: str = "X-Routing-Key", pin_slot_header: str = "X-Streamfit-Slot",
              title: str = "streamfit") -> FastAPI:
    """The FastAPI app: prediction, ingestion, features, models, traffic and admin endpoints."""
    backend = backend or Backend()
    app = FastAPI(title=title, description="Fresh XGBoost models on streams, served blue-green on Ray Serve.")
    app.add_exception_handler(RequestValidationError, validation_error_handler)

    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    admin = [Depends(admin_guard(admin_token))]
    Row = row_model(core.feature_names)

    class PredictRequest(BaseModel):
        """Either ``features`` (one row) or ``rows`` (a batch)."""

        model_config = ConfigDict(extra="forbid")
        features: Row | None = None  # type: ignore[valid-type]
        rows: list[Row] | None = Field(None, min_length=1, max_length=10_000)  # type: ignore[valid-type]
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

    names = core.feature_names

    @app.post("/predict", response_model=Prediction | BatchPrediction)
    async def predict(req: PredictRequest, request: Request) -> Prediction | BatchPrediction:
        """Predict one row (``features``) or a batch (``rows``) with the traffic split.

        A routing key (``routing_key`` or the routing-key header) makes the choice of slot sticky;
        the pin header (``X-Streamfit-Slot: green``) sends the request to that slot, for testing a
        candidate by hand.
        """
        rows = [req.features] if req.features is not None else req.rows
        x = np.array([[getattr(r, n) for n in names] for r in rows], dtype=float)
        key = req.routing_key or request.headers.get(routing_key_header)
        pin = request.headers.get(pin_slot_header)
        if pin is not None and pin not in ("blue", "green"):
            raise HTTPException(status_code=422, detail=f"{pin_slot_header}: 'blue' or 'green', not {pin!r}")
        try:
            slot_name, version, probs = await core.apredict(x, key=key, pin=pin)
        except NoModelError as err:
            raise HTTPException(status_code=503, detail=str(err)) from None
        except SlotNotReadyError as err:
            raise HTTPException(status_code=409, detail=str(err)) from None
        ids = [req.event_id] if req.event_id is not None else (req.event_ids or [])
        if ids:
            now = time.time()
            backend.log_predictions([(i, version, slot_name, float(p), now) for i, p in zip(ids, probs)])
        if req.features is not None:
            p = float(probs[0])
            return Prediction(prediction=int(p >= 0.5), probability=p, model_version=version, slot=slot_name)
        return BatchPrediction(predictions=[int(p >= 0.5) for p in probs], probabilities=[float(p) for p in probs],
                               model_version=version, slot=slot_name)

    @app.get("/", response_class=HTMLResponse)
    async def status_page() -> HTMLResponse:
        """The status page: split and slot versions, rollout step, version history with refit reasons, charts."""
        return HTMLResponse(render_status_page(await _call(backend.status_page_data)))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and what this replica holds."""
        return {"status": "ok", "ready": bool(core.ready_slots()), **core.stats()}

    @app.get("/models")
    async def list_models() -> Any:
        """Registered versions with metrics, triggers and aliases."""
        try:
            return _json_safe(await asyncio.to_thread(backend.models))
        except NotImplementedError:
            raise HTTPException(status_code=501, detail="not available in this deployment") from None

    @app.get("/traffic")
    async def get_traffic() -> Any:
        """Desired split and slot versions, and what each Router replica holds."""
        return _json_safe(await _call(backend.traffic))

    @app.get("/monitor")
    async def get_monitor() -> Any:
        """Data quality (rejects by reason, null rates, late rows, watermark lag), drift (PSI, KS, alarm),
        and live accuracy per version."""
        return _json_safe(await _call(backend.monitor))

    @app.get("/features/{entity}")
    async def get_features(entity: str) -> Any:
        """The entity's current window aggregates and label history, from the shard that owns it."""
        found = await _call(backend.features, entity)
        if found is None:
            raise HTTPException(status_code=404, detail=f"unknown entity {entity!r}")
        return {"entity": entity, "features": found}

    @app.post("/ingest", response_model=IngestResponse)
    async def post_ingest(req: IngestRequest) -> IngestResponse:
        """Push events and labels (stream.source: http); invalid rows are rejected with a reason."""
        if not ingest_enabled or features_cfg is None:
            raise HTTPException(status_code=409, detail="ingest is off: this deployment reads another source")
        df = ingest_frame(req.events)
        _, reason = validate(df, features_cfg)
        bad = reason != ""
        rejected = [{"index": int(i), "event_id": _json_safe(df["event_id"].iloc[i]) if "event_id" in df else None,
                     "reason": str(reason[i])} for i in np.flatnonzero(bad)]
        if bad.all():
            raise HTTPException(status_code=422, detail={"message": "every row was rejected", "rejected": rejected})
        accepted, dups = await _call(backend.ingest, df[~bad].reset_index(drop=True))
        return IngestResponse(accepted=accepted, duplicates=dups, rejected=rejected)

    async def control(command: str, **kwargs: Any) -> Any:
        try:
            return _json_safe(await _call(backend.control, command, **kwargs))
        except ValueError as err:
            raise HTTPException(status_code=409, detail=str(err)) from None

    @app.put("/traffic", dependencies=admin)
    async def put_traffic(req: TrafficRequest) -> Any:
        """Set the split by hand (overrides a running rollout); optionally the shadow share."""
        out = None
        if req.shadow_share is not None:
            out = await control("set_shadow", share=req.shadow_share)
        if req.blue is not None:
            out = await control("set_traffic", weights={"blue": req.blue, "green": req.green})
        return out

    @app.post("/rollout", dependencies=admin)
    async def post_rollout(req: RolloutRequest | None = None) -> Any:
        """Roll a version out into the idle slot: verify, canary steps with analysis, promote or roll back."""
        req = req or RolloutRequest()
        return await control("start_rollout", version=req.version, steps=req.steps, bake_s=req.bake_s,
                             mode=req.mode, reason=req.reason)

    @app.post("/rollout/promote", dependencies=admin)
    async def post_promote() -> Any:
        """Approve a paused step, or skip the remaining steps and promote now."""
        return await control("promote")

    @app.post("/rollout/abort", dependencies=admin)
    async def post_abort(req: ActionRequest | None = None) -> Any:
        """Stop the rollout: all traffic back to the live version in one step."""
        return await control("abort", reason=(req.reason if req else "") or "aborted")

    @app.post("/rollback", dependencies=admin)
    async def post_rollback(req: ActionRequest | None = None) -> Any:
        """All traffic back to the previous version (loaded first if it is not)."""
        return await control("rollback", reason=(req.reason if req else "") or "rollback")

    @app.post("/retrain", dependencies=admin)
    async def post_retrain(req: RetrainRequest | None = None) -> Any:
        """Refit now (the validation gate still applies); answers with the new version or why there is none."""
        return await _call(backend.retrain, (req.reason if req else "manual") or "manual")

    return app
