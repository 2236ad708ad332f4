"""Starts and stops the planes: Ray, the data and training actors, the rollout controller, the Serve app."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray import serve

from streamfit.config import Config
from streamfit.errors import ConfigError
from streamfit.registry import Registry
from streamfit.tokens import ensure_admin_token, token_notice
from streamfit.retry import retrying, wait_until  # noqa: F401  (wait_until re-exported: tests and the demo wait with it)
from streamfit.names import (APP_NAME, CONTROLLER_NAME, COORDINATOR_NAME, MONITOR_NAME, NAMESPACE, TRAINER_NAME,
                             shard_name)
from streamfit.actors.stream import CoordinatorActor, FeatureShardActor
from streamfit.actors.monitoring import MonitorActor
from streamfit.actors.rollout import RolloutControllerActor
from streamfit.actors.training import TrainerActor
from streamfit.serve.app import build_router, http_options
from streamfit.scripts.ports import free_port

# The planes' single actors (coordinator, trainer, controller, monitor) stay on the head node: a lost
# worker node then takes only shards (which recover) and replicas (which Serve restarts) with it.
ON_HEAD = {"node:__internal_head__": 0.001}


SERVE_SIDE_PORTS = ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT",
                    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")
PLANE_NAMES = {"coordinator": COORDINATOR_NAME, "controller": CONTROLLER_NAME, "trainer": TRAINER_NAME}
PICKED_PORTS = "STREAMFIT_PICKED_SERVE_PORTS"  # the side ports streamfit picked (not the user): picked again


def absolute_uri(uri: str) -> str:
    """An object-store URI as it is; a local path made absolute (actors run in other directories)."""
    return uri if "://" in uri else os.path.abspath(uri)


def serve_environment(fast_ingress: bool) -> dict[str, str]:
    """Environment for Ray Serve, to be set before Ray starts (its processes read it at start-up)."""
    env: dict[str, str] = {}
    if fast_ingress:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"  # direct ingress, gRPC between replicas
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"  # Ray's bundled HAProxy instead of the Python proxy
    # Serve's side ports default to fixed numbers; pick free ones so two instances never collide. A port
    # picked for an earlier start (this process's, or a parent's: the environment is inherited) may be
    # anyone's by now, so only ports the user set are kept: a loaded CI run's demo inherited one in use.
    earlier = dict(p.split("=", 1) for p in os.environ.get(PICKED_PORTS, "").split(",") if "=" in p)
    picked: dict[str, str] = {}
    for name in SERVE_SIDE_PORTS:
        given = os.environ.get(name)
        if given and earlier.get(name) != given:
            env[name] = given  # the user's
        else:
            env[name] = picked[name] = str(free_port())
    env[PICKED_PORTS] = ",".join(f"{name}={port}" for name, port in picked.items())
    return env


def start_ray(cfg: Config, address: str | None = None) -> None:
    """Start (or connect to) Ray with the Serve environment in place."""
    if ray.is_initialized():
        return
    os.environ.update(serve_environment(cfg.serving.fast_ingress))
    # Serve replicas inherit the environment of the Ray processes started here.
    where = ensure_admin_token()
    if where is not None:
        print(token_notice(where), file=sys.stderr)
    if address:
        ray.init(address=address, namespace=NAMESPACE)
    else:
        ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
                 _metrics_export_port=cfg.serving.metrics_port)


def check_shared_storage(cfg: Config) -> None:
    """On a Ray cluster of several nodes, the registry and checkpoints must be on storage every node reaches."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    for path, uri in (("registry.uri", cfg.registry.uri), ("checkpoints.uri", cfg.checkpoints.uri)):
        if path == "checkpoints.uri" and not cfg.checkpoints.enabled:
            continue
        if "://" not in uri or uri.startswith("file://"):
            raise ConfigError(f"{path}: {uri!r} is a path on one node, but this Ray cluster has {len(nodes)} nodes; "
                              "use an object-store URI (e.g. s3://bucket/prefix) that every node can reach")


def start_data_plane(cfg: Config, sink: Any | None, monitor: Any | None = None) -> tuple[list[Any], Any]:
    """Start the shard actors (each resumes from the last checkpoint) and the coordinator feeding ``sink``."""
    ckpt_uri = absolute_uri(cfg.checkpoints.uri) if cfg.checkpoints.enabled else None
    n = cfg.shards.num_shards
    shards = [
        # SPREAD: on a cluster the shards go to different nodes, so losing one node loses few shards.
        FeatureShardActor.options(name=shard_name(i), namespace=NAMESPACE, num_cpus=cfg.shards.num_cpus,
                                  scheduling_strategy="SPREAD").remote(cfg.features, i, ckpt_uri, n, cfg.trainer.training_features,
                                                                    model=cfg.model)
        for i in range(n)
    ]
    coordinator = CoordinatorActor.options(name=COORDINATOR_NAME, namespace=NAMESPACE,
                                           resources=ON_HEAD).remote(cfg, shards, sink, monitor)
    return shards, coordinator


def _deploy(cfg: Config, registry_uri: str, port: int) -> None:
    """Start Serve's HTTP proxy and deploy the Router app."""
    serve.start(http_options=http_options(cfg.serving, port))
    serve.run(build_router(cfg, registry_uri, NAMESPACE), name=APP_NAME, route_prefix="/")


def start_serving(cfg: Config, registry_uri: str, attempts: int = 3) -> int:
    """Deploy the Router app behind Serve's proxy; the port it listens on (a free one for ``serving.port: 0``)."""
    attempt = 0
    while True:
        attempt += 1
        port = cfg.serving.port or free_port()
        try:
            # On a loaded node Serve's controller may replace a proxy that was slow to become healthy while
            # serve.run waits on it, or serve.start gives up on the proxy after Ray's fixed 60 s: deploy again.
            retrying(_deploy, cfg, registry_uri, port, on=(RayActorError, GetTimeoutError), attempts=3,
                     first_wait_s=1.0)
            return port
        except RayTaskError as err:
            # A port picked free can be taken (by another process, or a Ray worker) before the proxy binds
            # it; Serve keeps the port it started with, so start it again on another.
            taken = any(m in str(err) for m in ("Failed to bind", "Address already in use"))  # Python proxy, HAProxy
            if cfg.serving.port or not taken or attempt >= attempts:
                raise
            serve.shutdown()


def _picked_port_taken(err: BaseException) -> bool:
    """Whether a start failed on a port in use while streamfit picked some of Serve's side ports."""
    taken = any(m in str(err) for m in ("Failed to bind", "Address already in use"))
    return taken and bool(os.environ.get(PICKED_PORTS))


@dataclass
class Pipeline:
    """Handles to every running part of one streamfit deployment."""

    cfg: Config
    registry: Registry
    controller: Any
    shards: list[Any]
    trainer: Any
    coordinator: Any
    port: int
    monitor: Any = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.cfg.serving.host in ("0.0.0.0", "") else self.cfg.serving.host
        return f"http://{host}:{self.port}"

    @classmethod
    def start(cls, cfg: Config, address: str | None = None, deploy_serve: bool = True) -> "Pipeline":
        """Start every plane on Ray and deploy the Serve app (unless another owner deploys it: ``serve deploy``,
        KubeRay's ``serveConfigV2``); returns when HTTP answers."""
        for attempt in range(1, 4):
            try:
                return cls._start_once(cfg, address, deploy_serve)
            except BaseException as err:
                # A side port streamfit picked (HAProxy's stats or metrics, the fallback proxy's) can be taken
                # before Serve binds it; those are fixed for a Ray session, so a local Ray starts again on
                # fresh picks. A cluster's Ray, or ports the user set, are not ours to change.
                if address is not None or attempt == 3 or not _picked_port_taken(err):
                    raise

    @classmethod
    def _start_once(cls, cfg: Config, address: str | None, deploy_serve: bool) -> "Pipeline":
        """One start of every plane (``start`` retries it when a picked port was taken)."""
        start_ray(cfg, address)
        try:
            check_shared_storage(cfg)
            cfg = cfg.model_copy(deep=True)
            cfg.registry.uri = absolute_uri(cfg.registry.uri)
            cfg.checkpoints.uri = absolute_uri(cfg.checkpoints.uri)
            registry_uri = cfg.registry.uri
            registry = Registry(registry_uri)
            controller = RolloutControllerActor.options(
                name=CONTROLLER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", resources=ON_HEAD
            ).remote(registry_uri, cfg.serving.flip_timeout_s, cfg.rollout.model_dump())
            # The trainer's window and policy, and the monitor's reference, live beside the checkpoints: a
            # restarted actor (or run) resumes from them; with checkpoints off they start empty.
            state_root = cfg.checkpoints.uri.rstrip("/") if cfg.checkpoints.enabled else None
            monitor = MonitorActor.options(name=MONITOR_NAME, namespace=NAMESPACE, get_if_exists=True,
                                           resources=ON_HEAD).remote(
                cfg.monitor.model_dump(), registry_uri, cfg.feature_names(), [f.name for f in cfg.features.fields],
                state_uri=f"{state_root}/monitor" if state_root else None, model=cfg.model.model_dump(),
                planes=PLANE_NAMES)  # a restarted monitor finds them again by name
            trainer = TrainerActor.options(name=TRAINER_NAME, namespace=NAMESPACE, num_cpus=cfg.trainer.num_cpus,
                                           resources=ON_HEAD).remote(
                cfg.trainer, cfg.feature_names(), registry_uri, CONTROLLER_NAME, NAMESPACE,
                cfg.schema_hash(), f"{cfg.checkpoints.uri.rstrip('/')}/ray-train",
                state_uri=f"{state_root}/trainer" if state_root else None,
                model=cfg.model, categorical=cfg.features.categorical_columns(cfg.model),
            )
            shards, coordinator = start_data_plane(cfg, trainer, monitor)
            monitor.attach.remote(coordinator=coordinator, controller=controller, trainer=trainer)
            port = start_serving(cfg, registry_uri) if deploy_serve else (cfg.serving.port or free_port())
            ray.get(controller.status.remote())
        except BaseException:
            if address is None:
                ray.shutdown()  # a half-started local Ray must not outlive the failed start
            raise
        return cls(cfg, registry, controller, shards, trainer, coordinator, port, monitor)

    def run_stream(self, duration_s: float | None = None) -> Any:
        """Start the coordinator loop; returns its ObjectRef (resolves to final stats)."""
        return self.coordinator.run.remote(duration_s)

    def stats(self) -> dict[str, Any]:
        """One snapshot of every plane's figures."""
        coord, trainer, traffic = ray.get(
            [self.coordinator.stats.remote(), self.trainer.stats.remote(), self.controller.status.remote()]
        )
        accuracy, drift, fresh = ray.get([self.monitor.per_version.remote(), self.monitor.drift.remote(),
                                          self.monitor.freshness.remote()]) \
            if self.monitor is not None else ({}, {}, {})
        return {"coordinator": coord, "trainer": trainer, "traffic": traffic, "live_accuracy": accuracy,
                "drift": drift, "freshness": fresh}

    def stop(self, shutdown_ray: bool = True) -> None:
        """Stop the stream; then shut the local Ray down, or on a shared cluster delete what we started."""
        try:
            ray.get(self.coordinator.stop.remote(), timeout=10)
        except Exception:
            pass
        if shutdown_ray:
            ray.shutdown()  # takes Serve and every actor with it, far faster than serve.shutdown()
            return
        serve.delete(APP_NAME)
        for actor in (self.controller, self.coordinator, self.trainer, self.monitor, *self.shards):
            ray.kill(actor)
