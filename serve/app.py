"""The Ray Serve application: a FastAPI Router ingress holding the blue and green slots.

The Router is a thin shell: routing lives in ``RouterCore``, HTTP in ``api.build_api``, the calls
to the other planes in ``backend.RayBackend``.
Each replica long-polls the RolloutController for the desired state, loads versions into
its slots off the event loop (checking each against the registry's recorded sample), and
reports what it holds with its per-slot request figures. Swaps never call ``serve.run``
again (in Ray 2.60 that restarts every replica).

Load shedding and readiness: each replica queues at most ``serving.max_queued_requests`` requests
beyond ``max_ongoing_requests`` (Serve sheds the rest with 503 + ``Retry-After``); Serve answers
408 to a request past ``serving.request_timeout_s`` (``http_options``); a replica loads the live
model before it takes traffic and answers ``/readyz`` (see ``readiness``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import ray
from ray import serve

from streamfit.config import AuthConfig, Config, FeaturesConfig, HttpSourceConfig, ModelConfig, ServingConfig
from streamfit.registry import Registry
from streamfit.names import CONTROLLER_NAME, SLOTS
from streamfit.serve.api import build_api
from streamfit.serve.auth import Authorizer
from streamfit.serve.backend import RayBackend, follow_controller, load_slot, schema_hashes, serving_core, sync_once
from streamfit.serve.readiness import add_readiness, load_before_ready
from streamfit.serve.router import NoModelError
from streamfit.serve.slots import ModelSlot, score_batch

ADMIN_TOKEN_ENV = "STREAMFIT_ADMIN_TOKEN"


@serve.deployment(name="Router")
@serve.ingress()
class Router:
    """Ingress deployment: HTTP API + blue/green slots inside every replica."""

    async def __init__(self, registry_uri: str, features: dict[str, Any], serving: dict[str, Any], num_shards: int,
                       ingest: bool, controller_name: str, namespace: str, blue: Any = None,
                       green: Any = None, auth: dict[str, Any] | None = None,
                       http: dict[str, Any] | None = None, model: dict[str, Any] | None = None) -> None:
        self.features_cfg = FeaturesConfig.model_validate(features)
        self.model_cfg = ModelConfig.model_validate(model or {})  # the task /predict answers, slots must hold
        self.http = HttpSourceConfig.model_validate(http or {})  # /ingest's body limits
        self.serving = ServingConfig.model_validate(serving)
        self.schema_hash = schema_hashes(self.features_cfg, self.model_cfg)
        self.registry = Registry(registry_uri)
        remote = {"blue": blue, "green": green} if blue is not None else None
        self.core = serving_core(self.features_cfg, self.model_cfg, remote=remote,
                                 remote_timeout_s=self.serving.actor_timeout_s)
        self.backend = RayBackend(self.registry, self.features_cfg, namespace, num_shards, controller_name,
                                  self.serving)
        self.core.on_unseen = self.backend.unseen_category
        self.core.edges_of = lambda version: self.registry.task(version).value_edges  # slot deployments' scale
        self.ingest_enabled = ingest
        # Tokens come from the replica's environment (inherited from the process that started Ray).
        self.auth = Authorizer.from_config(AuthConfig.model_validate(auth or {}))
        replica_id = serve.get_replica_context().replica_id.unique_id
        controller = lambda: self.backend.actor(controller_name)  # noqa: E731
        timeout_s = self.serving.actor_timeout_s
        # Serve routes to this replica once __init__ returns: hold the live model by then, if there is one.
        await load_before_ready(lambda: sync_once(self.core, controller, self._load, replica_id, timeout_s=timeout_s),
                                self.serving.flip_timeout_s)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(follow_controller(self.core, controller, self._load, replica_id,
                                                          timeout_s=timeout_s)),
                       loop.create_task(self._flush_forever())]

    def __serve_build_asgi_app__(self) -> Any:
        api = build_api(self.core, self.backend, self.features_cfg, auth=self.auth, ingest_enabled=self.ingest_enabled,
                        max_request_bytes=self.serving.max_request_bytes,
                        routing_key_header=self.serving.routing_key_header,
                        pin_slot_header=self.serving.pin_slot_header,
                        max_batch_events=self.serving.max_batch_events, ingest_limits=self.http,
                        model=self.model_cfg)
        return add_readiness(api, self.core, self.serving.retry_after_s)

    def _load(self, slot: str, version: int) -> ModelSlot:
        return load_slot(self.registry, slot, version, self.core.feature_names, self.schema_hash, self.model_cfg,
                         self.features_cfg)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self.backend.flush_predictions()


@serve.deployment(name="Slot")
class SlotServer:
    """One slot as its own deployment (``serving.isolated_slots``): it loads the version the desired
    state names for its slot, reports to the controller, and predicts in batches (``@serve.batch``)."""

    async def __init__(self, slot: str, registry_uri: str, features: dict[str, Any], serving: dict[str, Any],
                       controller_name: str, namespace: str, model: dict[str, Any] | None = None) -> None:
        self.features_cfg = FeaturesConfig.model_validate(features)
        self.model_cfg = ModelConfig.model_validate(model or {})
        self.slot = slot
        self.schema_hash = schema_hashes(self.features_cfg, self.model_cfg)
        self.registry = Registry(registry_uri)
        self.core = serving_core(self.features_cfg, self.model_cfg)
        replica_id = f"{slot}:{serve.get_replica_context().replica_id.unique_id}"
        cfg = ServingConfig.model_validate(serving)
        self._batch.set_max_batch_size(cfg.slot_batch_size)
        controller = lambda: ray.get_actor(controller_name, namespace=namespace)  # noqa: E731
        await load_before_ready(lambda: sync_once(self.core, controller, self._load, replica_id, self._mine,
                                                  self._report, timeout_s=cfg.actor_timeout_s), cfg.flip_timeout_s)
        self._task = asyncio.get_running_loop().create_task(follow_controller(
            self.core, controller, self._load, replica_id, self._mine, self._report, timeout_s=cfg.actor_timeout_s))

    def _load(self, slot: str, version: int) -> ModelSlot:
        return load_slot(self.registry, slot, version, self.core.feature_names, self.schema_hash, self.model_cfg,
                         self.features_cfg)

    def _mine(self, desired: dict[str, Any]) -> dict[str, Any]:
        return {**desired, "slots": {s: (v if s == self.slot else None) for s, v in desired["slots"].items()}}

    def _report(self, rep: dict[str, Any]) -> dict[str, Any]:
        # The Router counts requests per slot; this replica reports only what it holds.
        return {**rep, "held": {self.slot: rep["held"][self.slot]}, "stats": {}}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _batch(self, xs: list[np.ndarray]) -> list[dict[str, Any]]:
        slot = self.core.slots[self.slot]
        if slot is None:
            raise NoModelError(f"slot {self.slot} holds no model yet")
        return score_batch(slot, xs)

    async def predict(self, x: np.ndarray) -> dict[str, Any]:
        """Predictions for the rows of ``x``, the version that made them and its unseen categories per field."""
        return await self._batch(x)


def http_options(serving: ServingConfig, port: int | None = None) -> dict[str, Any]:
    """``serve.start``'s ``http_options``: host, port (default ``serving.port``) and ``request_timeout_s``."""
    return {"host": serving.host, "port": serving.port if port is None else port,
            "request_timeout_s": serving.request_timeout_s}


def deployment_options(serving: ServingConfig) -> dict[str, Any]:
    """Options of the Router and slot deployments: replicas, concurrency, load shedding, access log."""
    return {"num_replicas": serving.replicas, "max_ongoing_requests": serving.max_ongoing_requests,
            # Beyond this many waiting requests Serve answers 503 + Retry-After instead of queueing without bound.
            "max_queued_requests": serving.max_queued_requests,
            "backpressure_config": {"status_code": 503, "retry_after_s": serving.retry_after_s},
            "ray_actor_options": {"num_cpus": 0},
            # A log line per request costs more than the prediction; Serve's metrics still count requests.
            "logging_config": {"enable_access_log": serving.access_log}}


def build_router(cfg: Config, registry_uri: str, namespace: str) -> serve.Application:
    """Bind the Router (and, with isolated slots, the two slot deployments) for ``serve.run``."""
    slot_handles: dict[str, Any] = {}
    if cfg.serving.isolated_slots:
        for s in SLOTS:
            slot_handles[s] = SlotServer.options(name=f"Slot{s.capitalize()}", **deployment_options(cfg.serving)).bind(
                s, registry_uri, cfg.features.model_dump(), cfg.serving.model_dump(), CONTROLLER_NAME, namespace,
                cfg.model.model_dump())
    return Router.options(**deployment_options(cfg.serving)).bind(
        registry_uri, cfg.features.model_dump(), cfg.serving.model_dump(), cfg.shards.num_shards,
        cfg.stream.source == "http", CONTROLLER_NAME, namespace, slot_handles.get("blue"), slot_handles.get("green"),
        cfg.auth.model_dump(), cfg.stream.http.model_dump(), cfg.model.model_dump())


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Serve application builder for ``serve deploy`` / KubeRay ``serveConfigV2``
    (``import_path: streamfit.serve.app:app_builder``).

    ``args``: ``config`` (path to the streamfit YAML; default: built-in) and optionally
    ``namespace`` (where the streamfit actors run; default ``streamfit``). The pipeline
    (``streamfit run --address auto``) must be running, or start after: Routers wait for the
    rollout controller.
    """
    from streamfit.config import load_config

    cfg = load_config(args.get("config"))
    return build_router(cfg, cfg.registry.uri, args.get("namespace", "streamfit"))
