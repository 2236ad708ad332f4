"""Issue 13's fault test, on a real local Ray + Serve over real HTTP: while a client pushes events to
``/ingest`` (retrying until each batch is acknowledged) and another scores raw events on ``/predict``, the
ingest buffer, the coordinator, a shard, the trainer, the monitor and the rollout controller are killed in
turn, and storage errors are injected into the write-ahead log and the checkpoints (a store's temporary
directory replaced by a file on the real disk). Afterwards the rows the shards applied are the acknowledged
ones, each exactly once, and the split is the operator's last command.

The scenario runs once (module fixture); each test checks one promise of it. The first test needs no Ray: it
shows, with the plain objects, why a restarted coordinator loses acknowledged rows of an HTTP source.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

import httpx
import numpy as np
import pandas as pd
import pytest
import ray
import xgboost as xgb

from fault_clients import BrokenDirectory, IngestClient, ScoringClient
from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.coordinator_core import Coordinator
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.ingest import HttpSource, IngestLog
from streamfit.actors.stream.local_runner import LocalShard
from streamfit.actors.stream.windows import to_us
from streamfit.config import FeaturesConfig, config_from_dict
from streamfit.names import INGEST_NAME, NAMESPACE
from streamfit.schema import hash_keys
from streamfit.scripts.pipeline import Pipeline, wait_until

TOKEN = "fault-test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOUND_S = 240.0  # how long an actor may take to answer again on a loaded 2-core machine
# The HTTP source's default batch size: the coordinator reads what has arrived, so its batches are partial.
CONFIG = {"stream": {"source": "http"}, "serving": {"port": 0},
          "shards": {"num_shards": 2, "num_cpus": 0}}
OPERATOR_SPLITS = ({"blue": 80, "green": 20}, {"blue": 30, "green": 70})  # the last one must stand at the end


def _events(first: int, n: int, t0: float) -> pd.DataFrame:
    ids = range(first, first + n)
    return pd.DataFrame({"kind": "event", "event_id": [f"e{i}" for i in ids], "entity": [f"u{i % 7}" for i in ids],
                         "event_time": [t0 + i * 0.01 for i in ids], "x0": 1.0, "x1": 0.0, "x2": 0.0})


class Yielding:
    """A shard port whose answers come a moment later, as over Ray: a loop of calls can then be timed out."""

    def __init__(self, shard: LocalShard) -> None:
        self.shard = shard

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.shard, name)

        async def later(*args: Any) -> Any:
            await asyncio.sleep(0.001)
            return await call(*args)

        return later


class Plane:
    """An ingest log, two shards that outlive the coordinator, and coordinators made over them (no Ray)."""

    def __init__(self, root: str) -> None:
        self.root, self.log = root, IngestLog(f"{root}/ingest")
        self.shards = [Yielding(LocalShard(FeatureShard(FeaturesConfig(), i), CheckpointStore(root))) for i in range(2)]

    def coordinator(self) -> Coordinator:
        """A coordinator as a (re)started actor builds it: resuming from the last checkpoint, if any."""
        return Coordinator(HttpSource(self.log, 100), self.shards, None, lateness_s=5.0, max_in_flight=0,
                           store=CheckpointStore(self.root))

    async def checkpointed_then(self, *appends: int) -> None:
        """30 rows checkpointed as batch 1, then one batch applied per append of that many rows."""
        first = self.coordinator()
        self.log.append(_events(0, 30, 1e9))
        await first.step()
        await first.checkpoint()
        for n in appends:
            self.log.append(_events(self.log.stats()["next_position"], n, 1e9))
            await first.step()


def test_a_coordinator_restarted_over_http_ingest_applies_every_acknowledged_row(tmp_path):
    """No Ray: the coordinator restarts from its checkpoint while the shards keep the batches they applied
    after it. The HTTP source's batches are whatever the log holds at each read, so batch 2 re-read after the
    restart holds more rows than the batch 2 the shards applied; they skip it by its id, and its extra rows
    are never applied."""
    plane = Plane(str(tmp_path))

    async def scenario() -> int:
        await plane.checkpointed_then(30)  # batch 2 = rows [30, 60), applied after the checkpoint
        plane.log.append(_events(60, 30, 1e9))  # acknowledged, not read yet
        restarted = plane.coordinator()  # resumes at batch 1, position 30
        while restarted.position < plane.log.stats()["next_position"]:
            await restarted.step()
        return sum(s.shard.shard.stats()["events"] for s in plane.shards)

    assert asyncio.run(scenario()) == 90


def test_a_restarted_coordinator_checkpoints_while_its_shards_are_ahead_of_it(tmp_path):
    """No Ray: the shards applied batches 2 and 3 after the checkpoint; the restarted coordinator re-reads both
    as one batch 2, and its next checkpoint asks them for a snapshot at batch 2. They answer None (they are at
    3), ``_recover`` has nothing after 3 to send, and the checkpoint asks again, forever: the stream stops."""
    plane = Plane(str(tmp_path))

    async def scenario() -> None:
        await plane.checkpointed_then(10, 10)
        restarted = plane.coordinator()
        await restarted.step()  # rows [30, 50) as batch 2
        await asyncio.wait_for(restarted.checkpoint(), 60)  # ms when it works; never when it loops

    asyncio.run(scenario())


# -- the scenario on Ray ------------------------------------------------------------------------------


def _register(p: Pipeline, seed: int) -> int:
    """A small model over the serving features, registered with its verification sample."""
    names = p.cfg.features.feature_names()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1000, len(names)))
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                    xgb.DMatrix(x, label=(x[:, 0] > 0).astype(float), feature_names=names), 10)
    return p.registry.register(bst, {"features": names, "schema_hash": p.cfg.features.schema_hash(), "trigger": "test",
                                     "verify": {"x": x[:8].tolist(), "p": bst.inplace_predict(x[:8]).tolist()}})


def _holds(check: Callable[[], Any]) -> bool:
    """Whether ``check`` answers something true (an actor restarting raises, or times out: not yet)."""
    try:
        return bool(check())
    except Exception:
        return False


def _traffic(p: Pipeline) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"{p.url}/traffic", headers=AUTH, timeout=30)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def _put_split(p: Pipeline, split: dict[str, int]) -> None:
    r = httpx.put(f"{p.url}/traffic", json=split, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text


def _rollout(p: Pipeline, **body: Any) -> None:
    r = httpx.post(f"{p.url}/rollout", json=body, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text

    def done() -> bool:
        rollout = (_traffic(p) or {}).get("rollout") or {}
        return rollout.get("version") == body["version"] and rollout.get("phase") == "promoted"

    assert wait_until(done, timeout_s=BOUND_S), _traffic(p)


class Scenario:
    """The pipeline, the clients and what each phase saw."""

    def __init__(self, p: Pipeline, ingest: IngestClient, scoring: ScoringClient) -> None:
        self.p, self.ingest, self.scoring = p, ingest, scoring
        self.ckpt = CheckpointStore(p.cfg.checkpoints.uri)
        self.notes: dict[str, Any] = {}

    def coordinator(self) -> dict[str, Any]:
        return ray.get(self.p.coordinator.stats.remote(), timeout=30)

    def buffer(self) -> dict[str, Any]:
        return ray.get(ray.get_actor(INGEST_NAME, namespace=NAMESPACE).stats.remote(), timeout=30)

    def progress(self, what: str) -> None:
        """Both clients get answers again: some acknowledged batches and some scores after this moment."""
        acked, scored = self.ingest.n_acked(), self.scoring.ok
        ok = wait_until(lambda: self.ingest.n_acked() >= acked + 2 * self.ingest.batch and self.scoring.ok > scored,
                        timeout_s=BOUND_S)
        assert ok, f"after {what}: acknowledged {self.ingest.n_acked()} (was {acked}), scored {self.scoring.ok}"
        self.phase(f"after {what}")

    def phase(self, what: str) -> None:
        """Name what happens now in whatever the clients record."""
        self.ingest.phase = self.scoring.phase = what

    def kill(self, what: str, actor: Any, back: Callable[[], bool], seen: Callable[[], Any] = lambda: None) -> None:
        """Kill ``actor`` (Ray restarts it), wait until ``back()`` holds and both clients make progress."""
        self.phase(f"killing the {what}")
        ray.kill(actor, no_restart=False)
        ok = wait_until(lambda: _holds(back), timeout_s=BOUND_S, interval_s=0.5)
        assert ok, f"the {what} did not come back: {seen()}; notes {self.notes}"
        self.progress(f"killing the {what}")

    def storage_fault(self, what: str, directory: str, bit: Callable[[], bool]) -> None:
        """Break ``directory`` until the fault has visibly failed a write (``bit``), then heal it."""
        self.phase(f"{what} storage fault")
        with BrokenDirectory(directory):
            self.notes[f"fault:{what}"] = wait_until(bit, timeout_s=BOUND_S, interval_s=0.2)
        assert self.notes[f"fault:{what}"], f"the {what} storage fault never failed a write"
        self.progress(f"the {what} storage fault")

    def drained(self) -> bool:
        """The coordinator has read everything the log holds, and every shard applied every batch sent."""
        coord, buffer = self.coordinator(), self.buffer()
        applied = [s["last_batch_id"] for s in ray.get([s.stats.remote() for s in self.p.shards], timeout=30)]
        self.notes["drain"] = {"position": coord["position"], "next_position": buffer["next_position"],
                               "batch_id": coord["batch_id"], "applied": applied}
        return coord["position"] == buffer["next_position"] and all(a == coord["batch_id"] for a in applied)


def _run(s: Scenario) -> None:
    p = s.p
    s.progress("the start")
    failures = s.ingest.refusals
    s.storage_fault("ingest write-ahead log", f"{p.cfg.checkpoints.uri}/ingest/tmp",
                    lambda: s.ingest.refusals > failures)
    ingest = ray.get_actor(INGEST_NAME, namespace=NAMESPACE)
    s.kill("ingest buffer", ingest, lambda: s.buffer()["next_position"] >= 0)
    _put_split(p, OPERATOR_SPLITS[0])

    def past_checkpoint() -> bool:  # batches applied after the last checkpoint: the restart must re-send them
        manifest, coord = s.ckpt.latest_manifest(), s.coordinator()
        return manifest is not None and coord["batch_id"] - manifest["batch_id"] >= 2

    assert wait_until(past_checkpoint, timeout_s=BOUND_S, interval_s=0.05)
    at_kill = s.coordinator()
    s.notes["coordinator_at_kill"] = {**{k: at_kill[k] for k in ("position", "batch_id")},
                                      "checkpoint": s.ckpt.latest_manifest()}
    checkpoint = s.notes["coordinator_at_kill"]["checkpoint"]["checkpoint_id"]

    def coordinator_back() -> bool:  # reading on past the kill, and checkpointing again
        coord, manifest = s.coordinator(), s.ckpt.latest_manifest()
        return coord["running"] and coord["position"] > at_kill["position"] and manifest["checkpoint_id"] > checkpoint

    s.kill("coordinator", p.coordinator, coordinator_back,
           lambda: {"coordinator": {k: s.coordinator().get(k) for k in ("position", "batch_id", "checkpoints",
                                                                       "shard_recoveries", "running")},
                    "shards_applied": [ray.get(x.stats.remote(), timeout=30)["last_batch_id"] for x in p.shards],
                    "manifest": s.ckpt.latest_manifest()})
    failed = s.coordinator().get("checkpoint_failures", 0)
    s.storage_fault("checkpoints", f"{p.cfg.checkpoints.uri}/tmp",
                    lambda: s.coordinator().get("checkpoint_failures", 0) > failed)
    newest = s.ckpt.latest_manifest()["checkpoint_id"]
    assert wait_until(lambda: s.ckpt.latest_manifest()["checkpoint_id"] > newest, timeout_s=BOUND_S)
    batch = s.coordinator()["batch_id"]
    s.kill("shard", p.shards[0], lambda: ray.get(p.shards[0].stats.remote(), timeout=30)["last_batch_id"] > batch)
    s.kill("trainer", p.trainer, lambda: ray.get(p.trainer.stats.remote(), timeout=30) is not None)
    pid = lambda _self: os.getpid()  # noqa: E731  travels by value to the actor
    monitor_pid = ray.get(p.monitor.__ray_call__.remote(pid), timeout=30)

    def monitor_back() -> bool:  # a new process (the kill is asynchronous) that found every plane again by name
        return (ray.get(p.monitor.__ray_call__.remote(pid), timeout=30) != monitor_pid
                and ray.get(p.monitor.attached.remote(), timeout=30) == ["controller", "coordinator", "trainer"])

    s.kill("monitor", p.monitor, monitor_back)
    _put_split(p, OPERATOR_SPLITS[-1])
    s.kill("controller", p.controller, lambda: _traffic(p) is not None)
    s.phase("drain")
    s.ingest.stop()
    s.scoring.stop()
    assert wait_until(s.drained, timeout_s=BOUND_S, interval_s=0.5), s.notes["drain"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    before = os.environ.get("STREAMFIT_ADMIN_TOKEN")
    os.environ["STREAMFIT_ADMIN_TOKEN"] = TOKEN
    root = tmp_path_factory.mktemp("faults")
    stores = {"registry": {"uri": str(root / "registry")}, "checkpoints": {"uri": str(root / "ckpt"), "interval_s": 1.0}}
    p = Pipeline.start(config_from_dict({**CONFIG, **stores}))
    run = p.run_stream(None)
    ingest, scoring = IngestClient(p.url, AUTH), ScoringClient(p.url, AUTH)
    try:
        _rollout(p, version=_register(p, 1))
        _rollout(p, version=_register(p, 2), mode="flip")  # both slots hold a version: any split can be set
        ingest.start()
        scoring.start()
        s = Scenario(p, ingest, scoring)
        _run(s)
        s.notes["snapshots"] = ray.get([sh.snapshot.remote() for sh in p.shards], timeout=120)
        s.notes["shard_stats"] = ray.get([sh.stats.remote() for sh in p.shards], timeout=60)
        s.notes["buffer"] = s.buffer()
        s.notes["traffic"] = _traffic(p)
        yield s
        ray.get(p.coordinator.stop.remote(), timeout=60)
        ray.get(run, timeout=120)
    finally:
        for client in (ingest, scoring):
            client.ask_to_stop()  # daemon threads: one still retrying ends with the session
        p.stop()
        if before is None:
            os.environ.pop("STREAMFIT_ADMIN_TOKEN", None)
        else:
            os.environ["STREAMFIT_ADMIN_TOKEN"] = before


def _applied(snapshots: list[dict[str, Any]]) -> pd.DataFrame:
    """Every event the shards hold in their window state: (entity key, event time in us), one row each."""
    return pd.DataFrame({"key": np.concatenate([s["events"]["keys"] for s in snapshots]),
                         "t_us": np.concatenate([s["events"]["times"] for s in snapshots])})


def test_the_rows_the_shards_applied_are_the_acknowledged_ones_each_exactly_once(scenario):
    acked = list(scenario.ingest.acked.values())
    assert len(acked) > 1000 and not scenario.ingest.given_up
    want = pd.DataFrame({"key": hash_keys(np.array([e["entity"] for e in acked], dtype=object)),
                         "t_us": to_us(np.array([e["event_time"] for e in acked])),
                         "event_id": [e["event_id"] for e in acked]})
    got = _applied(scenario.notes["snapshots"])
    twice = got[got.duplicated(keep=False)]
    merged = want.merge(got.drop_duplicates(), on=["key", "t_us"], how="outer", indicator=True)
    lost = merged[merged["_merge"] == "left_only"]["event_id"].sort_values().tolist()
    unacknowledged = int((merged["_merge"] == "right_only").sum())
    assert (lost, unacknowledged, len(twice)) == ([], 0, 0), (
        f"{len(lost)} acknowledged events never applied (first {lost[:10]}, last {lost[-5:]}); "
        f"{unacknowledged} applied but never acknowledged; {len(twice)} applied twice; notes {_brief(scenario)}")


def test_the_ingest_log_holds_exactly_the_acknowledged_rows(scenario):
    assert scenario.notes["buffer"]["next_position"] == len(scenario.ingest.acked), _brief(scenario)
    duplicates = sum(s.get("rejected:duplicate", 0) for s in scenario.notes["shard_stats"])
    assert duplicates == 0, f"the shards were sent {duplicates} rows again under new batch ids: {_brief(scenario)}"


def test_the_split_is_the_operators_last_command(scenario):
    assert scenario.notes["traffic"]["weights"] == OPERATOR_SPLITS[-1]


def test_clients_got_only_success_or_503_with_retry_after(scenario):
    for client in (scenario.ingest, scenario.scoring):
        assert client.unexpected == [], f"{dict(client.statuses)}: " + "\n".join(client.unexpected)


def _brief(s: Scenario) -> dict[str, Any]:
    keep = ("fault:ingest write-ahead log", "fault:checkpoints", "coordinator_at_kill", "drain", "buffer")
    return {**{k: s.notes.get(k) for k in keep}, "ingest": dict(s.ingest.statuses), "scoring": dict(s.scoring.statuses),
            "acknowledged": len(s.ingest.acked), "duplicates_acknowledged": s.ingest.duplicates}
