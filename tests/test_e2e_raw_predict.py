"""Raw-event POST /predict on a real local Ray + Serve: live features from the shards, 503 while a shard restarts."""

from __future__ import annotations

import os
import time

import httpx
import numpy as np
import pytest
import ray
import xgboost as xgb

from streamfit.config import config_from_dict
from streamfit.schema import shard_of
from streamfit.scripts.pipeline import Pipeline, wait_until

T0 = 1_700_000_000.0


def _auth() -> dict[str, str]:
    """The admin token the pipeline set: it includes the ingest scope these requests need."""
    return {"Authorization": f"Bearer {os.environ['STREAMFIT_ADMIN_TOKEN']}"}
TIMEOUT_S = 0.3  # serving.lookup_timeout_s: a restarting shard takes longer than this to come back


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    cfg = config_from_dict({
        "stream": {"source": "http", "http": {"batch_size": 100}},
        "registry": {"uri": str(root / "registry")},
        "checkpoints": {"uri": str(root / "ckpt"), "interval_s": 0.5},
        "serving": {"port": 0, "lookup_timeout_s": TIMEOUT_S},
        "features": {"windows_s": [60]},
    })
    p = Pipeline.start(cfg)
    run = p.run_stream(None)
    _deploy_a_model(p)
    yield p
    ray.get(p.coordinator.stop.remote())
    ray.get(run, timeout=60)
    p.stop()


def _deploy_a_model(p: Pipeline) -> None:
    names = p.cfg.features.feature_names()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, len(names)))
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, label=(x[:, 0] > 0),
                                                                                  feature_names=names), 10)
    version = p.registry.register(bst, {"features": names, "trigger": "test"}, actor="test")
    ray.get(p.controller.start_rollout.remote(version=version, mode="flip", actor="test"))
    row = {"features": {n: 0.0 for n in names}}
    assert wait_until(lambda: httpx.post(f"{p.url}/predict", json=row, timeout=60).status_code == 200, timeout_s=90)


def _predict(c: httpx.Client, body: dict, tries: int = 20) -> httpx.Response:
    """POST /predict as a client does: a 503 (shard slow on a loaded machine) is retried after Retry-After."""
    for _ in range(tries):
        r = c.post("/predict", json=body)
        if r.status_code != 503:
            return r
        time.sleep(min(float(r.headers.get("Retry-After", 1)), 1.0) / 4)
    return r


def _event(entity: str, t: float | None = None, **extra) -> dict:
    ev = {"entity": entity, "x0": 1.0, "x1": 2.0, "x2": 3.0, **extra}
    return ev if t is None else {**ev, "event_time": t}


def _shard_events(p: Pipeline) -> int:
    return sum(s["events"] for s in ray.get([s.stats.remote() for s in p.shards]))


def _entity_on(shard: int, n: int, prefix: str) -> str:
    names = np.array([f"{prefix}-{i}" for i in range(100)], dtype=object)
    return str(names[shard_of(names, n) == shard][0])


def test_a_new_entity_is_scored_on_empty_history_features(pipe):
    seen = [{"event_id": f"old-{i}", "entity": "old", "event_time": T0 + 10 * i, "x0": float(i), "x1": 0.0,
             "x2": 0.0} for i in range(3)]
    with httpx.Client(base_url=pipe.url, timeout=60, headers=_auth()) as c:
        assert c.post("/ingest", json={"events": seen}).json()["accepted"] == 3
        assert wait_until(lambda: _shard_events(pipe) == 3, timeout_s=30)
        r = _predict(c, {"event": _event("brand-new"), "return_features": True})
        assert r.status_code == 200, r.text
        body = r.json()
        f = body["features"]
        assert (f["x0"], f["x1"], f["x2"]) == (1.0, 2.0, 3.0)  # the event's own fields
        assert f["count_1m"] == 0 and f["x0_mean_1m"] is None and f["x0_last"] is None and f["age_s"] is None
        assert f["label_last"] is None and f["label_count_5m"] == 0
        assert body["version"] == body["model_version"] and body["slot"] in ("blue", "green")
        assert body["features_as_of"] == pytest.approx(T0 + 20)  # the stream's clock: no event_time given
        old = _predict(c, {"event": _event("old", T0 + 30), "return_features": True}).json()
        assert old["features"]["count_1m"] == 3 and old["features"]["x0_last"] == 2.0
        far = _predict(c, {"event": _event("old", T0 + 10 * 86_400)})
        assert far.status_code == 422 and ["body", "event", "event_time"] in [d["loc"] for d in far.json()["detail"]]
        assert c.get("/features/brand-new").status_code == 404  # scoring alone changed no state


def test_ingest_true_sends_the_scored_event_into_the_stream(pipe):
    before = _shard_events(pipe)
    with httpx.Client(base_url=pipe.url, timeout=60, headers=_auth()) as c:
        r = _predict(c, {"event": _event("joined", T0 + 40, event_id="j-1"), "ingest": True})
        assert r.status_code == 200, r.text
        assert r.json()["event_id"] == "j-1" and r.json()["ingested"]["accepted"] == 1
        assert wait_until(lambda: _shard_events(pipe) == before + 1, timeout_s=30)
        assert c.get("/features/joined").json()["features"]["count_1m"] == 1


def test_a_killed_shard_answers_503_until_it_is_back_and_the_other_shard_keeps_answering(pipe):
    n = pipe.cfg.shards.num_shards
    down, up = _entity_on(1, n, "down"), _entity_on(0, n, "up")
    with httpx.Client(base_url=pipe.url, timeout=30, headers=_auth()) as c:
        for entity in (down, up):
            assert _predict(c, {"event": _event(entity)}).status_code == 200
        ray.kill(pipe.shards[1], no_restart=False)
        unavailable = None
        deadline = time.monotonic() + 60
        while unavailable is None and time.monotonic() < deadline:
            started = time.monotonic()
            r = c.post("/predict", json={"event": _event(down)})
            took = time.monotonic() - started
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                unavailable = (r, took)
            assert _predict(c, {"event": _event(up)}).status_code == 200  # the other shard's entity
        assert unavailable is not None, "the killed shard's entity never got a 503"
        r, took = unavailable
        assert int(r.headers["Retry-After"]) >= 1 and "shard 1" in r.json()["detail"]
        assert took < TIMEOUT_S + 5.0  # bounded by the lookup timeout, never a hang
        assert wait_until(lambda: c.post("/predict", json={"event": _event(down)}).status_code == 200, timeout_s=90)
        assert _predict(c, {"event": _event(up)}).status_code == 200
        assert c.get("/healthz").json()["lookups"]["unavailable"] >= 1
