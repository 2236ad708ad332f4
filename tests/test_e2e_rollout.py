"""Blue-green serving on a real local Ray + Serve over HTTP: weighted and sticky splits, canary
rollouts promoted or rolled back by analysis, the control API and its token, and a split that
survives killing the rollout controller and a Router replica."""

from __future__ import annotations

import os
import time
from collections import Counter

import httpx
import numpy as np
import pytest
import ray
import xgboost as xgb

from streamfit.config import config_from_dict
from streamfit.registry import Registry
from streamfit.scripts.load import RequestLoop
from streamfit.scripts.pipeline import Pipeline, wait_until

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", params=["slots_in_router", "isolated_slots"])
def pipe(request, tmp_path_factory):
    os.environ["STREAMFIT_ADMIN_TOKEN"] = TOKEN
    root = tmp_path_factory.mktemp("rollout")
    cfg = config_from_dict({
        "registry": {"uri": str(root / "registry")},
        "checkpoints": {"uri": str(root / "ckpt")},
        "serving": {"port": 0, "replicas": 2, "isolated_slots": request.param == "isolated_slots"},
        # A step short of its 10 requests bakes again (up to 50 bakes) rather than failing closed: on a loaded
        # machine the load loop may fall behind, and these tests judge the analysis, not the evidence rule.
        "rollout": {"steps": [10, 50, 100], "bake_s": 2.0, "min_requests": 10, "evidence_bakes": 50,
                    "max_prediction_psi": 0.5},
    })
    p = Pipeline.start(cfg)
    yield p
    p.stop()


class Data:
    """Rows with every serving feature; the label depends on a few of them."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, len(self.names)))
        y = (x[:, 0] + 0.5 * x[:, 1] - 0.5 * x[:, 3] + rng.normal(0, 0.3, n) > 0).astype(float)
        return x, y

    def register(self, registry: Registry, schema_hash: str, seed: int, shuffle: bool = False) -> int:
        x, y = self.sample(4000, seed)
        if shuffle:
            y = np.random.default_rng(seed + 1).permutation(y)  # a deliberately worse model
        bst = xgb.train({"objective": "binary:logistic", "max_depth": 4, "nthread": 1},
                        xgb.DMatrix(x, label=y, feature_names=self.names), 40)
        sample = x[:16]
        return registry.register(bst, {"features": self.names, "schema_hash": schema_hash, "trigger": "test",
                                       "verify": {"x": sample.tolist(), "p": bst.inplace_predict(sample).tolist()}})

    def rows(self, seed: int = 0):
        x, _ = self.sample(5000, seed)
        state = {"i": 0}

        def next_row():
            state["i"] += 1
            return {n: float(v) for n, v in zip(self.names, x[state["i"] % len(x)])}, None, None

        return next_row


@pytest.fixture(scope="module")
def data(pipe):
    return Data(pipe.cfg.features.feature_names())


def _traffic(p):
    return httpx.get(f"{p.url}/traffic", timeout=60).json()


def _routing_caught_up(p) -> bool:
    """Every replica (routers, plus each slot's replicas) reported the latest revision: they route by its weights."""
    t = _traffic(p)
    revisions = t["replica_revisions"]
    n_reporting = 2 * (3 if p.cfg.serving.isolated_slots else 1)
    return len(revisions) == n_reporting and min(revisions.values()) >= t["revision"]


def _rollout(p, **body):
    r = httpx.post(f"{p.url}/rollout", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _finished(p):
    r = _traffic(p).get("rollout")
    return r is not None and r["phase"] not in ("loading", "baking", "paused")


def _split(p, n: int, headers=None, key=None, data=None) -> Counter:
    row = data.rows(7)
    seen = Counter()
    with httpx.Client(base_url=p.url, timeout=60) as c:
        for _ in range(n):
            body = {"features": row()[0]}
            if key is not None:
                body["routing_key"] = key
            r = c.post("/predict", json=body, headers=headers or {})
            assert r.status_code == 200, r.text
            seen[r.json()["slot"]] += 1
    return seen


def test_control_endpoints_refuse_requests_without_the_token(pipe):
    with httpx.Client(base_url=pipe.url, timeout=60) as c:
        for method, path, body in [("PUT", "/traffic", {"green": 10}), ("POST", "/rollout", {}),
                                   ("POST", "/rollout/promote", None), ("POST", "/rollout/abort", None),
                                   ("POST", "/rollback", None), ("POST", "/retrain", None)]:
            assert c.request(method, path, json=body).status_code == 401, path
            assert c.request(method, path, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_first_version_goes_live_and_a_good_candidate_is_promoted(pipe, data):
    schema = pipe.cfg.features.schema_hash()
    v1 = data.register(pipe.registry, schema, seed=1)
    _rollout(pipe, version=v1)
    assert wait_until(lambda: _finished(pipe), timeout_s=300)
    assert _traffic(pipe)["rollout"]["phase"] == "promoted"
    v2 = data.register(pipe.registry, schema, seed=2)
    load = RequestLoop(pipe.url, data.rows(), rate=60).start()
    try:
        _rollout(pipe, version=v2, reason="good candidate")
        assert wait_until(lambda: _finished(pipe), timeout_s=300)
    finally:
        result = load.stop()
    t = _traffic(pipe)
    assert t["rollout"]["phase"] == "promoted", (t["rollout"]["outcome"], t["rollout"]["results"])
    assert [s["weight"] for s in t["rollout"]["results"]] == [10, 50]
    assert t["slots"][t["live_slot"]] == v2 and t["weights"][t["live_slot"]] == 100
    assert t["slots"][{"blue": "green", "green": "blue"}[t["live_slot"]]] == v1  # the old version stays loaded
    assert pipe.registry.aliases()["live"] == v2 and pipe.registry.aliases()["previous"] == v1
    assert result["failed"] == 0, result["failures"]
    assert {v1, v2} <= set(result["versions"])


def test_a_worse_candidate_is_rolled_back_with_the_reason_recorded(pipe, data):
    live_before = _traffic(pipe)
    live_version = live_before["slots"][live_before["live_slot"]]
    bad = data.register(pipe.registry, pipe.cfg.features.schema_hash(), seed=3, shuffle=True)
    load = RequestLoop(pipe.url, data.rows(1), rate=60).start()
    try:
        _rollout(pipe, version=bad, reason="shuffled labels")
        assert wait_until(lambda: _finished(pipe), timeout_s=300)
    finally:
        result = load.stop()
    t = _traffic(pipe)
    assert t["rollout"]["phase"] == "rolled_back", t["rollout"]
    assert "canary analysis" in t["rollout"]["outcome"] and "prediction PSI" in t["rollout"]["outcome"]
    assert t["slots"][t["live_slot"]] == live_version and t["weights"][t["live_slot"]] == 100
    audit = [e for e in pipe.registry.audit_log() if e["event"] == "rejected" and e.get("version") == bad]
    assert audit and "prediction PSI" in audit[-1]["reason"]
    assert pipe.registry.aliases()["live"] == live_version
    assert result["failed"] == 0, result["failures"]


def test_weighted_split_sticky_keys_and_pinned_slot(pipe, data):
    r = httpx.put(f"{pipe.url}/traffic", json={"blue": 20, "green": 80}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    assert wait_until(lambda: _traffic(pipe)["weights"] == {"blue": 20, "green": 80}, timeout_s=300)
    assert wait_until(lambda: _routing_caught_up(pipe), timeout_s=300)  # every replica routes by the new weights
    seen = _split(pipe, 2000, data=data)
    assert abs(seen["blue"] / 2000 - 0.20) <= 0.04, seen
    for key in ("user-17", "user-42", "user-99"):
        assert len(_split(pipe, 100, key=key, data=data)) == 1, key  # one key, one slot
    keys = Counter(next(iter(_split(pipe, 1, key=f"k{i}", data=data))) for i in range(200))
    assert keys["blue"] > 10 and keys["green"] > 80, keys  # different keys spread by weight
    assert _split(pipe, 50, headers={**AUTH, "X-Streamfit-Slot": "blue"}, data=data) == Counter(blue=50)
    assert httpx.post(f"{pipe.url}/predict", json={"features": data.rows()()[0]},
                      headers={"X-Streamfit-Slot": "purple"}, timeout=60).status_code == 422


def test_rollback_returns_all_traffic_to_the_previous_version(pipe, data):
    httpx.put(f"{pipe.url}/traffic", json={"green": 100}, headers=AUTH, timeout=60)
    before = _traffic(pipe)
    live, prev = before["slots"]["green"], before["slots"]["blue"]
    r = httpx.post(f"{pipe.url}/rollback", json={"reason": "test"}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    after = _traffic(pipe)
    assert after["slots"][after["live_slot"]] == pipe.registry.aliases()["live"]
    assert after["weights"][after["live_slot"]] == 100 and after["slots"][after["live_slot"]] != live
    assert prev is not None


def test_killing_the_controller_and_a_router_replica_mid_canary_keeps_the_split(pipe, data):
    v = data.register(pipe.registry, pipe.cfg.features.schema_hash(), seed=5)
    _rollout(pipe, version=v, steps=[25, 100], bake_s=120, reason="long bake")
    assert wait_until(lambda: (_traffic(pipe).get("rollout") or {}).get("phase") == "baking"
                      and 25 in _traffic(pipe)["weights"].values(), timeout_s=300)
    before = _traffic(pipe)
    pid = lambda _self: os.getpid()  # noqa: E731  travels by value to the actor
    controller_pid = ray.get(pipe.controller.__ray_call__.remote(pid))
    ray.kill(pipe.controller, no_restart=False)
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "#Router#" in a["name"]]
    assert replicas, "no Router replica found"
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=False)
    def controller_restarted() -> bool:  # ray.kill is asynchronous: the old controller may answer first
        try:
            return ray.get(pipe.controller.__ray_call__.remote(pid), timeout=30) != controller_pid
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return False

    assert wait_until(lambda: controller_restarted() and _safe_traffic(pipe) is not None, timeout_s=300)
    after = _traffic(pipe)
    assert after["weights"] == before["weights"] and after["slots"] == before["slots"]
    assert after["rollout"]["phase"] == "baking" and after["rollout"]["version"] == v
    n_reporting = 2 * (3 if pipe.cfg.serving.isolated_slots else 1)  # routers, plus each slot's replicas
    assert wait_until(lambda: len(_traffic(pipe)["replicas"]) == n_reporting, timeout_s=300)
    assert wait_until(lambda: _routing_caught_up(pipe), timeout_s=300)
    seen = _split(pipe, 1000, data=data)
    cand = after["rollout"]["slot"]
    assert abs(seen[cand] / 1000 - 0.25) <= 0.05, seen
    r = httpx.post(f"{pipe.url}/rollout/abort", json={"reason": "test over"}, headers=AUTH, timeout=30)
    assert r.status_code == 200 and _traffic(pipe)["rollout"]["phase"] == "aborted"


def _safe_traffic(p):
    try:
        r = httpx.get(f"{p.url}/traffic", timeout=5)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


@pytest.mark.parametrize("body, field", [
    ({"features": {"x0": 1.0}}, "x1"),
    ({"rows": [{"x0": "nan?"}]}, "x0"),
    ({"feature": {}}, "feature"),
    ({"features": {}, "rows": []}, "rows"),
])
def test_malformed_predict_bodies_get_4xx_naming_the_field(pipe, body, field):
    r = httpx.post(f"{pipe.url}/predict", json=body, timeout=60)
    assert 400 <= r.status_code < 500
    assert field in r.text


def test_oversized_body_gets_413(pipe):
    r = httpx.post(f"{pipe.url}/predict", content=b"{" + b" " * 2_000_000 + b"}",
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413


def test_cli_traffic_commands_against_the_http_api(pipe, data):
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).with_name("streamfit"))
    env = {**os.environ, "COLUMNS": "200"}

    def run(*args, token=True):
        e = dict(env) if token else {k: v for k, v in env.items() if k != "STREAMFIT_ADMIN_TOKEN"}
        return subprocess.run([cli, *args, "--url", pipe.url], capture_output=True, text=True, timeout=60, env=e)

    out = run("status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "blue" in out.stdout and "green" in out.stdout and "p99 ms" in out.stdout
    denied = run("traffic", "set", "--green", "30", token=False)
    assert denied.returncode == 1 and "STREAMFIT_ADMIN_TOKEN" in denied.stdout
    t = _traffic(pipe)
    target = "green" if t["slots"]["green"] is not None else "blue"
    set_ = run("traffic", "set", f"--{target}", "30")
    assert set_.returncode == 0, set_.stdout
    assert _traffic(pipe)["weights"][target] == 30
    v = data.register(pipe.registry, pipe.cfg.features.schema_hash(), seed=8)
    started = run("rollout", "start", "--version", str(v), "--steps", "20,100", "--bake", "1m")
    assert started.returncode == 0 and f"v{v}" in started.stdout, started.stdout
    assert wait_until(lambda: (_traffic(pipe).get("rollout") or {}).get("phase") == "baking", timeout_s=300)
    promoted = run("rollout", "promote")
    assert promoted.returncode == 0, promoted.stdout
    assert wait_until(lambda: _traffic(pipe)["rollout"]["phase"] == "promoted", timeout_s=300)
    assert pipe.registry.aliases()["live"] == v
    back = run("rollback", "--reason", "cli test")
    assert back.returncode == 0, back.stdout
    assert pipe.registry.aliases()["live"] != v
    none = run("rollout", "abort")
    assert none.returncode == 1 and "no rollout in progress" in none.stdout


def test_a_version_with_another_feature_list_is_refused_with_the_mismatch_named(pipe, data):
    names = data.names[:-1] + ["surprise"]
    bad = Data(names).register(pipe.registry, pipe.cfg.features.schema_hash(), seed=11)
    live = pipe.registry.aliases()["live"]
    _rollout(pipe, version=bad, reason="wrong features")
    assert wait_until(lambda: _finished(pipe), timeout_s=300)
    r = _traffic(pipe)["rollout"]
    assert r["phase"] == "rolled_back" and "surprise" in r["outcome"] and "feature list" in r["outcome"], r
    assert pipe.registry.aliases()["live"] == live


def test_a_paused_step_waits_for_approval(pipe, data):
    v = data.register(pipe.registry, pipe.cfg.features.schema_hash(), seed=12)
    ray.get(pipe.controller.configure.remote({"pause_before": [100]}))
    try:
        load = RequestLoop(pipe.url, data.rows(3), rate=60).start()
        _rollout(pipe, version=v, steps=[50, 100], bake_s=1.0)
        assert wait_until(lambda: _traffic(pipe)["rollout"]["phase"] == "paused", timeout_s=300)
        time.sleep(2.0)
        assert _traffic(pipe)["rollout"]["phase"] == "paused"  # it waits
        assert httpx.post(f"{pipe.url}/rollout/promote", headers=AUTH, timeout=60).status_code == 200
        assert wait_until(lambda: _traffic(pipe)["rollout"]["phase"] == "promoted", timeout_s=300)
        assert load.stop()["failed"] == 0
    finally:
        ray.get(pipe.controller.configure.remote({"pause_before": []}))
