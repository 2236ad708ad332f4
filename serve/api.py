"""The HTTP API (FastAPI): the routes, independent of Ray.

``build_api`` takes a ``RouterCore`` and a ``Backend`` for the parts that live elsewhere
(registry, controller, shards, trainer), so it can be tested with FastAPI's TestClient alone.
Request bodies are in ``bodies``, the scoped token checks in ``auth``, the scoring of raw events
(``{"event": ...}`` / ``{"events": [...]}``, joined with the shards' live features) in ``scoring``;
the status routes answer the typed models of ``streamfit.status``, so OpenAPI documents them.
``/predict`` answers the configured task's shape (``answers``: a 0/1 class and its probability, a value,
or a class with every class's probability), and OpenAPI documents only that task's answers.

Example:
    >>> from streamfit.serve.router import RouterCore
    >>> from fastapi.testclient import TestClient
    >>> client = TestClient(build_api(RouterCore(["a", "b"])))
    >>> r = client.post("/predict", json={"features": {"a": 1.0}})
    >>> r.status_code, r.json()["detail"][0]["loc"]
    (422, ['body', 'features', 'b'])
"""

import asyncio
import time
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from streamfit.config import AuthConfig, FeaturesConfig, HttpSourceConfig, ModelConfig
from streamfit.names import SLOTS
from streamfit.schema import BASE_COLUMNS, LABEL, validate
from streamfit.status import MonitorReport, RefitResult, Rollout, ServingView, TrafficStatus
from streamfit.actors.stream import ingest_frame
from streamfit.serve.auth import Authorizer, bearer
from streamfit.serve.bodies import (ActionRequest, BodyError, BodyLimit, IngestResponse, RetrainRequest,
                                    RolloutRequest, TrafficRequest, event_model, ingest_body, ingest_schema, json_safe,
                                    predict_request_model, read_capped, row_model)
from streamfit.serve.bodies import Prediction  # noqa: F401  (scripts/bare_server answers the binary body)
from streamfit.serve.lookup import EventRows, LookupAnswer
from streamfit.serve.router import RouterCore, routed_by_pin
from streamfit.serve.scoring import RawScorer, predict_rows
from streamfit.serve.status_page import StatusPageData, render as render_status_page


async def validation_error_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, made JSON-safe so a bad number never turns into a 500."""
    errors = [{**e, "input": json_safe(e["input"])} if "input" in e else e for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": json_safe(jsonable_encoder(errors))})


class Backend:
    """What the HTTP API needs from the rest of the system; the Serve Router implements it.

    Every method may be left unimplemented: the matching endpoint then answers 501.
    """

    def models(self) -> dict[str, Any]:
        """Registered versions and aliases (blocking: called in a thread)."""
        raise NotImplementedError

    async def traffic(self) -> TrafficStatus | dict[str, Any]:
        """Desired and actual serving state (the rollout controller's ``status()``)."""
        raise NotImplementedError

    async def features(self, entity: str) -> dict[str, Any] | None:
        """An entity's current features, None if unknown."""
        raise NotImplementedError

    async def lookup(self, rows: EventRows, record: bool) -> LookupAnswer:
        """Model rows for raw events from their owning shards (``ShardUnavailable`` when one cannot answer);
        with ``record`` the shards log the served vectors of events with an id."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Figures of this replica's backend (lookups), shown by ``/healthz``."""
        return {}

    async def ingest(self, rows: Any) -> tuple[int, int]:
        """Append validated rows to the ingest log; (accepted, duplicates). A full log raises an error with a
        ``retry_after_s`` attribute (the log's ``IngestBufferFull``, also as Ray re-raises it): a 429."""
        raise NotImplementedError

    async def retrain(self, reason: str) -> RefitResult | dict[str, Any]:
        """Ask the trainer for a refit now."""
        raise NotImplementedError

    async def control(self, command: str, **kwargs: Any) -> dict[str, Any]:
        """A traffic command for the rollout controller (set_traffic, set_shadow, start_rollout, promote,
        abort, rollback); raises ValueError for a request that cannot be done now."""
        raise NotImplementedError

    def log_predictions(self, rows: list[tuple[str, int, str, Any, float]]) -> None:
        """Predictions that carry an event id, for live accuracy once labels arrive: (event id, version, slot,
        prediction, time), the prediction a float (binary, regression) or k class probabilities (multiclass)."""

    async def audit(self, event: str, actor: str, reason: str) -> None:
        """Record an operator's action that no other part audits (a refit asked over HTTP)."""

    def auth_failed(self, scope: str, reason: str) -> None:
        """A request refused for its token (missing, wrong, or of a lower scope)."""

    def ingest_refused(self, rows: int) -> None:
        """A request answered 429: the ingest buffer was full (its ``rows`` were not taken)."""

    async def status_page_data(self) -> StatusPageData:
        """What the status page shows (see ``status_page.render``)."""
        raise NotImplementedError

    async def monitor(self) -> MonitorReport:
        """Data quality, drift and live accuracy per version."""
        raise NotImplementedError


async def _call(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    try:
        return await fn(*args, **kwargs)
    except NotImplementedError:
        raise HTTPException(status_code=501, detail="not available in this deployment") from None


class _Unpinned:
    """The backend as scoring sees it: a request pinned to a slot tests it by hand, so its predictions
    never reach the live accuracy the canary analysis reads."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def log_predictions(self, rows: list[tuple[str, int, str, Any, float]]) -> None:
        """Forward the rows, unless this request was pinned."""
        if not routed_by_pin():
            self._backend.log_predictions(rows)


def predict_scope(req: Any, pinned: bool, plain: str) -> str | None:
    """The scope a ``/predict`` request needs: admin to pin a slot, ingest for what feeds the stream or the
    live accuracy (``ingest``, event ids), read to see features, else ``plain`` ("none": open)."""
    if pinned:
        return "admin"
    events = [req.event] if getattr(req, "event", None) is not None else (getattr(req, "events", None) or [])
    if (getattr(req, "ingest", False) or req.event_id is not None or req.event_ids
            or any(e.event_id is not None for e in events)):
        return "ingest"
    if getattr(req, "return_features", False):
        return "read"
    return None if plain == "none" else plain


def build_api(core: RouterCore, backend: Backend | None = None, features_cfg: FeaturesConfig | None = None,
              admin_token: str | None = None, ingest_enabled: bool = False, max_request_bytes: int = 1_000_000,
              routing_key_header: str = "X-Routing-Key", pin_slot_header: str = "X-Streamfit-Slot",
              title: str = "streamfit", max_batch_events: int = 1000, auth: Authorizer | None = None,
              ingest_limits: HttpSourceConfig | None = None, model: ModelConfig | None = None) -> FastAPI:
    """The FastAPI app: prediction, ingestion, features, models, traffic and admin endpoints.

    With ``features_cfg``, ``POST /predict`` also scores raw events (at most ``max_batch_events`` a request);
    ``ingest_limits`` bound a ``POST /ingest`` body (default: ``HttpSourceConfig()``'s). ``/predict`` answers
    (and OpenAPI documents) ``core.answers``' task; ``model`` checks ingested labels (default: binary).
    ``auth`` holds the scope rules (default: the built-in ``AuthConfig`` with ``admin_token`` as the only token)."""
    backend = backend or Backend()
    if auth is None:
        auth = Authorizer({"admin": admin_token}, AuthConfig().open_scopes, AuthConfig().predict_scope)
    if auth.on_failure is None:
        auth.on_failure = backend.auth_failed
    logged = _Unpinned(backend)
    app = FastAPI(title=title, description="Fresh XGBoost models on streams, served blue-green on Ray Serve.")
    app.add_exception_handler(RequestValidationError, validation_error_handler)

    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    read, ingest = [Depends(auth.guard("read"))], [Depends(auth.guard("ingest"))]
    admin = Depends(auth.guard("admin"))  # its value is the actor the audit log names
    Row = row_model(core.feature_names, core.categorical)

    Event = event_model(features_cfg.fields) if features_cfg is not None else None
    PredictRequest = predict_request_model(Row, Event, max_batch_events)
    names = core.feature_names

    limits = ingest_limits or HttpSourceConfig()
    columns = BASE_COLUMNS + [LABEL] + [f.name for f in features_cfg.fields] if features_cfg is not None else []
    refused = {"requests": 0, "rows": 0}  # 429s: the ingest buffer was full (shown by /healthz)

    async def ingest_events(events: list[dict[str, Any]] | dict[str, list[Any]]) -> IngestResponse:
        """Validate rows and append the valid ones to the ingest log (the path of every ingested event)."""
        df = ingest_frame(events)
        _, reason = validate(df, features_cfg, model)
        bad = reason != ""
        rejected = [{"index": int(i), "event_id": json_safe(df["event_id"].iloc[i]) if "event_id" in df else None,
                     "reason": str(reason[i])} for i in np.flatnonzero(bad)]
        if bad.all():
            return IngestResponse(accepted=0, duplicates=0, rejected=rejected)
        try:
            accepted, dups = await _call(backend.ingest, df[~bad].reset_index(drop=True))
        except HTTPException:
            raise
        except Exception as err:
            # The buffer is full (also as Ray re-raises it): nothing was taken, the client retries.
            retry = getattr(err, "retry_after_s", None) or getattr(getattr(err, "cause", None), "retry_after_s", None)
            if retry is None:
                raise
            refused["requests"] += 1
            refused["rows"] += int((~bad).sum())
            backend.ingest_refused(int((~bad).sum()))
            raise HTTPException(status_code=429, detail=f"the ingest buffer is full; retry after {int(retry)} s",
                                headers={"Retry-After": str(int(retry))}) from None
        return IngestResponse(accepted=accepted, duplicates=dups, rejected=rejected)

    can_ingest = ingest_enabled and features_cfg is not None
    raw = RawScorer(core, logged, [f.name for f in features_cfg.fields] if features_cfg else [],
                    ingest_events if can_ingest else None)
    answers = core.answers

    @app.post("/predict", response_model=answers.response_model())
    async def predict(req: PredictRequest, request: Request,
                      credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Any:
        """Predict one row (``features``), a batch (``rows``), one raw event (``event``) or raw events
        (``events``) with the traffic split.

        A raw event is scored on its entity's live features, computed by the shard that owns it
        (``return_features`` shows them; ``ingest`` also sends the event into the stream). A routing
        key (``routing_key`` or the routing-key header) makes the choice of slot sticky; the pin
        header (``X-Streamfit-Slot: green``, admin) sends the request to that slot, for testing a candidate by
        hand (never counted in its analysis). Event ids and ``ingest`` need the ingest scope.
        """
        key = req.routing_key or request.headers.get(routing_key_header)
        pin = request.headers.get(pin_slot_header)
        if pin is not None and pin not in SLOTS:
            raise HTTPException(status_code=422, detail=f"{pin_slot_header}: 'blue' or 'green', not {pin!r}")
        scope = predict_scope(req, pin is not None, auth.predict_scope)
        if scope is not None:
            auth.check(scope, credentials)
        if req.is_raw():
            return await raw.score(req, key, pin)
        rows = [req.features] if req.features is not None else req.rows
        x = np.array([[getattr(r, n) for n in names] for r in rows], dtype=core.row_dtype)
        slot_name, version, probs = await predict_rows(core, x, key, pin)
        ids = [req.event_id] if req.event_id is not None else (req.event_ids or [])
        if ids:
            now = time.time()
            logged.log_predictions([(i, version, slot_name, p, now) for i, p in zip(ids, answers.logged(probs))])
        if req.features is not None:
            return answers.row(probs, version, slot_name)
        return answers.batch(probs, version, slot_name)

    @app.get("/", response_class=HTMLResponse, dependencies=read)
    async def status_page() -> HTMLResponse:
        """The status page: split and slot versions, rollout step, version history with refit reasons, charts."""
        return HTMLResponse(render_status_page(await _call(backend.status_page_data)))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and what this replica holds."""
        return {"status": "ok", "ready": bool(core.ready_slots()), **core.stats(), **backend.stats(),
                "auth_failures": auth.failures(), "ingest_refused": dict(refused)}

    @app.get("/models", dependencies=read)
    async def list_models() -> Any:
        """Registered versions with metrics, triggers and aliases."""
        try:
            return json_safe(await asyncio.to_thread(backend.models))
        except NotImplementedError:
            raise HTTPException(status_code=501, detail="not available in this deployment") from None

    typed = {"response_model_exclude_unset": True}  # answer what the producer said, invent no defaults

    @app.get("/traffic", response_model=TrafficStatus, dependencies=read, **typed)
    async def get_traffic() -> Any:
        """Desired split and slot versions, and what each Router replica holds."""
        return await _call(backend.traffic)

    @app.get("/monitor", response_model=MonitorReport, dependencies=read, **typed)
    async def get_monitor() -> Any:
        """Data quality (rejects by reason, null rates, late rows, watermark lag), drift (PSI, KS, alarm),
        live accuracy per version, and freshness: request-weighted served accuracy, stale share, seconds from
        each detected concept change to 100 % (live estimates: drift refits mark the changes)."""
        return await _call(backend.monitor)

    @app.get("/features/{entity}", dependencies=read)
    async def get_features(entity: str) -> Any:
        """The entity's current window aggregates and label history, from the shard that owns it."""
        found = await _call(backend.features, entity)
        if found is None:
            raise HTTPException(status_code=404, detail=f"unknown entity {entity!r}")
        return {"entity": entity, "features": found}

    body_doc = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": ingest_schema(columns, limits.max_events, limits.max_id_chars)}}}}
    too_much = {413: {"description": "body or event count over the limit"},
                429: {"description": "the ingest buffer is full: retry after Retry-After seconds"}}

    @app.post("/ingest", response_model=IngestResponse, dependencies=ingest, openapi_extra=body_doc,
              responses=too_much)
    async def post_ingest(request: Request) -> IngestResponse:
        """Push events and labels (stream.source: http); invalid rows are rejected with a reason.

        Checked before anything is built from it: known keys only (422 naming the key), JSON scalars,
        text of at most ``stream.http.max_id_chars``; over ``max_body_bytes`` or ``max_events``: 413.
        A full ingest buffer answers 429 with ``Retry-After`` (nothing was taken: send it again)."""
        if not can_ingest:
            raise HTTPException(status_code=409, detail="ingest is off: this deployment reads another source")
        try:
            cols = ingest_body(await read_capped(request, limits.max_body_bytes), columns, limits.max_events,
                               limits.max_id_chars)
        except BodyError as err:
            raise HTTPException(status_code=err.status, detail=err.detail) from None
        out = await ingest_events(cols)
        if len(out.rejected) == len(cols[columns[0]]):
            raise HTTPException(status_code=422, detail={"message": "every row was rejected", "rejected": out.rejected})
        return out

    async def control(command: str, **kwargs: Any) -> Any:
        try:
            return await _call(backend.control, command, **kwargs)
        except ValueError as err:
            raise HTTPException(status_code=409, detail=str(err)) from None

    @app.put("/traffic", response_model=ServingView, **typed)
    async def put_traffic(req: TrafficRequest, actor: str = admin) -> Any:
        """Set the split by hand (overrides a running rollout); optionally the shadow share."""
        out = None
        if req.shadow_share is not None:
            out = await control("set_shadow", share=req.shadow_share, actor=actor)
        if req.blue is not None:
            out = await control("set_traffic", weights={"blue": req.blue, "green": req.green}, actor=actor)
        return out

    @app.post("/rollout", response_model=Rollout, **typed)
    async def post_rollout(req: RolloutRequest | None = None, actor: str = admin) -> Any:
        """Roll a version out into the idle slot: verify, canary steps with analysis, promote or roll back."""
        req = req or RolloutRequest()
        return await control("start_rollout", version=req.version, steps=req.steps, bake_s=req.bake_s,
                             mode=req.mode, reason=req.reason, actor=actor)

    @app.post("/rollout/promote", response_model=Rollout, **typed)
    async def post_promote(actor: str = admin) -> Any:
        """Approve a paused step, or skip the remaining steps and promote now."""
        return await control("promote", actor=actor)

    @app.post("/rollout/abort", response_model=Rollout, **typed)
    async def post_abort(req: ActionRequest | None = None, actor: str = admin) -> Any:
        """Stop the rollout: all traffic back to the live version in one step."""
        return await control("abort", reason=(req.reason if req else "") or "aborted", actor=actor)

    @app.post("/rollback", response_model=ServingView, **typed)
    async def post_rollback(req: ActionRequest | None = None, actor: str = admin) -> Any:
        """All traffic back to the previous version (loaded first if it is not)."""
        return await control("rollback", reason=(req.reason if req else "") or "rollback", actor=actor)

    @app.post("/retrain", response_model=RefitResult, **typed)
    async def post_retrain(req: RetrainRequest | None = None, actor: str = admin) -> Any:
        """Refit now (the validation gate still applies); answers with the new version or why there is none."""
        reason = (req.reason if req else "manual") or "manual"
        await backend.audit("retrain", actor, reason)
        return await _call(backend.retrain, reason)

    return app
