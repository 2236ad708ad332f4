"""The Ray Serve application: a FastAPI Router ingress holding the blue and green slots.

The Router is a thin shell: routing lives in ``RouterCore``, HTTP in ``api.build_api``.
Each replica long-polls the RolloutController for the desired state, loads versions into
its slots off the event loop (checking each against the registry's recorded sample), and
reports what it holds with its per-slot request figures. Swaps never call ``serve.run``
again (in Ray 2.60 that restarts every replica).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import numpy as np
import ray
from ray import serve

from streamfit.config import Config, FeaturesConfig, ServingConfig
from streamfit.registry import Registry
from streamfit.schema import shard_of
from streamfit.names import CONTROLLER_NAME, INGEST_NAME, MONITOR_NAME, SLOTS, TRAINER_NAME, shard_name
from streamfit.status import Drift, MonitorReport, RefitResult, SeriesPoint, TrafficStatus, latest_quality
from streamfit.serve.api import Backend, build_api
from streamfit.serve.router import RouterCore
from streamfit.serve.slots import ModelSlot
from streamfit.serve.status_page import StatusPageData

log = logging.getLogger("streamfit.serve")
ADMIN_TOKEN_ENV = "STREAMFIT_ADMIN_TOKEN"
CONTROL_COMMANDS = ("set_traffic", "set_shadow", "start_rollout", "promote", "abort", "rollback")


def load_slot(registry: Registry, slot: str, version: int, features: list[str], schema_hash: str) -> ModelSlot:
    """Read a version from the registry (sha256 checked) into a slot (features, schema and sample checked)."""
    booster, meta = registry.load(version)
    return ModelSlot.from_registry(slot, version, booster, meta, features, schema_hash)


@serve.deployment(name="Router")
@serve.ingress()
class Router(Backend):
    """Ingress deployment: HTTP API + blue/green slots inside every replica."""

    async def __init__(self, registry_uri: str, features: dict[str, Any], serving: dict[str, Any], num_shards: int,
                       ingest: bool, controller_name: str, namespace: str, blue: Any = None,
                       green: Any = None) -> None:
        self.features_cfg = FeaturesConfig.model_validate(features)
        self.serving = ServingConfig.model_validate(serving)
        self.schema_hash = self.features_cfg.schema_hash()
        self.registry = Registry(registry_uri)
        remote = {"blue": blue, "green": green} if blue is not None else None
        self.core = RouterCore(self.features_cfg.feature_names(), remote=remote)
        self.namespace = namespace
        self.num_shards = num_shards
        self.ingest_enabled = ingest
        self.controller_name = controller_name
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self._prediction_log: list[tuple[str, int, str, float, float]] = []
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._reconcile_forever()), loop.create_task(self._flush_forever())]

    def __serve_build_asgi_app__(self) -> Any:
        return build_api(self.core, self, self.features_cfg, admin_token=os.environ.get(ADMIN_TOKEN_ENV),
                         ingest_enabled=self.ingest_enabled, max_request_bytes=self.serving.max_request_bytes,
                         routing_key_header=self.serving.routing_key_header,
                         pin_slot_header=self.serving.pin_slot_header)

    @property
    def controller(self) -> Any:
        """The rollout controller (looked up each time: it may start after us, or restart)."""
        return ray.get_actor(self.controller_name, namespace=self.namespace)

    # -- Backend -----------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        versions = [{k: v for k, v in m.items() if k != "verify"} for m in self.registry.list_versions()]
        return {"versions": versions, "aliases": self.registry.aliases()}

    async def traffic(self) -> TrafficStatus:
        return TrafficStatus.model_validate(await self.controller.status.remote())

    async def features(self, entity: str) -> dict[str, Any] | None:
        owner = int(shard_of(np.array([entity], dtype=object), self.num_shards)[0])
        shard = ray.get_actor(shard_name(owner), namespace=self.namespace)
        return await shard.features.remote(entity)

    async def retrain(self, reason: str) -> RefitResult:
        trainer = ray.get_actor(TRAINER_NAME, namespace=self.namespace)
        out = await trainer.request_refit.remote(f"manual: {reason}" if reason != "manual" else "manual")
        return RefitResult.model_validate(out)

    async def ingest(self, rows: Any) -> tuple[int, int]:
        buffer = ray.get_actor(INGEST_NAME, namespace=self.namespace)
        return await buffer.append.remote(rows)

    async def control(self, command: str, **kwargs: Any) -> dict[str, Any]:
        if command not in CONTROL_COMMANDS:
            raise NotImplementedError
        try:
            return await getattr(self.controller, command).remote(**{k: v for k, v in kwargs.items() if v is not None})
        except (ValueError, RuntimeError) as err:  # Ray re-raises the actor's error as a subclass of it
            raise ValueError(str(getattr(err, "cause", None) or err)) from None

    def log_predictions(self, rows: list[tuple[str, int, str, float, float]]) -> None:
        self._prediction_log.extend(rows)

    async def monitor(self) -> MonitorReport:
        monitor = ray.get_actor(MONITOR_NAME, namespace=self.namespace)
        stats, series = await asyncio.gather(monitor.stats.remote(), monitor.timeseries.remote())
        return MonitorReport.from_monitor(stats, series)

    async def status_page_data(self) -> StatusPageData:
        traffic = await self.traffic()  # its live accuracy per version comes from the monitor
        versions = (await asyncio.to_thread(self.models))["versions"]
        try:
            monitor = ray.get_actor(MONITOR_NAME, namespace=self.namespace)
            series, drift = await asyncio.gather(monitor.timeseries.remote(), monitor.drift.remote())
        except ValueError:  # no monitor in this deployment
            series, drift = [], {}
        points = [SeriesPoint.model_validate(p) for p in series]
        return StatusPageData(traffic=traffic, fields=[f.name for f in self.features_cfg.fields], versions=versions,
                              series=points, drift=Drift.model_validate(drift), quality=latest_quality(points))

    # -- background work -------------------------------------------------------------------
    def _load(self, slot: str, version: int) -> ModelSlot:
        return load_slot(self.registry, slot, version, self.core.feature_names, self.schema_hash)

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                desired = await self.controller.desired.remote(self.core.revision, 1.0)
                await self.core.apply(desired, self._load)
                self.controller.report.remote(self.replica_id, self.core.report())
            except asyncio.CancelledError:
                raise
            except Exception as err:  # controller restarting: keep serving, retry shortly
                log.warning("reconcile failed: %s", err)
                await asyncio.sleep(0.5)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if not self._prediction_log:
                continue
            rows, self._prediction_log = self._prediction_log, []
            try:
                ray.get_actor(MONITOR_NAME, namespace=self.namespace).record.remote(rows)
            except Exception:  # no monitor in this deployment: live accuracy is simply not measured
                pass


@serve.deployment(name="Slot")
class SlotServer:
    """One slot as its own deployment (``serving.isolated_slots``): it loads the version the desired
    state names for its slot, reports to the controller, and predicts in batches (``@serve.batch``)."""

    async def __init__(self, slot: str, registry_uri: str, features: dict[str, Any], serving: dict[str, Any],
                       controller_name: str, namespace: str) -> None:
        features_cfg = FeaturesConfig.model_validate(features)
        self.slot = slot
        self.schema_hash = features_cfg.schema_hash()
        self.registry = Registry(registry_uri)
        self.core = RouterCore(features_cfg.feature_names())
        self.controller_name, self.namespace = controller_name, namespace
        self.replica_id = f"{slot}:{serve.get_replica_context().replica_id.unique_id}"
        self._batch.set_max_batch_size(ServingConfig.model_validate(serving).slot_batch_size)
        self._task = asyncio.get_running_loop().create_task(self._reconcile_forever())

    def _load(self, slot: str, version: int) -> ModelSlot:
        return load_slot(self.registry, slot, version, self.core.feature_names, self.schema_hash)

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                controller = ray.get_actor(self.controller_name, namespace=self.namespace)
                desired = await controller.desired.remote(self.core.revision, 1.0)
                mine = {**desired, "slots": {s: (v if s == self.slot else None) for s, v in desired["slots"].items()}}
                await self.core.apply(mine, self._load)
                rep = self.core.report()
                rep["held"] = {self.slot: rep["held"][self.slot]}
                rep["stats"] = {}  # the Router counts requests per slot
                controller.report.remote(self.replica_id, rep)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("slot reconcile failed: %s", err)
                await asyncio.sleep(0.5)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _batch(self, xs: list[np.ndarray]) -> list[dict[str, Any]]:
        slot = self.core.slots[self.slot]
        if slot is None:
            raise RuntimeError(f"slot {self.slot} holds no model yet")
        probs = slot.predict(np.vstack(xs))
        out, start = [], 0
        for x in xs:
            out.append({"version": slot.version, "probs": probs[start:start + len(x)]})
            start += len(x)
        return out

    async def predict(self, x: np.ndarray) -> dict[str, Any]:
        """Probabilities for the rows of ``x`` and the version that made them."""
        return await self._batch(x)


def build_router(cfg: Config, registry_uri: str, namespace: str) -> serve.Application:
    """Bind the Router (and, with isolated slots, the two slot deployments) for ``serve.run``."""
    slot_handles: dict[str, Any] = {}
    if cfg.serving.isolated_slots:
        for s in SLOTS:
            slot_handles[s] = SlotServer.options(
                name=f"Slot{s.capitalize()}", num_replicas=cfg.serving.replicas,
                max_ongoing_requests=cfg.serving.max_ongoing_requests, ray_actor_options={"num_cpus": 0},
                logging_config={"enable_access_log": cfg.serving.access_log},
            ).bind(s, registry_uri, cfg.features.model_dump(), cfg.serving.model_dump(), CONTROLLER_NAME, namespace)
    return Router.options(
        num_replicas=cfg.serving.replicas,
        max_ongoing_requests=cfg.serving.max_ongoing_requests,
        ray_actor_options={"num_cpus": 0},
        # A log line per request costs more than the prediction; Serve's metrics still count requests.
        logging_config={"enable_access_log": cfg.serving.access_log},
    ).bind(registry_uri, cfg.features.model_dump(), cfg.serving.model_dump(), cfg.shards.num_shards,
           cfg.stream.source == "http", CONTROLLER_NAME, namespace, slot_handles.get("blue"), slot_handles.get("green"))


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
