"""The HTTP API (FastAPI): request/response models and routes, independent of Ray.

``build_api`` takes a ``RouterCore`` and callables for the parts that live elsewhere
(model list, traffic state), so it can be tested with FastAPI's TestClient alone.

Example:
    >>> from streamfit.serve.router import RouterCore
    >>> from fastapi.testclient import TestClient
    >>> client = TestClient(build_api(RouterCore(["a", "b"]), models=lambda: {"versions": []}))
    >>> r = client.post("/predict", json={"features": {"a": 1.0}})
    >>> r.status_code, r.json()["detail"][0]["loc"]
    (422, ['body', 'features', 'b'])
"""


import asyncio
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import FastAPI, HTTPException, Request
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


def build_api(core: RouterCore, models: Callable[[], Any], traffic: Callable[[], Awaitable[Any]] | None = None,
              features: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
              ingest: Callable[[Any], Awaitable[tuple[int, int]]] | None = None,
              features_cfg: FeaturesConfig | None = None, title: str = "streamfit") -> FastAPI:
    """FastAPI app serving /predict, /healthz, /models, and /traffic, /features, /ingest when given."""
    app = FastAPI(title=title, description="Fresh XGBoost models on streams, served blue-green on Ray Serve.")
    app.add_exception_handler(RequestValidationError, validation_error_handler)
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
        return await asyncio.to_thread(models)

    if traffic is not None:
        @app.get("/traffic")
        async def get_traffic() -> Any:
            """Desired split and slot versions, and what each Router replica holds."""
            return await traffic()

    if features is not None:
        @app.get("/features/{entity}")
        async def get_features(entity: str) -> Any:
            """The entity's current window aggregates and label history, from the shard that owns it."""
            found = await features(entity)
            if found is None:
                raise HTTPException(status_code=404, detail=f"unknown entity {entity!r}")
            return {"entity": entity, "features": found}

    if ingest is not None and features_cfg is not None:
        @app.post("/ingest", response_model=IngestResponse)
        async def post_ingest(req: IngestRequest) -> IngestResponse:
            """Push events and labels; invalid rows are rejected with a reason, the rest are accepted."""
            df = ingest_frame(req.events)
            _, reason = validate(df, features_cfg)
            bad = reason != ""
            rejected = [{"index": int(i), "event_id": _json_safe(df["event_id"].iloc[i]) if "event_id" in df else None,
                         "reason": str(reason[i])} for i in np.flatnonzero(bad)]
            if bad.all():
                raise HTTPException(status_code=422, detail={"message": "every row was rejected", "rejected": rejected})
            accepted, dups = await ingest(df[~bad].reset_index(drop=True))
            return IngestResponse(accepted=accepted, duplicates=dups, rejected=rejected)

    return app
