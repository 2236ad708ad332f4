"""The Grafana dashboard: every query names a metric the system exports, and the panels an operator
needs are there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import ray

from streamfit.actors.monitoring import prometheus_names
from streamfit.actors.monitoring.metrics_export import SERVE_METRICS

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "cluster" / "grafana" / "streamfit-dashboard.json"
SERVE_SOURCE = Path(ray.__file__).parent / "serve" / "_private"
METRIC = re.compile(r"\bray_[A-Za-z0-9_]+")


def serve_exports(name: str) -> bool:
    """Ray Serve defines the metric (ray_serve_x_total / _bucket come from "serve_x")."""
    base = re.sub(r"_(total|bucket|sum|count)$", "", name[len("ray_"):])
    return any(f'"{base}"' in p.read_text() for p in SERVE_SOURCE.glob("*.py"))


def queried_metrics(dashboard: dict) -> list[str]:
    return [m for p in dashboard["panels"] for t in p["targets"] for m in METRIC.findall(t["expr"])]


def exported(name: str) -> bool:
    """The monitor's metrics and streamfit's Serve replicas' (both in ``prometheus_names()``), or Ray Serve's."""
    return name in prometheus_names() or (name.startswith("ray_serve_") and serve_exports(name))


def test_the_metrics_declared_as_serve_counted_are_made_in_serve():
    """``SERVE_METRICS`` are listed as exported: the Serve code must make them (``serve_metrics()``, or by name)."""
    source = "".join(p.read_text() for p in (ROOT / "serve").glob("*.py") if p.name != "status_page.py")
    made = "serve_metrics(" in source
    missing = [name for key, _, name, _, _ in SERVE_METRICS
               if f'"{name}"' not in source and not (made and f'"{key}"' in source)]
    assert not missing, missing


def test_every_query_names_an_exported_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    names = queried_metrics(dashboard)
    assert len(names) >= 14
    missing = [n for n in names if not exported(n)]
    assert not missing, missing


@pytest.mark.parametrize("typo", ["ray_streamfit_events_ingested", "ray_streamfit_feature_pis",
                                  "ray_serve_deployment_request_countr_total"])
def test_a_misspelled_metric_is_caught(typo):
    assert not exported(typo)


def test_the_panels_an_operator_needs_are_there():
    titles = " | ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for needed in ("ingest rate", "rejected", "watermark lag", "drift", "live accuracy by version",
                   "traffic split", "requests per slot", "latency", "errors per slot"):
        assert needed in titles, needed
