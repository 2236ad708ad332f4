"""The serving/training skew, from the coordinator's stats to everywhere an operator looks: the
sampler and the monitor's report, the Prometheus gauges, the typed ``/monitor`` model, the status
page and the Grafana dashboard. No Ray."""

from __future__ import annotations

import json
import math
from typing import Any

from streamfit.config import MonitorConfig
from streamfit.status import MonitorReport, Skew, StreamStats, TrafficStatus
from streamfit.actors.monitoring import MetricsExport, Monitor, Sampler, prometheus_names
from streamfit.serve.status_page import StatusPageData, render

from test_grafana_dashboard import DASHBOARD, queried_metrics
from test_monitor_core import coord, recorders

TRAFFIC = TrafficStatus.model_validate({"slots": {"blue": 1, "green": None}, "weights": {"blue": 100, "green": 0},
                                        "live_slot": "blue", "flips": 0, "revision": 1})


def skew(compared: int = 200, differing: int = 6) -> dict[str, Any]:
    """The coordinator's ``stats()["skew"]``, in the shape the stream plane reports it (zeros at the start)."""
    def feature(n: int, gap: float) -> dict[str, Any]:
        return {"differing": n, "share": n / compared if compared else 0.0, "max_abs_diff": gap if n else 0.0}

    return {"compared_rows": compared, "rows_differing": differing,
            "features": {"count_5m": feature(differing, 2.0), "x0_mean_5m": feature(min(2, differing), 0.75),
                         "age_s": feature(0, 0.0)}}


def coordinator(events: int, figures: dict[str, Any] | None) -> dict[str, Any]:
    c = coord(events, 0, {}) | {"null_rate": {}}  # the coordinator reports null rates by field
    if figures is not None:
        c["skew"] = figures
    return c


# -- the sampler and the monitor's report -----------------------------------------------------------

def test_the_sampler_picks_the_skew_up_from_the_coordinator_stats():
    s = Sampler(points=5)
    first = s.take(1.0, coordinator(100, skew(0, 0)))
    assert first.skew == skew(0, 0) and first.point["skew"]["features"] == {}  # present from the start, zeros
    second = s.take(2.0, coordinator(300, skew()))
    assert second.skew == skew() and s.skew == skew()  # the full figures: every feature, for the gauges
    assert second.point["skew"]["compared_rows"] == 200 and second.point["skew"]["rows_differing"] == 6
    assert set(second.point["skew"]["features"]) == {"count_5m", "x0_mean_5m"}  # a point keeps those that differ


def test_a_coordinator_without_skew_leaves_it_out():
    s = Sampler(points=5)
    sample = s.take(1.0, coordinator(100, None))
    assert sample.skew is None and "skew" not in sample.point and s.skew is None
    assert "skew" not in s.take(2.0).point  # no coordinator attached


def test_the_monitor_reports_the_latest_skew():
    mon = Monitor(MonitorConfig())
    assert mon.stats()["skew"] is None  # before the coordinator reported any
    mon.sample(1.0, coordinator=coordinator(100, skew(100, 1)))
    mon.sample(2.0, coordinator=coordinator(200, skew()))
    assert mon.stats()["skew"] == skew()
    report = MonitorReport.from_monitor(mon.stats(), mon.timeseries())
    assert report.skew.compared_rows == 200 and report.skew.features["age_s"].differing == 0


# -- the Prometheus gauges --------------------------------------------------------------------------

def test_the_export_sets_the_skew_gauges():
    metrics = recorders()
    export, s = MetricsExport(metrics), Sampler(points=5)
    export.export(s.take(0.0, coordinator(100, None)))
    assert all(metrics[k].calls == [] for k in ("skew_rows", "skew_rows_differing", "skew_share", "skew_max_abs_diff"))
    export.export(s.take(1.0, coordinator(200, skew())))
    assert metrics["skew_rows"].calls == [("set", 200, None)]
    assert metrics["skew_rows_differing"].calls == [("set", 6, None)]
    assert metrics["skew_share"].calls == [("set", 0.03, {"feature": "count_5m"}),
                                           ("set", 0.01, {"feature": "x0_mean_5m"}),
                                           ("set", 0.0, {"feature": "age_s"})]  # every feature, zeros included
    assert metrics["skew_max_abs_diff"].calls == [("set", 2.0, {"feature": "count_5m"}),
                                                  ("set", 0.75, {"feature": "x0_mean_5m"}),
                                                  ("set", 0.0, {"feature": "age_s"})]


def test_the_skew_and_lookup_metrics_have_their_prometheus_names():
    names = prometheus_names()
    assert {"ray_streamfit_skew_rows_compared", "ray_streamfit_skew_rows_differing", "ray_streamfit_skew_share",
            "ray_streamfit_skew_max_abs_diff", "ray_streamfit_lookup_unavailable_total"} <= names


# -- the typed model --------------------------------------------------------------------------------

def test_the_status_models_parse_the_skew_and_tolerate_its_absence():
    m = MonitorReport.from_monitor({"drift": {}, "per_version": {}, "refit_requests": [], "skew": skew()}, [])
    assert m.skew.share == 0.03 and m.skew.worst()[0] == "count_5m"
    assert m.skew.text() == "200 rows compared · 3.0% differ · worst count_5m: 3.0% of rows, max |Δ| 2"
    assert MonitorReport.from_monitor({"drift": {}}, []).skew is None  # an older monitor: no skew key
    assert MonitorReport.model_validate({}).skew is None
    empty = Skew.model_validate(skew(0, 0) | {"features": {}})
    assert empty.share is None and empty.worst() is None and empty.text() == "no scored event has its label yet"
    nothing = Skew.model_validate(skew(50, 0) | {"features": {"a": {"differing": 0, "share": 0.0,
                                                                        "max_abs_diff": 0.0}}})
    assert nothing.worst() is None and nothing.text() == "50 rows compared · 0.0% differ"
    inf = MonitorReport.model_validate({"skew": skew() | {"features": {"a": {"differing": 1, "share": 0.5,
                                                                             "max_abs_diff": math.inf}}}})
    again = MonitorReport.model_validate_json(inf.model_dump_json())  # a non-finite gap survives JSON
    assert again.skew.features["a"].max_abs_diff == math.inf
    assert StreamStats.model_validate({"skew": skew()}).skew.rows_differing == 6
    assert StreamStats.model_validate({}).skew is None


# -- the status page --------------------------------------------------------------------------------

def test_the_status_page_renders_the_skew_line_and_its_worst_features():
    data = StatusPageData(traffic=TRAFFIC, skew=skew())
    page = render(data)
    assert 'id="skew"' in page
    assert "200 rows compared · 3.0% differ · worst count_5m: 3.0% of rows, max |Δ| 2" in page
    table = page[page.index('id="skew"'):]
    assert table.index("count_5m") < table.index("x0_mean_5m") and "age_s" not in table  # the ones that differ
    assert "<td>0.750</td>" in table


def test_the_status_page_takes_the_newest_skew_of_the_series_or_says_none():
    series = [{"t": 1.0, "skew": skew(100, 1)}, {"t": 2.0, "skew": skew()}, {"t": 3.0}]
    data = StatusPageData(traffic=TRAFFIC, series=series)
    assert data.skew.compared_rows == 200  # what the backend builds today: the series only
    assert "200 rows compared" in render(data)
    none = render(StatusPageData(traffic=TRAFFIC))
    assert "serving/training skew: not reported" in none


# -- the Grafana dashboard --------------------------------------------------------------------------

def test_the_dashboard_shows_the_skew_and_the_lookups_unavailable():
    dashboard = json.loads(DASHBOARD.read_text())
    names = set(queried_metrics(dashboard))
    assert {"ray_streamfit_skew_share", "ray_streamfit_skew_max_abs_diff", "ray_streamfit_skew_rows_compared",
            "ray_streamfit_lookup_unavailable_total"} <= names
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    assert "skew" in titles and "lookups unavailable" in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
