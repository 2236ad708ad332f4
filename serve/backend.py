"""What the HTTP API needs from the rest of the system, on Ray: ``RayBackend`` (the registry, and the
planes' actors looked up by name) and ``follow_controller``, the loop that keeps a replica's slots as
the rollout controller wants them. Both are plain: the Serve deployments in ``app`` only hold them.

Raw events' feature lookups go through a ``LookupBatcher`` per replica (one call per shard per
tick); a shard that cannot answer in time is counted in ``streamfit_lookup_unavailable``
(Prometheus: ``ray_streamfit_lookup_unavailable_total``, by shard). Every other call to an actor is
bounded too (``calls.ActorCalls``: ``serving.actor_timeout_s``, ``command_timeout_s`` for traffic
commands and refits); one that cannot answer is a 503 with ``Retry-After`` naming it, counted in
``streamfit_actor_unavailable`` (``ray_streamfit_actor_unavailable_total``, by actor) and in
``/healthz`` (``unavailable``). Requests refused for their token are counted in
``streamfit_auth_failures`` (``ray_streamfit_auth_failures_total``, by scope and reason); categories a
version never saw (scored as missing) in ``unseen_categories`` of ``/healthz`` and, once the Serve
metrics table has it, in ``streamfit_unseen_categories`` (by field).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import numpy as np
import pandas as pd
import ray

from streamfit.actors.monitoring import serve_metrics
from streamfit.config import FeaturesConfig, ModelConfig, ServingConfig
from streamfit.errors import RegistryError, StreamfitError
from streamfit.names import INGEST_NAME, MONITOR_NAME, TRAINER_NAME, shard_name
from streamfit.registry import Registry
from streamfit.schema import shard_of
from streamfit.status import Drift, MonitorReport, RefitResult, SeriesPoint, TrafficStatus, latest_quality
from streamfit.serve.answers import TaskAnswers
from streamfit.serve.api import Backend
from streamfit.serve.calls import ActorCalls, Unavailable, awaited
from streamfit.serve.lookup import EventRows, LookupAnswer, LookupBatcher, ShardUnavailable
from streamfit.serve.router import RouterCore, take_shadow_copy
from streamfit.serve.slots import ModelSlot
from streamfit.serve.status_page import StatusPageData

log = logging.getLogger("streamfit.serve")
CONTROL_COMMANDS = ("set_traffic", "set_shadow", "start_rollout", "promote", "abort", "rollback")


def load_slot(registry: Registry, slot: str, version: int, features: list[str], schema_hash: str | tuple[str, ...],
              model: ModelConfig | None = None, features_cfg: FeaturesConfig | None = None) -> ModelSlot:
    """Read a version from the registry (sha256 checked) into a slot (task with ``model`` and ``features_cfg``,
    features, schema and sample checked)."""
    booster, meta = registry.load(version)
    return ModelSlot.from_registry(slot, version, booster, meta, features, schema_hash, model, features_cfg)


def schema_hashes(features_cfg: FeaturesConfig, model: ModelConfig) -> tuple[str, ...]:
    """The schema hashes a version may carry: the features' with the task's label history, or the features'
    alone (the task itself is checked apart, ``registry.task_difference``); one for a binary task."""
    return tuple(dict.fromkeys([features_cfg.schema_hash(model), features_cfg.schema_hash()]))


def serving_core(features_cfg: FeaturesConfig, model: ModelConfig, **kwargs: Any) -> RouterCore:
    """A ``RouterCore`` for the config's model rows (``feature_names(model)``, ``categorical_columns`` as text) and
    its task's answers."""
    return RouterCore(features_cfg.feature_names(model), answers=TaskAnswers(model.task, model.classes),
                      categorical=features_cfg.categorical_columns(model), **kwargs)


class RayBackend(Backend):
    """The API's backend on Ray: registry reads, the controller, shards, trainer, ingest log and monitor."""

    def __init__(self, registry: Registry, features_cfg: FeaturesConfig, namespace: str, num_shards: int,
                 controller_name: str, serving: ServingConfig | None = None) -> None:
        self.registry, self.features_cfg = registry, features_cfg
        self.namespace, self.num_shards, self.controller_name = namespace, num_shards, controller_name
        self._prediction_log: list[tuple[Any, ...]] = []
        s = serving or ServingConfig()
        self.batcher = LookupBatcher(self._shard_lookup, num_shards, wait_s=s.lookup_wait_ms / 1000,
                                     max_batch=s.lookup_max_batch, timeout_s=s.lookup_timeout_s,
                                     max_gap_s=s.lookup_max_gap_ms / 1000)
        self._shards: dict[int, Any] = {}  # handles stay valid across a shard's restarts
        self.metrics: dict[str, Any] | None = None  # made in the replica on first use (Ray's metrics need a worker)
        self.command_timeout_s = s.command_timeout_s
        self.calls = ActorCalls(self.actor, s.actor_timeout_s, s.retry_after_s, self._count_unavailable)

    def actor(self, name: str) -> Any:
        """A named actor of this deployment (looked up each time: it may start later, or restart)."""
        return ray.get_actor(name, namespace=self.namespace)

    def models(self) -> dict[str, Any]:
        """Registered versions (without their verification sample) and aliases; storage that cannot be read
        now (its own retries and timeouts spent) is a 503 naming the registry."""
        try:
            versions = [{k: v for k, v in m.items() if k != "verify"} for m in self.registry.list_versions()]
            return {"versions": versions, "aliases": self.registry.aliases()}
        except RegistryError as err:
            raise self.calls.fail("registry", str(err)) from None

    async def traffic(self) -> TrafficStatus:
        """The rollout controller's status."""
        status = await self.calls.call("controller", self.controller_name, lambda c: c.status.remote())
        return TrafficStatus.model_validate(status)

    async def features(self, entity: str) -> dict[str, Any] | None:
        """The entity's features, from the shard that owns it."""
        owner = int(shard_of(np.array([entity], dtype=object), self.num_shards)[0])
        return await self.calls.call("shard", shard_name(owner), lambda shard: shard.features.remote(entity))

    async def _shard_lookup(self, shard: int, events: pd.DataFrame, record: bool) -> Any:
        handle = self._shards.get(shard)
        if handle is None:  # a GCS round trip: off the event loop, which serves every request of the replica
            handle = self._shards[shard] = await asyncio.to_thread(self.actor, shard_name(shard))
        try:
            return await handle.lookup.remote(events, record)
        except Exception:
            self._shards.pop(shard, None)  # looked up again next time: the actor may have been started anew
            raise

    async def lookup(self, rows: EventRows, record: bool) -> LookupAnswer:
        """Model rows for raw events, micro-batched per owning shard; counts the requests no shard answered."""
        try:
            return await self.batcher.lookup(rows, record)
        except ShardUnavailable as err:
            self._count("lookup_unavailable", 1.0, {"shard": str(err.shard)})
            raise

    def auth_failed(self, scope: str, reason: str) -> None:
        """Count a request refused for its token (missing, wrong, of a lower scope)."""
        self._count("auth_failures", 1.0, {"scope": scope, "reason": reason})

    async def audit(self, event: str, actor: str, reason: str) -> None:
        """An operator's action in the registry's audit log (its actor is a token's scope, never its value)."""
        await asyncio.to_thread(self.registry.audit, event, actor=actor, reason=reason)

    def _count(self, key: str, value: float, tags: dict[str, str] | None = None) -> None:
        if self.metrics is None:
            self.metrics = serve_metrics()
        self.metrics[key].inc(value, tags)

    def _count_unavailable(self, target: str) -> None:
        self._count("actor_unavailable", 1.0, {"actor": target})

    def unseen_category(self, field: str, n: int) -> None:
        """Count categories of ``field`` the answering version never saw (Prometheus)."""
        self._count("unseen_category", float(n), {"field": field})

    def ingest_refused(self, rows: int) -> None:
        """Count an ingest request refused with 429 (the ingest buffer was full) and its rows."""
        if rows > 0:  # Ray's counters refuse 0
            self._count("ingest_refused_rows", float(rows))

    def stats(self) -> dict[str, Any]:
        """This replica's lookups (requests, calls, events, timeouts, errors, unavailable) and the 503s it
        answered for each actor that could not answer (``unavailable``)."""
        return {"lookups": self.batcher.stats(), "unavailable": dict(self.calls.unavailable)}

    async def retrain(self, reason: str) -> RefitResult:
        """A refit now, from the trainer (a 503 after ``command_timeout_s``: the refit may still finish)."""
        why = f"manual: {reason}" if reason != "manual" else "manual"
        out = await self.calls.call("trainer", TRAINER_NAME, lambda t: t.request_refit.remote(why),
                                    self.command_timeout_s)
        return RefitResult.model_validate(out)

    async def ingest(self, rows: Any) -> tuple[int, int]:
        """Rows appended to the ingest log: (accepted, duplicates). A 503 may come after the rows were
        stored: the client's retry is answered "duplicates" by their event ids."""
        try:
            return await self.calls.call("ingest", INGEST_NAME, lambda log_: log_.append.remote(rows))
        except (StreamfitError, OSError) as err:  # storage down beyond the log's retries: nothing was taken
            raise self.calls.fail("ingest", f"its write-ahead storage failed: {type(err).__name__}") from None

    async def control(self, command: str, **kwargs: Any) -> dict[str, Any]:
        """A traffic command, run by the rollout controller; what it cannot do now is a ValueError."""
        if command not in CONTROL_COMMANDS:
            raise NotImplementedError
        args = {k: v for k, v in kwargs.items() if v is not None}
        try:
            return await self.calls.call("controller", self.controller_name,
                                         lambda c: getattr(c, command).remote(**args), self.command_timeout_s)
        except Unavailable:
            raise
        except (ValueError, RuntimeError, StreamfitError) as err:  # Ray re-raises the actor's error as a subclass
            # of it; StreamfitError: e.g. a rollout of a version the registry does not hold (a 409, not a 500).
            raise ValueError(str(getattr(err, "cause", None) or err)) from None

    def log_predictions(self, rows: list[tuple[str, int, str, float, float]]) -> None:
        """Keep predictions with an event id until the next flush; while a candidate rolls out, the other
        slot scores the same rows in shadow and its answers are logged too (marked shadow)."""
        self._prediction_log.extend(rows)
        copy = take_shadow_copy()
        if copy is not None and rows and len(rows) == len(copy.x):  # else rows and answers do not line up
            copy.score([r[0] for r in rows], rows[0][4], lambda shadow: self._prediction_log.extend(shadow))

    async def flush_predictions(self) -> None:
        """Send the logged predictions to the monitor (dropped when there is none: accuracy is not measured)."""
        if not self._prediction_log:
            return
        rows, self._prediction_log = self._prediction_log, []
        try:  # the lookup in a thread (a GCS round trip), the call not awaited: neither can stall requests
            monitor = await asyncio.wait_for(asyncio.to_thread(self.actor, MONITOR_NAME), self.calls.timeout_s)
            monitor.record.remote(rows)
        except Exception:  # no monitor in this deployment, or it cannot answer now
            pass

    async def _monitor_pair(self, first: str, second: str) -> tuple[Any, Any]:
        return await self.calls.call("monitor", MONITOR_NAME, lambda m: asyncio.gather(
            getattr(m, first).remote(), getattr(m, second).remote()))

    async def monitor(self) -> MonitorReport:
        """The monitor's report."""
        stats, series = await self._monitor_pair("stats", "timeseries")
        return MonitorReport.from_monitor(stats, series)

    async def status_page_data(self) -> StatusPageData:
        """Traffic, versions, the monitor's series and drift, for the status page."""
        traffic = await self.traffic()  # its live accuracy per version comes from the monitor
        versions = (await asyncio.to_thread(self.models))["versions"]
        try:
            series, drift = await self._monitor_pair("timeseries", "drift")
        except Unavailable:  # no monitor in this deployment, or restarting: the page shows the rest
            series, drift = [], {}
        points = [SeriesPoint.model_validate(p) for p in series]
        return StatusPageData(traffic=traffic, fields=[f.name for f in self.features_cfg.fields], versions=versions,
                              series=points, drift=Drift.model_validate(drift), quality=latest_quality(points))


def _same(d: dict[str, Any]) -> dict[str, Any]:
    return d


async def sync_once(core: RouterCore, controller: Callable[[], Any], load: Callable[[str, int], ModelSlot],
                    replica_id: str, wanted: Callable[[dict], dict] = _same, reported: Callable[[dict], dict] = _same,
                    poll_s: float = 1.0, timeout_s: float = 10.0) -> None:
    """One round: long-poll (``poll_s``) the desired state newer than what ``core`` holds, bounded by
    ``poll_s + timeout_s``; load what it names (``wanted`` picks this replica's part); report what the
    replica holds (shaped by ``reported``)."""
    ctl = await asyncio.wait_for(asyncio.to_thread(controller), timeout_s)  # a GCS round trip: off the event loop
    desired = await asyncio.wait_for(awaited(ctl.desired.remote(core.revision, poll_s)), poll_s + timeout_s)
    await core.apply(wanted(desired), load)
    ctl.report.remote(replica_id, reported(core.report()))


async def follow_controller(core: RouterCore, controller: Callable[[], Any], load: Callable[[str, int], ModelSlot],
                            replica_id: str, wanted: Callable[[dict], dict] = _same,
                            reported: Callable[[dict], dict] = _same, timeout_s: float = 10.0) -> None:
    """Forever: ``sync_once``; a controller restarting (or silent past ``timeout_s``) is retried shortly."""
    while True:
        try:
            await sync_once(core, controller, load, replica_id, wanted, reported, timeout_s=timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # controller restarting: keep serving, retry shortly
            log.warning("reconcile failed: %s", err)
            await asyncio.sleep(0.5)
