"""The typed status (streamfit/status.py) on the producers' real shapes, and its renderers — the terminal
tables, the status page, the demo's live view — and the typed API responses. No Ray."""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from rich.console import Console

from streamfit.config import RolloutConfig, TrainerConfig
from streamfit.names import Phase, Slot
from streamfit.request_stats import SlotStats
from streamfit.status import (Accuracy, MonitorReport, PlaneStats, RefitResult, Rollout, ServingView, TrafficStatus,
                              TrainerReport)
from streamfit.actors.monitoring import PredictionLog
from streamfit.actors.rollout import canary_verdict
from streamfit.actors.training.trainer import TrainerCore
from streamfit.scripts.demo import Schedule, live_view, summarize
from streamfit.scripts.views import quality_table, replica_lines, traffic_table
from streamfit.serve.api import Backend, build_api
from streamfit.serve.router import RouterCore
from streamfit.serve.status_page import StatusPageData, render

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def _stats(n: int, p: float, ms: float = 2.0) -> dict:
    st = SlotStats()
    for _ in range(n):
        st.record(ms / 1000, p)
    return st.to_dict()


def _step() -> dict:
    """One canary step's result exactly as the controller records it (canary_verdict's figures)."""
    live, cand = _stats(200, 0.2), _stats(50, 0.9)
    passed, reasons, figures = canary_verdict(live, cand, (40, 0.9), (40, 0.7), RolloutConfig(min_labels=10))
    return {"weight": 25, "passed": passed, "reasons": reasons, **figures, "time": 1700000000.0}


def _per_version() -> dict:
    log = PredictionLog()
    log.record([(f"e{i}", 2, "green", 0.9, 1.0) for i in range(5)])
    log.labels([f"e{i}" for i in range(5)], [1.0, 1.0, 1.0, 0.0, 1.0], now=2.0)
    return {v: {**a, "source": "served"} for v, a in log.per_version().items()}  # int keys, as in the actor


def controller_status(rollout: bool = True) -> dict:
    """What RolloutControllerActor.status() answers, mid-canary."""
    r = {"version": 2, "slot": "green", "live_version": 1, "steps": [5, 25, 50, 100], "bake_s": 5.0,
         "reason": "refit (volume)", "actor": "trainer", "phase": "baking", "step": 1, "started": 10.0,
         "step_started": 15.0, "baseline": {"blue": _stats(0, 0.5)}, "results": [_step()], "outcome": "",
         "approved": False, "id": "ab12cd34"}
    return {"slots": {"blue": 1, "green": 2}, "weights": {"blue": 75, "green": 25}, "revision": 9,
            "live_slot": "blue", "flips": 2, "shadow_share": 0.0, "rollout": r if rollout else None,
            "history": [{"version": 1, "phase": "promoted", "outcome": "passed every step", "reason": "first",
                         "steps": [], "seconds": 1.5}],
            "replicas": {"abc": {"blue": 1, "green": 2}}, "slot_stats": {"blue": _stats(30, 0.2), "green": _stats(10, 0.8)},
            "shadow": {"compared": 0, "agreed": 0},
            "deploys": [{"version": 1, "slot": "blue", "ok": True, "phase": "promoted", "outcome": "passed every step"}],
            "live_accuracy": {str(k): v for k, v in _per_version().items()},
            "rollout_config": RolloutConfig().model_dump(), "added_later": {"x": 1}}


def _text(renderable) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# -- the models on the producers' shapes -----------------------------------------------------


def test_traffic_status_reads_the_controller_status():
    t = TrafficStatus.model_validate(controller_status())
    assert t.live_version == 1 and t.weight("green") == 25 and t.split() == "blue 75% / green 25%"
    assert t.rollout.phase is Phase.BAKING and t.rollout.active and t.rollout.weight == 25
    assert t.rollout.headline() == "v2 → green: baking at 25% (step 2/4)"
    step = t.rollout.results[0]
    assert not step.passed and "accuracy 0.700 vs live 0.900" in step.reasons[0]
    assert step.candidate.requests == 50 and step.judged_on == "labelled accuracy"
    assert t.figures("blue").requests == 30 and t.figures("green").p99_ms is not None
    assert t.accuracy_of("green").labelled == 5 and t.accuracy_of("green").accuracy == pytest.approx(0.8)
    assert t.outcomes() == {"promoted": 1}
    assert t.added_later == {"x": 1}  # a key a producer adds is kept …
    assert json.loads(t.model_dump_json())["added_later"] == {"x": 1}  # … and passed on


def test_a_missing_or_wrong_field_the_consumers_use_is_refused():
    for key in ("slots", "weights", "live_slot", "flips", "revision"):
        bad = controller_status()
        del bad[key]
        with pytest.raises(ValidationError, match=key):
            TrafficStatus.model_validate(bad)
    with pytest.raises(ValidationError, match="live_slot"):
        TrafficStatus.model_validate({**controller_status(), "live_slot": "purple"})
    with pytest.raises(ValidationError, match="phase"):
        TrafficStatus.model_validate({**controller_status(), "rollout": {**controller_status()["rollout"],
                                                                        "phase": "sleeping"}})


def test_version_keys_and_non_finite_figures_survive_json():
    acc = {3: {"labelled": 4, "accuracy": 1.0, "logloss": math.inf, "auc": math.nan}}
    m = MonitorReport.from_monitor({"per_version": acc, "drift": {}, "refit_requests": []}, [])
    again = MonitorReport.model_validate_json(m.model_dump_json())
    assert list(again.live_accuracy) == ["3"] and again.live_accuracy["3"].logloss == math.inf
    assert math.isnan(again.live_accuracy["3"].auc)


def test_monitor_report_takes_the_newest_quality_of_the_series():
    series = [{"t": 1.0, "quality": {"accepted": 5, "rejected": 1, "reasons": {"late": 1}}},
              {"t": 2.0, "quality": {"accepted": 9, "rejected": 3, "reasons": {"late": 1, "missing:x2": 2}}},
              {"t": 3.0, "psi": {"x0": 0.1}}]
    stats = {"drift": {"psi": {"x0": 0.1, "x1": 0.6}, "ks": {}, "prediction_psi": 0.2, "rows": 900, "version": 2,
                       "alarm": "x1 PSI 0.60 > 0.5"}, "per_version": _per_version(),
             "refit_requests": [{"t": 3.0, "alarm": "x1 PSI 0.60 > 0.5", "version": 3}], "last_error": None}
    m = MonitorReport.from_monitor(stats, series)
    assert m.quality.accepted == 9 and m.quality.top_reasons() == "missing:x2: 2, late: 1"
    assert m.drift.top_psi(1) == "x1 0.60" and m.refit_requests[0].version == 3
    text = _text(quality_table(m))
    assert "9 / 3" in text and "x1 0.60" in text and "x1 PSI 0.60 > 0.5" in text


def test_trainer_report_reads_the_trainer_stats():
    cfg = TrainerConfig(refit_every_rows=200, num_boost_round=5, drift_detector=None, min_rows_between=0)
    core = TrainerCore(cfg, ["a"], None)
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    core.add_rows(pd.DataFrame({"event_time": np.arange(200.0), "a": a[:200], "label": (a[:200] > 0) * 1.0}))
    core.add_rows(pd.DataFrame({"event_time": 200 + np.arange(200.0), "a": a[200:], "label": (a[200:] > 0) * 1.0}))
    report = TrainerReport.model_validate(core.stats())
    assert report.rows_seen == 400 and report.live_version == core.champion_version
    assert [r.version for r in report.refits] == [r["version"] for r in core.stats()["refits"]]
    assert report.refits[0].candidate.accuracy > 0.8 and report.refit_reasons() == {"volume": len(report.refits)}
    assert RefitResult.model_validate({"version": None, "attempt": None}).version is None


# -- the renderers ---------------------------------------------------------------------------


def test_traffic_table_shows_slots_weights_rollout_and_figures():
    text = _text(traffic_table(TrafficStatus.model_validate(controller_status())))
    assert "revision 9, flips 2" in text and "rollout v2 → green: baking at 25% (step 2/4)" in text
    blue = next(line for line in text.splitlines() if "│ blue" in line)
    assert "75" in blue and "●" in blue and "30" in blue
    green = next(line for line in text.splitlines() if "│ green" in line)
    assert "0.800 (n=5)" in green
    # a control command's answer (the serving state alone) renders too
    state = {k: controller_status()[k] for k in ("slots", "weights", "revision", "live_slot", "flips")}
    assert "flips 2" in _text(traffic_table(TrafficStatus.model_validate(state)))
    assert replica_lines(TrafficStatus.model_validate(controller_status())) == ["replica abc: holds blue v1, green v2"]


def test_status_page_renders_the_same_model():
    data = StatusPageData(traffic=TrafficStatus.model_validate(controller_status()), fields=["x0"],
                          versions=[{"version": 2, "aliases": ["candidate"], "trigger": "<drift>", "rows": 10}],
                          series=[{"t": 1.0, "psi": {"x0": 0.1, "y": 2.0}}, {"t": 2.0, "psi": {"x0": 0.2}}],
                          drift={"version": 1, "prediction_psi": 0.25, "alarm": "x0 <PSI>"},
                          quality={"accepted": 9, "rejected": 3, "reasons": {"missing:x2": 3}})
    page = render(data)
    assert 'id="live-version">v1<' in page and "blue 75% / green 25%" in page
    assert "v2 → green: baking at 25%" in page and "<b>25%</b>" in page
    assert "accuracy 0.700 vs live 0.900" in page and 'class="bad"' in page
    assert "&lt;drift&gt;" in page and "x0 &lt;PSI&gt;" in page  # producer text is escaped
    assert "missing:x2: 3" in page and "prediction PSI 0.25" in page
    assert "v1: <b>promoted</b>" in page
    assert "0.800 (n=5)" in page  # the green slot's live accuracy
    none = render(StatusPageData(traffic=TrafficStatus.model_validate(controller_status(rollout=False))))
    assert "none yet" in none and "no data yet" in none


def test_demo_live_view_and_summary_from_plane_stats():
    cfg = TrainerConfig(refit_every_rows=200, num_boost_round=3, drift_detector=None, min_rows_between=0)
    core = TrainerCore(cfg, ["a"], None)
    a = np.random.default_rng(1).normal(size=200)
    core.add_rows(pd.DataFrame({"event_time": np.arange(200.0), "a": a, "label": (a > 0) * 1.0}))
    stats = PlaneStats.model_validate({
        "coordinator": {"position": 12, "events": 12000, "accepted": 11900, "rejected": 100,
                        "reasons": {"missing:x2": 100}, "null_rate": {"x2": 0.01}, "per_shard_accepted": [6000, 5900],
                        "training_rows": 9000, "watermark_lag_s": 1.5, "batch_id": 12, "running": True},
        "trainer": core.stats(), "traffic": controller_status(), "live_accuracy": _per_version(),
        "drift": {"psi": {"x0": 0.1}, "alarm": None}})
    text = _text(live_view(stats, {"served": 1234, "failed": 0}, Schedule(30, 1, 300).title(12.0)))
    assert "12s · until 1 flip after 30s, max 300s" in text
    assert "12,000" in text and "missing:x2: 100" in text and "1,234 (0) / 0" in text  # served (raw events) / failed
    assert "no scored event has its label yet" in text  # the skew line, before any comparison
    assert "revision 9, flips 2" in text  # the same traffic table as `streamfit status`
    summary = summarize(stats, {"served": 1234, "failed": 0})
    assert summary["traffic_flips"] == 2 and summary["live_version"] == 1 and summary["versions_trained"] == 1
    assert summary["rollouts_promoted"] == 1 and summary["refit_reasons"] == {"volume": 1}
    assert summary["live_accuracy_by_version"]["2"]["labelled"] == 5
    json.dumps(summary)  # plain data for --summary-json


def test_demo_schedule_waits_for_the_flips_within_its_bound():
    plain = Schedule(45)
    assert plain.bound_s == 45 and not plain.done(100, flips=5)  # a plain run just ends at its duration
    s = Schedule(20, until_flips=2, max_duration_s=240)
    assert s.bound_s == 240
    assert not s.done(10, flips=2) and not s.done(100, flips=1) and s.done(100, flips=2)
    assert Schedule(300, until_flips=1, max_duration_s=60).bound_s == 300  # never shorter than --duration


# -- the typed API responses -----------------------------------------------------------------


class FakeBackend(Backend):
    def __init__(self, fail: str | None = None):
        self.fail = fail

    async def traffic(self):
        return TrafficStatus.model_validate(controller_status())

    async def monitor(self):
        return MonitorReport.from_monitor({"drift": {"psi": {"x0": 0.3}}, "per_version": _per_version(),
                                           "refit_requests": []}, [{"t": 1.0, "quality": {"rejected": 2}}])

    async def control(self, command, **kwargs):
        if self.fail:
            raise ValueError(self.fail)
        if command in ("start_rollout", "promote", "abort"):
            return controller_status()["rollout"]
        return {k: v for k, v in controller_status().items() if k in ServingView.model_fields}


def _api(fail: str | None = None) -> TestClient:
    return TestClient(build_api(RouterCore(["a"]), FakeBackend(fail), admin_token="t"))


AUTH = {"Authorization": "Bearer t"}


def test_status_routes_answer_the_typed_models():
    client = _api()
    t = client.get("/traffic").json()
    assert TrafficStatus.model_validate(t).rollout.results[0].weight == 25
    assert t["live_accuracy"]["2"]["source"] == "served" and t["added_later"] == {"x": 1}
    m = client.get("/monitor").json()
    assert m["quality"] == {"rejected": 2} and m["live_accuracy"]["2"]["labelled"] == 5
    r = client.post("/rollout", json={"version": 2}, headers=AUTH)
    assert r.status_code == 200 and Rollout.model_validate(r.json()).slot is Slot.GREEN
    assert client.put("/traffic", json={"green": 25}, headers=AUTH).json()["weights"] == {"blue": 75, "green": 25}
    assert client.post("/rollback", headers=AUTH).json()["live_slot"] == "blue"
    refused = _api(fail="no rollout in progress").post("/rollout/abort", headers=AUTH)
    assert refused.status_code == 409 and refused.json()["detail"] == "no rollout in progress"


def test_openapi_documents_the_status_models_and_the_bearer_token():
    spec = _api().get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"TrafficStatus", "MonitorReport", "Rollout", "ServingView", "RefitResult"} <= set(schemas)
    assert {"slots", "weights", "live_slot", "flips", "revision"} <= set(schemas["TrafficStatus"]["required"])
    ok = spec["paths"]["/traffic"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/TrafficStatus")
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())
    assert spec["paths"]["/retrain"]["post"]["security"]
    assert Accuracy.model_json_schema()["required"] == ["labelled", "accuracy"]


def test_cli_status_and_traffic_set_render_the_typed_answers(monkeypatch):
    from typer.testing import CliRunner

    from streamfit.scripts import cli, control

    state = {k: v for k, v in controller_status().items() if k in ServingView.model_fields}
    answers = {("GET", "/traffic"): controller_status(), ("GET", "/monitor"): {"drift": {"alarm": "x1 PSI 0.60 > 0.5"}},
               ("PUT", "/traffic"): state, ("POST", "/rollout/promote"): {"slots": "not a rollout"}}
    monkeypatch.setattr(control.ControlClient, "_request", lambda self, method, path, **kw: answers[method, path])
    monkeypatch.setattr(cli, "console", Console(width=160, file=io.StringIO(), record=True))
    runner = CliRunner()
    assert runner.invoke(cli.app, ["status"]).exit_code == 0
    out = cli.console.export_text()
    assert "rollout v2 → green: baking at 25%" in out and "replica abc: holds blue v1, green v2" in out
    assert "x1 PSI 0.60 > 0.5" in out
    monkeypatch.setenv("STREAMFIT_ADMIN_TOKEN", "t")
    assert runner.invoke(cli.app, ["traffic", "set", "--green", "25"]).exit_code == 0
    assert "revision 9, flips 2" in cli.console.export_text()
    wrong = runner.invoke(cli.app, ["rollout", "promote"])  # an answer of another shape: a clear error, exit 1
    assert wrong.exit_code == 1 and "unexpected answer from the API" in cli.console.export_text()


def test_freshness_on_the_status_page_the_monitor_report_and_the_demo_summary():
    from streamfit.scripts.demo import summary_table

    point = {"t": 2.0, "freshness": {"served_accuracy": 0.81, "served_accuracy_recent": 0.76, "labelled": 4210,
                                     "stale_share": 0.06, "stale_share_recent": 0.1, "requests": 5000,
                                     "detected_changes": 3, "p50_s": 21.0, "max_s": 48.0}}
    page = render(StatusPageData(traffic=TrafficStatus.model_validate(controller_status()), series=[point]))
    assert 'id="freshness"' in page and "served 0.810 (n=4,210; 0.760 recent) · stale 6.0%" in page
    assert "p50 21 s, max 48 s (3 detected changes)" in page and page.count('class="chart"') == 5
    report = MonitorReport.from_monitor({"freshness": {**point["freshness"], "changes": [
        {"start": 100.0, "wall": 1000.0, "seconds": 21.0, "reached": True, "version": 4}]}}, [])
    assert report.freshness.changes[0].version == 4 and "stale 6.0%" in _text(quality_table(report))
    summary = {k: 0 for k in ("events_ingested", "rows_rejected", "versions_trained", "traffic_flips",
                              "rollouts_promoted", "rollouts_rolled_back", "rollouts_superseded", "gate_rejections",
                              "live_version", "requests_served", "requests_served_raw", "requests_failed")}
    summary.update(skew={"text": "-"}, refit_reasons={}, live_accuracy_by_version={}, served_accuracy=0.62,
                   offline_accuracy=0.8, accuracy_gap=-0.18, stale_share=0.4, freshness={"p50_s": 20.0, "max_s": 30.0,
                   "changes": [{"reached": True}, {"reached": False}]})
    text = _text(summary_table(summary))
    assert "62.0 %" in text and "80.0 %" in text and "-18.0 points" in text and "40.0 %" in text
    assert "p50 20 s, max 30 s over 2 changes (1 not reached)" in text
