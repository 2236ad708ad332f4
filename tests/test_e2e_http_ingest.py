"""POST /ingest and GET /features/{entity} over real HTTP on a real local Ray + Serve."""

from __future__ import annotations

import os

import httpx
import pytest
import ray

from streamfit.config import config_from_dict
from streamfit.scripts.pipeline import Pipeline, wait_until

T0 = 1_700_000_000.0


def _auth() -> dict[str, str]:
    """The admin token the pipeline set: it includes the ingest scope these requests need."""
    return {"Authorization": f"Bearer {os.environ['STREAMFIT_ADMIN_TOKEN']}"}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    cfg = config_from_dict({
        "stream": {"source": "http", "http": {"batch_size": 100}},
        "registry": {"uri": str(root / "registry")},
        "checkpoints": {"uri": str(root / "ckpt"), "interval_s": 0.5},
        "serving": {"port": 0},
        "features": {"windows_s": [60]},
    })
    p = Pipeline.start(cfg)
    run = p.run_stream(None)
    yield p
    ray.get(p.coordinator.stop.remote())
    ray.get(run, timeout=60)
    p.stop()


def _event(i: int, entity: str, t: float, x0: float) -> dict:
    return {"event_id": f"{entity}-{i}", "entity": entity, "event_time": t, "x0": x0, "x1": 0.0, "x2": 0.0}


def _shard_events(p: Pipeline) -> int:
    return sum(s["events"] for s in ray.get([s.stats.remote() for s in p.shards]))


def test_ingest_accepts_good_rows_rejects_bad_ones_and_is_idempotent(pipe):
    events = [_event(i, "alice", T0 + 10 * i, float(i)) for i in range(5)]
    bad = [{"event_id": "b1", "entity": "alice", "event_time": T0, "x0": "abc", "x1": 0.0, "x2": 0.0},
           {"event_id": "b2", "entity": "alice", "event_time": T0, "x1": 0.0, "x2": 0.0},
           {"event_id": "b3", "entity": "alice", "event_time": "yesterday", "x0": 1, "x1": 0.0, "x2": 0.0}]
    with httpx.Client(base_url=pipe.url, timeout=60, headers=_auth()) as c:
        r = c.post("/ingest", json={"events": events + bad})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["accepted"] == 5 and body["duplicates"] == 0
        assert {(x["index"], x["reason"]) for x in body["rejected"]} == {
            (5, "non_numeric:x0"), (6, "missing:x0"), (7, "missing:event_time")}
        retry = c.post("/ingest", json={"events": events}).json()  # a client retrying the same request
        assert retry["accepted"] == 0 and retry["duplicates"] == 5
        assert c.post("/ingest", json={"events": bad}).status_code == 422
        assert c.post("/ingest", json={"rows": []}).status_code == 422
    assert wait_until(lambda: _shard_events(pipe) == 5, timeout_s=30), _shard_events(pipe)


def test_features_of_an_entity_come_from_its_shard(pipe):
    assert wait_until(lambda: _shard_events(pipe) >= 5, timeout_s=30)
    with httpx.Client(base_url=pipe.url, timeout=60, headers=_auth()) as c:
        r = c.get("/features/alice")
        assert r.status_code == 200, r.text
        f = r.json()["features"]
        # Events at T0 + 0, 10, 20, 30, 40; "now" is just after the last one: all five are in the 1-minute window.
        assert f["count_1m"] == 5
        assert f["x0_mean_1m"] == pytest.approx(2.0)
        assert f["x0_last"] == 4.0 and f["x0_max_1m"] == 4.0 and f["x0_min_1m"] == 0.0
        assert c.get("/features/nobody").status_code == 404


def test_labels_pushed_later_become_training_rows(pipe):
    labels = [{"kind": "label", "event_id": f"alice-{i}", "entity": "alice", "event_time": T0 + 100 + i,
               "label": i % 2} for i in range(5)]
    with httpx.Client(base_url=pipe.url, timeout=60, headers=_auth()) as c:
        assert c.post("/ingest", json={"events": labels}).json()["accepted"] == 5
    assert wait_until(lambda: sum(s["training_rows"] for s in ray.get([s.stats.remote() for s in pipe.shards])) == 5,
                      timeout_s=30)
