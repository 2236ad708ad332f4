"""Issue 15 on a real local Ray + Serve over HTTP: the real rollout controller and a Router (no data plane) for
a regression and a multiclass config with a categorical field. Versions fitted as the trainer registers them
go live; ``/predict`` answers the task's shape (single and batch), an unseen category is scored as missing and
counted, a number given as a category is a 422 naming the field, OpenAPI documents the deployed task's answer,
and a version of another task is refused by the slot, its rollout rolled back naming the difference."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Any, Iterator

import httpx
import pytest
import ray
from ray import serve

from serve_task_models import CLASSES, MULTICLASS, REGRESSION, features_cfg, fit_version, row
from streamfit.actors.rollout import RolloutControllerActor
from streamfit.config import Config, ModelConfig, config_from_dict
from streamfit.names import APP_NAME, CONTROLLER_NAME
from streamfit.registry import Registry
from streamfit.scripts.pipeline import free_port, serve_environment, wait_until
from streamfit.serve.app import build_router, http_options

TOKEN = "e2e-tasks-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINISHED = ("promoted", "rolled_back", "aborted", "superseded", "failed")
BOUND_S = 180.0  # generous: only a hang reaches it


@pytest.fixture(scope="module")
def port():
    env = {"STREAMFIT_ADMIN_TOKEN": TOKEN, **serve_environment(True)}  # the Router replicas inherit them
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    p = free_port()
    serve.start(http_options=http_options(Config().serving, p))
    yield p
    ray.shutdown()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _config(root: Any, model: ModelConfig) -> Config:
    return config_from_dict({"stream": {"source": "http"}, "registry": {"uri": str(root / "registry")},
                             "rollout": {"min_requests": 0, "shadow_judging": False},
                             "auth": {"open_scopes": ["read", "ingest"]}, "serving": {"replicas": 1},
                             "model": model.model_dump(exclude_none=True), "features": features_cfg().model_dump()})


def _roll_out(c: httpx.Client, version: int) -> dict[str, Any]:
    r = c.post("/rollout", json={"version": version, "mode": "canary"}, headers=AUTH)
    assert r.status_code == 200, r.text

    def finished() -> bool:
        rollout = c.get("/traffic").json().get("rollout") or {}
        return rollout.get("version") == version and rollout.get("phase") in FINISHED

    assert wait_until(finished, timeout_s=BOUND_S)
    return c.get("/traffic").json()["rollout"]


@contextmanager
def live(port: int, root: Any, model: ModelConfig) -> Iterator[tuple[httpx.Client, Registry, list[str], int]]:
    """The real controller and a Router for ``model``'s task, a version of it live: (client, registry, model
    row names, the live version)."""
    cfg = _config(root, model)
    registry = Registry(cfg.registry.uri)
    namespace = f"tasks-{model.task}"
    controller = RolloutControllerActor.options(name=CONTROLLER_NAME, namespace=namespace).remote(
        cfg.registry.uri, cfg.serving.flip_timeout_s, cfg.rollout.model_dump())
    ray.get(controller.status.remote())
    serve.run(build_router(cfg, cfg.registry.uri, namespace), name=APP_NAME, route_prefix="/")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=BOUND_S) as c:
            v1 = fit_version(registry, model, cfg.features, seed=1)
            assert _roll_out(c, v1)["phase"] == "promoted"
            yield c, registry, cfg.features.feature_names(model), v1
    finally:
        serve.delete(APP_NAME)
        ray.kill(controller)


def refused(c: httpx.Client, registry: Registry, other: ModelConfig, why: str) -> None:
    """A version of ``other`` task is refused by the slot: its rollout rolled back naming the difference."""
    wrong = fit_version(registry, other, features_cfg(), seed=2)
    rollout = _roll_out(c, wrong)
    assert rollout["phase"] == "rolled_back" and why in json.dumps(rollout), rollout


def test_regression_answers_values_and_refuses_a_multiclass_version(port, tmp_path):
    with live(port, tmp_path, REGRESSION) as (c, registry, names, v1):
        r = c.post("/predict", json={"features": row(names, "red")})
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"prediction", "model_version", "slot"} and r.json()["model_version"] == v1
        batch = c.post("/predict", json={"rows": [row(names, "red"), row(names, "violet"), row(names, None)]}).json()
        red, unseen, missing = batch["predictions"]
        assert isinstance(red, float) and unseen == pytest.approx(missing)  # unseen is scored as missing
        assert c.get("/healthz").json()["unseen_categories"] == {"colour": 1}
        r = c.post("/predict", json={"features": row(names, colour=3)})
        assert r.status_code == 422 and ["body", "features", "colour"] in [d["loc"] for d in r.json()["detail"]]
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
        assert "ValuePrediction" in schemas and "ClassPrediction" not in schemas and "Prediction" not in schemas
        refused(c, registry, MULTICLASS, "task multiclass != serving regression")
        r = c.post("/predict", json={"features": row(names, "blue")})
        assert r.status_code == 200 and r.json()["model_version"] == v1  # the live version kept serving


def test_multiclass_with_a_categorical_field_answers_the_class_and_its_probabilities(port, tmp_path):
    with live(port, tmp_path, MULTICLASS) as (c, registry, names, v1):
        body = c.post("/predict", json={"features": row(names, "red", x0=2.0)}).json()
        assert body["prediction"] == "high" and body["class_index"] == 2 and body["model_version"] == v1
        assert list(body["probabilities"]) == CLASSES and sum(body["probabilities"].values()) == pytest.approx(1.0)
        batch = c.post("/predict", json={"rows": [row(names, "green", x0=-2.0), row(names, "teal", x0=0.0)]}).json()
        assert batch["predictions"][0] == "low" and len(batch["class_indices"]) == 2
        assert [list(p) for p in batch["probabilities"]] == [CLASSES, CLASSES]
        assert c.get("/healthz").json()["unseen_categories"] == {"colour": 1}
        r = c.post("/predict", json={"features": {**row(names), "x0": "red"}})
        assert r.status_code == 422 and ["body", "features", "x0"] in [d["loc"] for d in r.json()["detail"]]
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
        assert {"ClassPrediction", "ClassBatchPrediction"} <= set(schemas) and "ValuePrediction" not in schemas
        refused(c, registry, REGRESSION, "task regression != serving multiclass")
