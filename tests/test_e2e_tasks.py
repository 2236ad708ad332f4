"""Regression and multiclass, each with a categorical field, end to end on a real local Ray + Serve over HTTP.

The embedded stream sends each task's labels (values; class names) and the categorical field as text.
Clients score the stream's raw events with their ids while versions are trained, canaried and
promoted; the labels arriving later judge the canaries and give each version its live quality.
A user sees: versions of the task registered, a canary promoted, answers of the task's shape, live
quality per version in ``/monitor``, no failed request across the flips, and bad input (a wrong
label, an unknown class, a number for a category, an unseen category) answered with a reason and
counted, never a 500.
"""

from __future__ import annotations

import os
import threading

import httpx
import pytest
import ray

from streamfit.config import config_from_dict
from streamfit.registry import version_task
from streamfit.scripts.load import RequestLoop, StreamEvents
from streamfit.scripts.pipeline import Pipeline, free_port, wait_until

TOKEN = "tasks-admin-token"
CLASSES = ["low", "mid", "high"]
FIELDS = [{"name": "x0", "min": -50, "max": 50}, {"name": "x1", "min": -50, "max": 50},
          {"name": "x2", "min": -50, "max": 50}, {"name": "country", "type": "categorical"}]
METRICS_PORT = {task: free_port() for task in ("regression", "multiclass")}  # Ray's Prometheus endpoint
TASKS = {
    "regression": {"task": "regression"},
    "multiclass": {"task": "multiclass", "classes": CLASSES},
}


@pytest.fixture(scope="module", params=sorted(TASKS))
def pipe(request, tmp_path_factory):
    os.environ["STREAMFIT_ADMIN_TOKEN"] = TOKEN
    root = tmp_path_factory.mktemp(request.param)
    cfg = config_from_dict({
        "model": TASKS[request.param],
        "features": {"fields": FIELDS},
        "registry": {"uri": str(root / "registry")},
        "checkpoints": {"uri": str(root / "ckpt")},
        "serving": {"port": 0, "metrics_port": METRICS_PORT[request.param]},
        "stream": {"max_events_per_s": 2000, "drift_every": 20000, "bad_row_rate": 0.01},
        "trainer": {"refit_every_rows": 4000, "window_rows": 8000, "num_boost_round": 20, "min_rows_between": 0},
        # The analysis itself is judged per task in test_monitor_tasks; here every canary that is not broken
        # goes through, so the test sees promotions whatever the drifts do to the candidates' scores.
        "rollout": {"steps": [50, 100], "bake_s": 1.0, "min_requests": 5, "min_labels": 5, "evidence_bakes": 50,
                    "on_no_evidence": "pass", "max_accuracy_drop": 1.0, "max_prediction_psi": 100.0,
                    "max_latency_ratio": 100.0, "prediction_shift_p": 1e-300},
        "auth": {"open_scopes": ["read", "ingest"]},
    })
    p = Pipeline.start(cfg)
    p.metrics_port = METRICS_PORT[request.param]
    yield p
    p.stop()


def _traffic(p: Pipeline) -> dict:
    return httpx.get(f"{p.url}/traffic", timeout=60).json()


class Scoring:
    """The stream's raw events, with their ids, scored as they happen (the source position followed)."""

    def __init__(self, p: Pipeline) -> None:
        self.events = StreamEvents(p.cfg, keep=300)
        self.p = p
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.events.advance_to(int(ray.get(self.p.coordinator.stats.remote(), timeout=30)["position"]))
            except Exception:  # noqa: BLE001 - a slow stats call only delays the next events
                continue


def test_versions_of_the_task_are_canaried_and_promoted_with_no_failed_request(pipe):
    run_ref = pipe.run_stream(None)
    scoring = Scoring(pipe)
    scoring.thread.start()
    assert wait_until(lambda: pipe.registry.aliases().get("live") is not None, timeout_s=300), "no version went live"
    loop = RequestLoop(pipe.url, scoring.events, rate=30).start()
    try:
        promoted = wait_until(lambda: (_traffic(pipe).get("rollout") or {}).get("phase") == "promoted"
                              and pipe.registry.aliases().get("live", 0) >= 2, timeout_s=600)
    finally:
        result = loop.stop()
        scoring.stop.set()
    assert promoted, (_traffic(pipe).get("rollout"), ray.get(pipe.trainer.stats.remote())["rejected"][-3:])
    assert result["failed"] == 0, result["failures"]
    assert result["served"] > 20 and len(result["versions"]) >= 2, result["versions"]
    ray.get(pipe.coordinator.stop.remote())
    ray.get(run_ref)
    for meta in pipe.registry.list_versions():
        assert meta["task"] == pipe.cfg.model.task
        assert meta["features"] == pipe.cfg.feature_names()
        categories = version_task(meta).categories
        assert categories is not None and categories.fields == ["country"], meta.get("categories")
        assert "country_0" in categories.dtype("country").categories  # the text values, as the stream sent them


def test_answers_have_the_tasks_shape_and_live_quality_is_reported_per_version(pipe):
    live = pipe.registry.aliases()["live"]
    names = pipe.cfg.feature_names()
    row = {n: 0.5 for n in names} | {"country": "country_1"}
    with httpx.Client(base_url=pipe.url, timeout=60) as c:
        body = c.post("/predict", json={"features": row}).json()
        batch = c.post("/predict", json={"rows": [row, row | {"country": "country_2"}]}).json()
        event = c.post("/predict", json={"event": {"entity": "u3", "x0": 1.0, "x1": 0.0, "x2": -1.0,
                                                   "country": "country_4"}}).json()
        report = c.get("/monitor").json()
    for answer in (body, event):
        assert answer["model_version"] >= 1
        if pipe.cfg.model.task == "regression":
            assert isinstance(answer["prediction"], float) and "probability" not in answer, answer
        else:
            assert answer["prediction"] in CLASSES and answer["class_index"] == CLASSES.index(answer["prediction"])
            assert set(answer["probabilities"]) == set(CLASSES)
            assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-4
    assert len(batch["predictions"]) == 2
    quality = report["live_accuracy"]
    judged = {v: q for v, q in quality.items() if (q.get("labelled") or 0) > 0}
    assert judged, quality
    metric = "rmse" if pipe.cfg.model.task == "regression" else "accuracy"
    assert all(q[metric] is not None for q in judged.values()), judged
    assert str(live) in quality or live in quality, (live, sorted(quality))


@pytest.mark.parametrize("field, value", [("country", 3.5), ("x0", "abc")])
def test_a_value_of_the_wrong_kind_is_a_422_naming_the_field(pipe, field, value):
    row = {n: 0.5 for n in pipe.cfg.feature_names()} | {"country": "country_1", field: value}
    r = httpx.post(f"{pipe.url}/predict", json={"features": row}, timeout=60)
    assert r.status_code == 422, r.text
    assert field in r.text


def test_an_unseen_category_is_scored_as_missing_and_counted(pipe):
    def unseen() -> int:
        health = httpx.get(f"{pipe.url}/healthz", timeout=60).json()
        return sum(int(v) for v in (health.get("unseen_categories") or {}).values())

    before = unseen()
    row = {n: 0.5 for n in pipe.cfg.feature_names()} | {"country": "atlantis"}
    r = httpx.post(f"{pipe.url}/predict", json={"features": row}, timeout=60)
    assert r.status_code == 200, r.text
    assert wait_until(lambda: unseen() > before, timeout_s=60), httpx.get(f"{pipe.url}/healthz", timeout=60).json()

    def scraped() -> bool:  # the replicas' counter reaches Prometheus through Ray's metrics agent
        try:
            text = httpx.get(f"http://127.0.0.1:{pipe.metrics_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return False
        return any(line.startswith("ray_streamfit_unseen_categories_total{") and 'field="country"' in line
                   for line in text.splitlines())

    assert wait_until(scraped, timeout_s=180), "ray_streamfit_unseen_categories_total{field=country} not scraped"


def test_bad_labels_and_categories_in_the_stream_are_rejected_by_reason_and_counted(pipe):
    reasons = ray.get(pipe.coordinator.stats.remote())["reasons"]
    assert reasons.get("not_categorical:country", 0) > 0, reasons
    bad_label = "bad_label:unknown_class" if pipe.cfg.model.task == "multiclass" else "bad_label:wrong_type"
    assert sum(v for k, v in reasons.items() if k.startswith("bad_label")) > 0, reasons
    assert reasons.get(bad_label, 0) > 0, reasons
