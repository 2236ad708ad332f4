"""The pipeline on several Ray nodes (``ray.cluster_utils.Cluster``: a head and two workers on this
machine), registry and checkpoints on a real S3 endpoint (moto_server on 127.0.0.1).

A worker node holding shards is removed mid-stream: its shards restart on the remaining nodes,
reload the last checkpoint from S3 and are replayed to exactly the feature state and training rows
of a run without the failure, while Serve keeps answering /predict (and /features) over HTTP.

The node is crashed, not drained (its raylet and workers are SIGKILLed): Ray notices through its
node health checks and restarts the lost shards (``max_restarts=-1``) on the surviving worker.

Placement: the head has no CPUs (``num_cpus: 0``, as often done for KubeRay heads), so the shard
actors (0.5 CPU each, ``SPREAD``) can only go to the two workers, one each. Actors that ask for no
resources go to a random node: the test pins its own (row sink, rollout controller) to the head,
but the coordinator (``max_restarts=0``) and the Router replica are placed by start_data_plane and
Serve; the victim is a worker holding a shard and neither of them (see ``_start_plane_with_a_victim``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd
import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from s3_server import S3Server, s3_server
from test_e2e_rollout import Data
from test_ingest_recovery import RowSink, _assert_same_state

from streamfit.config import Config, config_from_dict
from streamfit.errors import ConfigError
from streamfit.registry import Registry
from streamfit.retry import retrying
from streamfit.schema import shard_of
from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.names import shard_name
from streamfit.names import CONTROLLER_NAME
from streamfit.actors.rollout.controller import RolloutControllerActor
from streamfit.scripts.load import RandomRows, RequestLoop
from streamfit.scripts.pipeline import (NAMESPACE, check_shared_storage, free_port, serve_environment,
                                        start_data_plane, wait_until)
from streamfit.names import APP_NAME
from streamfit.serve.app import ADMIN_TOKEN_ENV, build_router

NUM_SHARDS = 2
MAX_EVENTS = 30_000


@dataclass
class MultiNode:
    cluster: Cluster
    s3: S3Server
    head_id: str
    workers: dict[str, Any]  # node id -> ray._private.node.Node
    port: int
    labels: dict[str, str] = field(default_factory=dict)  # node id -> head / worker0 / worker1


@pytest.fixture(scope="module")
def multinode():
    """moto_server, then a head (0 CPUs) and two workers (1 CPU each), then the driver."""
    # A private Ray temp dir: Cluster() records its address in <tmp>/ray/ray_current_cluster, and a
    # plain ray.init() elsewhere on this machine (other test runs) would otherwise connect to it.
    ray_tmp = tempfile.mkdtemp(prefix="sfmn-", dir="/tmp")
    port = free_port()
    env = {"RAY_TMPDIR": ray_tmp, ADMIN_TOKEN_ENV: os.environ.get(ADMIN_TOKEN_ENV) or "multinode-token",
           **serve_environment(fast_ingress=True)}
    saved = {k: os.environ.get(k) for k in env}
    cluster = None
    try:
        # S3 first: its dummy credentials must be in the environment the Ray nodes inherit.
        with s3_server() as s3:
            os.environ.update(env)
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
            workers = {}
            for _ in range(2):
                node = cluster.add_node(num_cpus=1)
                workers[node.node_id] = node
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
            labels = {cluster.head_node.node_id: "head", **{n: f"worker{i}" for i, n in enumerate(workers)}}
            yield MultiNode(cluster, s3, cluster.head_node.node_id, workers, port, labels)
            ray.shutdown()  # takes Serve with the cluster below; serve.shutdown() waits up to 30 s here
    finally:
        if cluster is not None:
            ray.shutdown()
            cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _cfg(mn: MultiNode, run: str, **stream: Any) -> Config:
    return config_from_dict({
        "stream": {"entities": 300, "batch_size": 500, "label_delay_events": 400, "max_events": MAX_EVENTS,
                   "max_events_per_s": None, **stream},
        "shards": {"num_shards": NUM_SHARDS, "num_cpus": 0.5},
        "checkpoints": {"uri": mn.s3.uri(f"{run}/checkpoints"), "interval_s": 1.0},
        "registry": {"uri": mn.s3.uri(f"{run}/registry")},
        "serving": {"host": "127.0.0.1", "port": mn.port, "fast_ingress": True},
        "rollout": {"mode": "flip", "bake_s": 1.0, "min_requests": 0},
    })


def _alive_actors() -> list[dict[str, Any]]:
    return [a for a in ray._private.state.actors().values() if a["State"] == "ALIVE"]


def _placement() -> dict[str, str]:
    """Where each actor of interest runs: name -> node id."""
    out = {}
    for a in _alive_actors():
        name, cls = a["Name"], a["ActorClassName"]
        if name.startswith("streamfit-shard-") or name == CONTROLLER_NAME:
            out[name] = a["Address"]["NodeID"]
        elif cls in ("CoordinatorActor", "RowSink"):
            out[cls] = a["Address"]["NodeID"]
        elif "Router" in name and "SERVE_REPLICA" in name:
            out.setdefault("Router", a["Address"]["NodeID"])
            out[name] = a["Address"]["NodeID"]
    return out


def _names_free() -> bool:
    for i in range(NUM_SHARDS):
        try:
            ray.get_actor(shard_name(i), namespace=NAMESPACE)
            return False
        except ValueError:
            pass
    return True


def _collect(shards, coord, sink, ref, timeout_s: float = 180):
    stats = ray.get(ref, timeout=timeout_s)
    snaps = ray.get([s.snapshot.remote() for s in shards], timeout=60)
    shard_stats = ray.get([s.stats.remote() for s in shards], timeout=60)
    rows = ray.get(sink.all_rows.remote(), timeout=60)
    return stats, snaps, shard_stats, rows


def _short(node_id: str, mn: MultiNode) -> str:
    return mn.labels.get(node_id, node_id[:8])


def _start_plane_with_a_victim(mn: MultiNode, cfg: Config, router_node: str, attempts: int = 8):
    """Start the data plane (start_data_plane: shards SPREAD over the workers) until some worker holds a
    shard but neither the coordinator nor the Router replica.

    Ray places actors that ask for no resources (the coordinator, ``num_cpus=0``) on a random node, and
    nothing in start_data_plane pins the coordinator; it has ``max_restarts=0``, so a node loss that takes
    it is a pipeline restart (resume from the checkpoint), not the shard recovery tested here.
    """
    for attempt in range(1, attempts + 1):
        sink = RowSink.options(scheduling_strategy=NodeAffinitySchedulingStrategy(mn.head_id, soft=False)).remote()
        shards, coord = start_data_plane(cfg, sink)
        ray.get([coord.stats.remote(), sink.all_rows.remote(), *[s.stats.remote() for s in shards]], timeout=60)
        where = _placement()
        holders = {where[shard_name(i)] for i in range(NUM_SHARDS)}
        victims = [n for n in mn.workers if n in holders and n not in (where["CoordinatorActor"], router_node)]
        if victims:
            return sink, shards, coord, victims[0], attempt
        for a in (coord, sink, *shards):
            ray.kill(a, no_restart=True)
        assert wait_until(_names_free, timeout_s=30)
    raise AssertionError(f"no worker without the coordinator or the Router after {attempts} attempts")


class FeatureLoop(RequestLoop):
    """GET /features/{entity} for entities of every shard, counted like RequestLoop's /predict."""

    def __init__(self, url: str, entities: list[str], rate: float, timeout_s: float) -> None:
        super().__init__(url, lambda: None, rate=rate, timeout_s=timeout_s)
        self.base = url.rstrip("/")
        self.entities = entities
        self.i = 0
        self.latencies: list[float] = []
        self.unavailable = 0

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                entity = self.entities[self.i % len(self.entities)]
                self.i += 1
                t0 = time.perf_counter()
                try:
                    r = client.get(f"{self.base}/features/{entity}")
                    if r.status_code in (200, 404):  # 404: not seen yet by its shard
                        self.served += 1
                        self.latencies.append(time.perf_counter() - t0)
                    elif r.status_code == 503 and "Retry-After" in r.headers:
                        # The owning shard is restarting on another node: the Router says so within
                        # serving.actor_timeout_s instead of hanging, and a client retries.
                        self.unavailable += 1
                    else:
                        self._fail(f"{entity}: HTTP {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as err:
                    self._fail(f"{entity}: {type(err).__name__}: {err}")
                self._stop.wait(1.0 / self.rate)


def test_check_shared_storage_refuses_a_node_local_path_on_the_cluster(multinode, tmp_path):
    alive = len([n for n in ray.nodes() if n["Alive"]])
    assert alive == 1 + len(multinode.workers) >= 2
    good = _cfg(multinode, "shared-check")
    check_shared_storage(good)  # S3 URIs: accepted
    local_registry = good.model_copy(deep=True)
    local_registry.registry.uri = str(tmp_path / "registry")
    with pytest.raises(ConfigError, match=r"registry\.uri") as err:
        check_shared_storage(local_registry)
    assert str(tmp_path / "registry") in str(err.value) and f"{alive} nodes" in str(err.value)
    local_ckpt = good.model_copy(deep=True)
    local_ckpt.checkpoints.uri = f"file://{tmp_path}/ckpt"
    with pytest.raises(ConfigError, match=r"checkpoints\.uri"):
        check_shared_storage(local_ckpt)


def test_worker_node_removed_mid_stream_shards_recover_on_other_nodes_and_serving_answers(multinode):
    mn = multinode
    timings: dict[str, float] = {}
    t = time.time()

    # -- reference: the same stream on the same cluster, no failure, as fast as it goes ----------------
    ref_cfg = _cfg(mn, "reference")
    sink = RowSink.options(scheduling_strategy=NodeAffinitySchedulingStrategy(mn.head_id, soft=False)).remote()
    shards, coord = start_data_plane(ref_cfg, sink)
    base_stats, base_snaps, _, base_rows = _collect(shards, coord, sink, coord.run.remote(None))
    for a in (coord, sink, *shards):
        ray.kill(a, no_restart=True)
    timings["reference_run_s"] = time.time() - t
    assert base_stats["checkpoints"] >= 1 and len(base_rows) > 10_000, base_stats
    assert wait_until(_names_free, timeout_s=30), "reference shards still registered"

    # -- serving: the rollout controller on the head, the Router app, a first model live ------------------
    t = time.time()
    cfg = _cfg(mn, "failure", max_events_per_s=3000)
    check_shared_storage(cfg)
    controller = RolloutControllerActor.options(
        name=CONTROLLER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        scheduling_strategy=NodeAffinitySchedulingStrategy(mn.head_id, soft=False),
    ).remote(cfg.registry.uri, cfg.serving.flip_timeout_s, cfg.rollout.model_dump())
    ray.get(controller.status.remote())
    # One proxy, on the head: every node of this cluster has the same IP, so proxies on the workers would
    # all want the same port.
    # serve.start waits a fixed 60 s for the proxy; a loaded machine can miss it, and asking again is safe.
    retrying(serve.start, proxy_location="HeadOnly", http_options={"host": cfg.serving.host, "port": mn.port},
             on=(ray.exceptions.GetTimeoutError,), attempts=4, first_wait_s=1.0)
    serve.run(build_router(cfg, cfg.registry.uri, NAMESPACE), name=APP_NAME, route_prefix="/")
    data = Data(cfg.features.feature_names())
    v1 = data.register(Registry(cfg.registry.uri), cfg.features.schema_hash(), seed=1)
    ray.get(controller.start_rollout.remote(version=v1, mode="flip"))
    url = f"http://127.0.0.1:{mn.port}"
    row = {n: 0.5 for n in cfg.features.feature_names()}

    def answers_v1() -> bool:
        try:
            r = httpx.post(f"{url}/predict", json={"features": row}, timeout=5)
            return r.status_code == 200 and r.json()["model_version"] == v1
        except httpx.HTTPError:
            return False

    assert wait_until(answers_v1, timeout_s=60, interval_s=0.5), "the first version never answered"
    timings["serve_up_s"] = time.time() - t

    # -- the failure run ---------------------------------------------------------------------------
    t = time.time()
    router_node = _placement()["Router"]
    sink, shards, coord, victim_id, attempts = _start_plane_with_a_victim(mn, cfg, router_node)
    timings["plane_attempts"] = attempts
    ref = coord.run.remote(None)
    # Entities owned by each shard, for /features lookups that cross the failure.
    names = [f"u{i}" for i in range(300)]
    owner = shard_of(pd.Series(names, dtype=object).values, NUM_SHARDS)
    probe = [n for s in range(NUM_SHARDS) for n in [names[j] for j in range(300) if owner[j] == s][:3]]
    predict_loop = RequestLoop(url, RandomRows(cfg.features.feature_names()), rate=20).start()
    # A lookup of an entity on a lost shard answers 503 + Retry-After (serving.actor_timeout_s) until the shard
    # is back (Ray's node-failure detection plus the restart from S3); the loop retries, as a client would.
    feature_loop = FeatureLoop(url, probe, rate=5, timeout_s=45).start()
    try:
        assert wait_until(lambda: ray.get(coord.stats.remote()).get("checkpoints", 0) >= 2, timeout_s=60), \
            "no checkpoint on S3 within 60 s"
        before = _placement()
        shard_nodes = {shard_name(i): before.get(shard_name(i)) for i in range(NUM_SHARDS)}
        assert set(shard_nodes.values()) == set(mn.workers), \
            f"shards should run on both workers: { {k: _short(v, mn) for k, v in before.items()} }"
        assert before["RowSink"] == before[CONTROLLER_NAME] == mn.head_id
        assert victim_id not in (before["CoordinatorActor"], before["Router"])
        lost = sorted(s for s, n in shard_nodes.items() if n == victim_id)
        assert lost, "the victim holds no shard"
        # Remove the node once its shards have applied (and the coordinator collected) batches past the last
        # complete checkpoint: that state exists only in the shards' memory, so it must be replayed.
        store = CheckpointStore(cfg.checkpoints.uri)
        lost_handles = [shards[int(s.rsplit("-", 1)[1])] for s in lost]
        at_removal: dict[str, Any] = {}

        def past_checkpoint() -> bool:
            manifest = store.latest_manifest()
            applied = min(st["last_batch_id"] for st in ray.get([h.stats.remote() for h in lost_handles]))
            at_removal.update(checkpoint_batch=manifest and manifest["batch_id"], shard_applied=applied)
            return manifest is not None and applied - manifest["batch_id"] >= 3

        assert wait_until(past_checkpoint, timeout_s=30, interval_s=0.05), f"no batches past a checkpoint: {at_removal}"
        at_removal["coordinator_batch"] = ray.get(coord.stats.remote())["batch_id"]
        assert not ray.wait([ref], timeout=0)[0], "stream ended before the removal: slow it down"
        t_remove = time.time()
        # A crash, not a drain: the node's raylet and workers are SIGKILLed; Ray learns of it through its
        # health checks (defaults: about 10-15 s here), then restarts the lost shards elsewhere.
        mn.cluster.remove_node(mn.workers.pop(victim_id), allow_graceful=False)
        timings["remove_node_s"] = time.time() - t_remove
        stats = ray.get(ref, timeout=120)
        timings["stream_end_after_removal_s"] = time.time() - t_remove
        # Serving keeps answering after the stream, too.
        time.sleep(1.0)
    finally:
        predict = predict_loop.stop()
        lookups = feature_loop.stop()
    timings["failure_run_s"] = time.time() - t
    after = _placement()
    snaps = ray.get([s.snapshot.remote() for s in shards], timeout=60)
    shard_stats = ray.get([s.stats.remote() for s in shards], timeout=60)
    rows = ray.get(sink.all_rows.remote(), timeout=60)

    report = {
        "before": {k: _short(v, mn) for k, v in before.items()},
        "victim": _short(victim_id, mn), "lost": lost,
        "after": {k: _short(v, mn) for k, v in after.items()},
        "at_removal": at_removal,
        "coordinator": {k: stats.get(k) for k in ("events", "checkpoints", "shard_recoveries", "replayed_batches",
                                                  "batch_id")},
        "restored_from": [s["restored_from"] for s in shard_stats],
        "predict": predict, "features": {k: lookups[k] for k in ("served", "failed", "failures")},
        "features_max_latency_s": round(max(feature_loop.latencies, default=0.0), 3),
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }
    print("\nMULTINODE", report)

    # The shards the removed node held restarted on the remaining nodes, from the S3 checkpoint.
    for s in lost:
        assert after.get(s) in set(mn.workers) | {mn.head_id}, report
        assert shard_stats[int(s.rsplit("-", 1)[1])]["restored_from"] is not None, report
    assert victim_id not in after.values(), report
    # A crashed node's worker can outlive its raylet for a moment and answer one more checkpoint; only a
    # shard restored from a checkpoint older than what it had applied at the removal needs a replay.
    needs_replay = [s for s in lost
                    if shard_stats[int(s.rsplit("-", 1)[1])]["restored_from"] < at_removal["shard_applied"]]
    assert stats.get("shard_recoveries", 0) >= len(needs_replay), report
    if needs_replay:
        assert stats.get("replayed_batches", 0) >= 1, report
    # Final state and training rows equal those of the run without the failure.
    assert stats["events"] == base_stats["events"], report
    for a, b in zip(snaps, base_snaps):
        _assert_same_state(a, b)
    assert rows["event_id"].is_unique
    assert len(rows) == len(base_rows)
    pd.testing.assert_frame_equal(rows.sort_values("event_id").reset_index(drop=True),
                                  base_rows.sort_values("event_id").reset_index(drop=True))
    # Serving kept answering throughout.
    assert predict["served"] > 50 and predict["failed"] == 0, report
    assert set(predict["versions"]) == {v1}, report
    assert lookups["served"] > 10 and lookups["failed"] == 0, report
    for a in (coord, sink, *shards):
        ray.kill(a, no_restart=True)
