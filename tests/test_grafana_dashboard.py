"""The Grafana dashboard: every query names a metric the system exports, and the panels an operator
needs are there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import ray

from streamfit.actors.monitoring import prometheus_names

DASHBOARD = Path(__file__).resolve().parents[1] / "cluster" / "grafana" / "streamfit-dashboard.json"
SERVE_SOURCE = Path(ray.__file__).parent / "serve" / "_private"
METRIC = re.compile(r"\bray_[A-Za-z0-9_]+")


def serve_exports(name: str) -> bool:
    """Ray Serve defines the metric (ray_serve_x_total / _bucket come from "serve_x")."""
    base = re.sub(r"_(total|bucket|sum|count)$", "", name[len("ray_"):])
    return any(f'"{base}"' in p.read_text() for p in SERVE_SOURCE.glob("*.py"))


def queried_metrics(dashboard: dict) -> list[str]:
    return [m for p in dashboard["panels"] for t in p["targets"] for m in METRIC.findall(t["expr"])]


def exported(name: str) -> bool:
    return name in prometheus_names() or (name.startswith("ray_serve_") and serve_exports(name))


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
