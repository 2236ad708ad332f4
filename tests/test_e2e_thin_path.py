"""End to end on a real local Ray and Serve over HTTP: stream -> shards -> trainer -> registry -> blue/green flips."""

from __future__ import annotations

import httpx
import pytest
import ray

from streamfit.config import config_from_dict
from streamfit.scripts.load import RandomRows, RequestLoop
from streamfit.scripts.pipeline import Pipeline, wait_until


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    cfg = config_from_dict(
        {
            "registry": {"uri": str(tmp_path_factory.mktemp("registry"))},
            "serving": {"port": 0},
            "stream": {"max_events_per_s": 2000, "drift_every": 20000},
            "trainer": {"refit_every_rows": 3000, "window_rows": 6000, "num_boost_round": 20, "gate_margin": 1.0},
            "rollout": {"mode": "flip"},
        }
    )
    p = Pipeline.start(cfg)
    yield p
    p.stop()


def _live(p: Pipeline) -> int | None:
    traffic = ray.get(p.controller.status.remote())
    return traffic["slots"][traffic["live_slot"]]


def test_requests_through_flips_never_fail(pipe):
    run_ref = pipe.run_stream(60)
    assert wait_until(lambda: _live(pipe) is not None, timeout_s=90), "no first version went live"
    flips_before = ray.get(pipe.controller.status.remote())["flips"]
    loop = RequestLoop(pipe.url, RandomRows(pipe.cfg.features.feature_names()), rate=40).start()
    flipped = wait_until(lambda: ray.get(pipe.controller.status.remote())["flips"] >= flips_before + 2, timeout_s=90)
    result = loop.stop()
    assert flipped, "traffic did not flip twice while requests were running"
    assert result["failed"] == 0, result["failures"]
    assert result["served"] > 50
    assert len(result["versions"]) >= 2, f"requests saw only versions {result['versions']}"
    assert set(result["slots"]) == {"blue", "green"}
    ray.get(pipe.coordinator.stop.remote())
    ray.get(run_ref)


def test_events_reached_both_shards_and_versions_registered(pipe):
    stats = ray.get([s.stats.remote() for s in pipe.shards])
    assert all(s["events"] > 0 for s in stats), stats
    assert all(s["training_rows"] > 0 for s in stats), stats
    versions = pipe.registry.list_versions()
    assert len(versions) >= 2
    for m in versions:
        assert m["features"] == pipe.cfg.features.feature_names()
        assert len(m["sha256"]) == 64
    coord = ray.get(pipe.coordinator.stats.remote())
    assert coord["rejected"] > 0 and "missing:x1" in coord["reasons"], "injected bad rows were not counted"


def test_predict_answers_with_the_live_version(pipe):
    # Wait for every registered version to have been deployed, so "live" is settled.
    assert wait_until(
        lambda: len(ray.get(pipe.controller.status.remote())["deploys"]) >= len(pipe.registry.version_numbers()),
        timeout_s=60,
    )
    live = _live(pipe)
    names = pipe.cfg.features.feature_names()
    with httpx.Client(base_url=pipe.url, timeout=60) as c:
        for _ in range(20):
            r = c.post("/predict", json={"features": {n: 0.5 for n in names}})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model_version"] == live
            assert body["prediction"] in (0, 1) and 0.0 <= body["probability"] <= 1.0
        assert pipe.registry.aliases()["live"] == live
        models = c.get("/models").json()
        assert [m["version"] for m in models["versions"]] == pipe.registry.version_numbers()
        assert c.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize(
    "features, field",
    [
        ({"x0": 1.0, "x2": 0.0, "count_5m": 3.0, "x0_mean_5m": 0.1}, "x1"),  # missing
        ({"x0": "abc", "x1": 0.0, "x2": 0.0, "count_5m": 3.0, "x0_mean_5m": 0.1}, "x0"),  # non-numeric
    ],
)
def test_bad_predict_body_gets_422_naming_the_field(pipe, features, field):
    r = httpx.post(f"{pipe.url}/predict", json={"features": features}, timeout=60)
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", "features", field] in locs
