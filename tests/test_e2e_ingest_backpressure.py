"""A full ingest buffer answers 429 with Retry-After over real HTTP on a real local Ray + Serve
(issue 13 item 5): nothing is taken from the refused request, every accepted row reaches the
shards, and once a checkpoint has committed the buffer the client's retry is accepted.

The buffer actor is started before the pipeline with a small byte cap (the pipeline's coordinator
finds it by name), and checkpoints are far apart, so nothing drains it while the test fills it.
"""

from __future__ import annotations

import httpx
import pytest
import ray

from streamfit.actors.stream import IngestBufferActor
from streamfit.config import config_from_dict
from streamfit.names import INGEST_NAME, NAMESPACE
from streamfit.scripts.pipeline import Pipeline, start_ray, wait_until
from test_e2e_http_ingest import _auth, _shard_events

T0 = 1_700_000_000.0
CAP_BYTES = 10_000  # one request of 50 events (~6 KB as the buffer holds them); the second is refused
RETRY_AFTER_S = 1


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("backpressure")
    http = {"batch_size": 100, "buffer_max_bytes": CAP_BYTES, "retry_after_s": RETRY_AFTER_S}
    cfg = config_from_dict({"stream": {"source": "http", "http": http}, "serving": {"port": 0},
                            "registry": {"uri": str(root / "registry")}, "features": {"windows_s": [60]},
                            "checkpoints": {"uri": str(root / "ckpt"), "interval_s": 3600}})
    start_ray(cfg)
    buffer = IngestBufferActor.options(name=INGEST_NAME, namespace=NAMESPACE, get_if_exists=True).remote(
        f"{root / 'ckpt'}/ingest", max_bytes=CAP_BYTES, retry_after_s=RETRY_AFTER_S)
    assert ray.get(buffer.stats.remote())["max_bytes"] == CAP_BYTES  # started (and named) before the pipeline looks
    p = Pipeline.start(cfg)
    yield p
    p.stop()


def _events(start: int, n: int = 50) -> list[dict]:
    return [{"event_id": f"bp-{i}", "entity": f"entity-{i}", "event_time": T0 + i, "x0": 1.0, "x1": 0.0,
             "x2": 0.0} for i in range(start, start + n)]


def test_a_full_buffer_answers_429_with_retry_after_and_loses_nothing(pipe):
    run = pipe.run_stream(None)
    accepted, refused = 0, None
    with httpx.Client(base_url=pipe.url, timeout=60, headers=_auth()) as c:
        for k in range(20):
            r = c.post("/ingest", json={"events": _events(50 * k)})
            if r.status_code == 429:
                refused = (k, r)
                break
            assert r.status_code == 200, r.text
            accepted += r.json()["accepted"]
        assert refused is not None, "the buffer never filled"
        k, r = refused
        assert r.headers["Retry-After"] == str(RETRY_AFTER_S) and "full" in r.json()["detail"]
        assert accepted == 50 * k and accepted > 0
        buffer = ray.get_actor(INGEST_NAME, namespace=NAMESPACE)
        stats = ray.get(buffer.stats.remote())
        assert stats["refused_requests"] >= 1 and stats["next_position"] == accepted  # the refused rows: none taken
        assert c.get("/healthz").json()["ingest_refused"]["requests"] >= 1
        # Every accepted row reaches the shards: refusing is never a silent drop.
        assert wait_until(lambda: _shard_events(pipe) == accepted, timeout_s=60), _shard_events(pipe)
        ray.get(pipe.coordinator.stop.remote())
        ray.get(run, timeout=120)  # the run ends with a checkpoint: the buffer commits and frees its rows
        assert ray.get(buffer.stats.remote())["bytes_held"] == 0
        retry = c.post("/ingest", json={"events": _events(50 * k)})
        assert retry.status_code == 200 and retry.json()["accepted"] == 50, retry.text
