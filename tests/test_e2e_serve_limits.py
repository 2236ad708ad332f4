"""Timeouts, load shedding and readiness on a real local Ray + Serve over HTTP (issue 13, item 14), and the
rollout controller's order: aliases written, then the rollout shown finished.

(a) The real rollout controller and a Router (no data plane): ``/readyz`` is 503 until a version is live;
    the aliases are right the moment ``/traffic`` shows a rollout finished (read at once, no waiting); a
    replica started while a version is live holds it before Serve sends it a request.
(b) A controller that never answers ``status`` (held on a gate), no monitor, no ingest log: each is a
    503 with ``Retry-After`` naming it, within the configured timeout — never a hang, never a 500.
(c) Serve's queue limit: one request held in the only replica slot, one queued; a further one is shed
    by Serve with 503 + ``Retry-After`` (no timing: the held request is seen at the controller first)."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import httpx
import numpy as np
import pytest
import ray
import xgboost as xgb
from ray import serve

from streamfit.actors.rollout import RolloutControllerActor
from streamfit.config import Config, config_from_dict
from streamfit.names import APP_NAME, CONTROLLER_NAME
from streamfit.registry import Registry
from streamfit.scripts.pipeline import free_port, serve_environment, wait_until
from streamfit.serve.app import build_router, http_options

TOKEN = "e2e-limits-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REAL, FAKE = "limits-real", "limits-fake"  # the namespaces of the real controller and of the gated one
FINISHED = ("promoted", "rolled_back", "aborted", "superseded", "failed")
BOUND_S = 120.0  # generous bounds: only a hang reaches them


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    saved = os.environ.get("STREAMFIT_ADMIN_TOKEN")
    os.environ["STREAMFIT_ADMIN_TOKEN"] = TOKEN  # the Router replicas inherit it from the Ray started here
    os.environ.update(serve_environment(True))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    p = free_port()
    serve.start(http_options=http_options(Config().serving, p))
    yield p
    ray.shutdown()
    os.environ.pop("STREAMFIT_ADMIN_TOKEN", None) if saved is None else os.environ.__setitem__("STREAMFIT_ADMIN_TOKEN", saved)


def _config(root: Any, **serving: Any) -> Config:
    return config_from_dict({"stream": {"source": "http"}, "registry": {"uri": str(root / "registry")},
                             "rollout": {"min_requests": 0, "shadow_judging": False},
                             "auth": {"open_scopes": ["read", "ingest"]},
                             "serving": {"replicas": 1, **serving}})


def _deploy(cfg: Config, namespace: str) -> None:
    serve.run(build_router(cfg, cfg.registry.uri, namespace), name=APP_NAME, route_prefix="/")


def _register(registry: Registry, cfg: Config, seed: int) -> int:
    names = cfg.features.feature_names()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, len(names)))
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                    xgb.DMatrix(x, label=(x[:, 0] > 0).astype(float), feature_names=names), 3)
    return registry.register(bst, {"features": names, "schema_hash": cfg.features.schema_hash(), "trigger": "test",
                                   "verify": {"x": x[:8].tolist(), "p": bst.inplace_predict(x[:8]).tolist()}})


def _roll_out(c: httpx.Client, version: int, mode: str) -> dict[str, Any]:
    r = c.post("/rollout", json={"version": version, "mode": mode}, headers=AUTH)
    assert r.status_code == 200, r.text

    def finished() -> bool:
        rollout = c.get("/traffic").json().get("rollout") or {}
        return rollout.get("version") == version and rollout.get("phase") in FINISHED

    assert wait_until(finished, timeout_s=BOUND_S)
    return c.get("/traffic").json()


def test_readiness_and_the_aliases_of_a_finished_rollout_with_the_real_controller(port, tmp_path):
    cfg = _config(tmp_path)
    registry = Registry(cfg.registry.uri)
    controller = RolloutControllerActor.options(name=CONTROLLER_NAME, namespace=REAL).remote(
        cfg.registry.uri, cfg.serving.flip_timeout_s, cfg.rollout.model_dump())
    ray.get(controller.status.remote())
    _deploy(cfg, REAL)
    row = {"features": dict.fromkeys(cfg.features.feature_names(), 0.5)}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=BOUND_S) as c:
        r = c.get("/readyz")  # nothing registered yet: alive, not ready
        assert r.status_code == 503 and r.headers["Retry-After"] == "1" and not r.json()["ready"], r.text
        assert c.get("/healthz").status_code == 200
        assert c.post("/predict", json=row).status_code == 503

        v1 = _register(registry, cfg, seed=1)
        traffic = _roll_out(c, v1, "canary")  # the first version goes live without a canary
        assert traffic["rollout"]["phase"] == "promoted"
        assert registry.aliases() == {"live": v1}  # read at once: the controller wrote it before showing it
        assert c.get("/readyz").status_code == 200

        v2 = _register(registry, cfg, seed=2)
        traffic = _roll_out(c, v2, "flip")
        assert traffic["rollout"]["phase"] == "promoted"
        assert registry.aliases() == {"live": v2, "previous": v1}  # again without waiting

        # A replica started while v2 is live: Serve routes to it only once it holds v2.
        _deploy(_config(tmp_path, actor_timeout_s=9.0), REAL)  # other arguments: a new replica
        r = c.post("/predict", json=row)
        assert r.status_code == 200 and r.json()["model_version"] == v2, r.text
        held = {s: v for s, v in traffic["slots"].items() if v is not None}  # v1 stays loaded in the idle slot
        assert c.get("/readyz").json() == {"ready": True, "slots": held, "revision": traffic["revision"]}
    serve.delete(APP_NAME)
    ray.kill(controller)


@ray.remote(num_cpus=0)
class GatedController:
    """A controller whose ``status`` waits for ``release`` (a controller that stopped answering)."""

    STATE = {"slots": {"blue": None, "green": None}, "weights": {"blue": 100, "green": 0}, "revision": 0,
             "live_slot": "blue", "flips": 0}

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = 0

    async def desired(self, after_revision: int = -1, timeout_s: float = 1.0) -> dict[str, Any]:
        if after_revision >= 0:
            await asyncio.sleep(timeout_s)
        return self.STATE

    def report(self, replica_id: str, report: dict[str, Any]) -> None:
        pass

    async def status(self) -> dict[str, Any]:
        self.entered += 1
        await self.gate.wait()
        return self.STATE

    def status_calls(self) -> int:
        return self.entered

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def gated(port):
    controller = GatedController.options(name=CONTROLLER_NAME, namespace=FAKE).remote()
    ray.get(controller.status_calls.remote())
    yield controller
    ray.get(controller.release.remote())
    serve.delete(APP_NAME)
    ray.kill(controller)


def test_actors_that_cannot_answer_are_503s_naming_them(port, gated, tmp_path):
    _deploy(_config(tmp_path, actor_timeout_s=2.0), FAKE)
    event = {"events": [{"event_id": "e1", "entity": "a", "event_time": time.time(), "x0": 1.0, "x1": 0.0,
                         "x2": 0.0}]}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=BOUND_S) as c:
        for method, path, body, target in (("GET", "/traffic", None, "controller"),  # silent (held)
                                           ("GET", "/monitor", None, "monitor"),  # not running
                                           ("POST", "/ingest", event, "ingest")):  # not running
            r = c.request(method, path, json=body)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["Retry-After"] == "1" and r.headers["X-Streamfit-Unavailable"] == target, r.headers
            assert path != "/traffic" or "no answer within 2 s" in r.json()["detail"]
        assert c.get("/healthz").json()["unavailable"] == {"controller": 1, "monitor": 1, "ingest": 1}


def test_a_request_over_the_queue_limit_is_shed_with_503_and_retry_after(port, gated, tmp_path):
    # The held request waits at the gate far longer than it takes to send the others (no actor timeout first).
    _deploy(_config(tmp_path, max_ongoing_requests=1, max_queued_requests=1, actor_timeout_s=100.0), FAKE)
    url = f"http://127.0.0.1:{port}/traffic"
    with ThreadPoolExecutor(3) as pool:
        held = pool.submit(httpx.get, url, timeout=BOUND_S)  # takes the replica's only slot, waits at the gate
        assert wait_until(lambda: ray.get(gated.status_calls.remote()) >= 1, timeout_s=BOUND_S)
        # One of these two waits in the queue (limit 1); the other is shed at once, whichever comes second.
        others = [pool.submit(httpx.get, url, timeout=BOUND_S) for _ in range(2)]
        done, _ = wait(others, timeout=BOUND_S, return_when=FIRST_COMPLETED)
        assert done, "no request was shed"
        shed = next(iter(done)).result()
        assert shed.status_code == 503 and shed.headers.get("Retry-After") == "1", (shed.status_code, shed.text)
        ray.get(gated.release.remote())
        assert held.result(timeout=BOUND_S).status_code == 200
        codes = sorted(f.result(timeout=BOUND_S).status_code for f in others)
        assert codes in ([200, 503], [503, 503]), codes

