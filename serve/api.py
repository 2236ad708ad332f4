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
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from streamfit.config import FeaturesConfig
from streamfit.actors.feature_shard import validate
from streamfit.actors.ingest import ingest_frame
from streamfit.serve.router import NoModelError, RouterCore


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


async def _call(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    try:
        return await fn(*args)
    except NotImplementedError:
        raise HTTPException(status_code=501, detail="not available in this deployment") from None


def build_api(core: RouterCore, backend: Backend | None = None, features_cfg: FeaturesConfig | None = None,
              admin_token: str | None = None, ingest_enabled: bool = False, title: str = "streamfit") -> FastAPI:
    """The FastAPI app: prediction, ingestion, features, models, traffic and admin endpoints."""
    backend = backend or Backend()
    app = FastAPI(title=title, description="Fresh XGBoost models on streams, served blue-green on Ray Serve.")
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    admin = [Depends(admin_guard(admin_token))]
    Row = row_model(core.feature_names)

    class PredictRequest(BaseModel):
        """Either ``features`` (one row) or ``rows`` (a batch)."""

        model_config = ConfigDict(extra="forbid")
        features: Row | None = None  # type: ignore[valid-type]
        rows: list[Row] | None = Field(None, min_length=1)  # type: ignore[valid-type]

        @model_validator(mode="after")
        def _one_of(self) -> "PredictRequest":
            if (self.features is None) == (self.rows is None):
                raise ValueError("give exactly one of 'features' (one row) or 'rows' (a batch)")
            return self

    names = core.feature_names

    @app.post("/predict", response_model=Prediction | BatchPrediction)
    async def predict(req: PredictRequest) -> Prediction | BatchPrediction:
        """Predict one row (``features``) or a batch (``rows``) with the live traffic split."""
        rows = [req.features] if req.features is not None else req.rows
        x = np.array([[getattr(r, n) for n in names] for r in rows], dtype=float)
        try:
            slot, probs = core.predict(x)
        except NoModelError as err:
            raise HTTPException(status_code=503, detail=str(err)) from None
        if req.features is not None:
            p = float(probs[0])
            return Prediction(prediction=int(p >= 0.5), probability=p, model_version=slot.version, slot=slot.name)
        return BatchPrediction(predictions=[int(p >= 0.5) for p in probs], probabilities=[float(p) for p in probs],
                               model_version=slot.version, slot=slot.name)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and what this replica holds."""
        return {"status": "ok", "ready": bool(core.ready_slots()), **core.stats()}

    @app.get("/models")
    async def list_models() -> Any:
        """Registered versions with metrics, triggers and aliases."""
        try:
            return await asyncio.to_thread(backend.models)
        except NotImplementedError:
            raise HTTPException(status_code=501, detail="not available in this deployment") from None

    @app.get("/traffic")
    async def get_traffic() -> Any:
        """Desired split and slot versions, and what each Router replica holds."""
        return await _call(backend.traffic)

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

    @app.post("/retrain", dependencies=admin)
    async def post_retrain(req: RetrainRequest | None = None) -> Any:
        """Refit now (the validation gate still applies); answers with the new version or why there is none."""
        return await _call(backend.retrain, (req.reason if req else "manual") or "manual")

    return app
