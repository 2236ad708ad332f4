"""The Prometheus metrics: which figure of a sample goes to which metric, with which tags.

Exported through ``ray.util.metrics``, so Prometheus sees counters as ``ray_<name>_total`` and
gauges as ``ray_<name>`` on Ray's metrics-export port. ``MetricsExport`` takes any mapping of
metric objects with ``inc(value, tags)`` / ``set(value, tags)``: the actor passes Ray's
(``ray_metrics()``), the unit tests a recorder.

``SERVE_METRICS`` are counted where they happen, in the Serve replicas, not from a sample:
``serve_metrics()`` makes them there. They are declared here so that ``prometheus_names()``
lists every name streamfit exports (the Grafana dashboard's queries are checked against it).

Example:
    >>> sorted(prometheus_names())[:2]
    ['ray_streamfit_actor_unavailable_total', 'ray_streamfit_auth_failures_total']
    >>> "ray_streamfit_lookup_unavailable_total" in prometheus_names()
    True
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping

from streamfit.actors.monitoring.sampler import Sample

# (key, kind, name, description, tag keys)
METRICS: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    ("events", "counter", "streamfit_events_ingested", "events applied by the shards", ()),
    ("accepted", "counter", "streamfit_rows_accepted", "rows accepted by the shards", ()),
    ("rejected", "counter", "streamfit_rows_rejected", "rows rejected, by reason", ("reason",)),
    ("watermark_lag", "gauge", "streamfit_watermark_lag_seconds", "stream clock minus watermark (event time)", ()),
    ("requests", "counter", "streamfit_requests", "requests served, by slot and version", ("slot", "version")),
    ("errors", "counter", "streamfit_request_errors", "failed requests, by slot and version", ("slot", "version")),
    ("p50", "gauge", "streamfit_request_latency_p50_ms", "model latency p50 over the last interval", ("slot",)),
    ("p99", "gauge", "streamfit_request_latency_p99_ms", "model latency p99 over the last interval", ("slot",)),
    ("weight", "gauge", "streamfit_traffic_weight_percent", "traffic weight of each slot", ("slot",)),
    ("slot_version", "gauge", "streamfit_slot_version", "version held by each slot", ("slot",)),
    ("accuracy", "gauge", "streamfit_live_accuracy", "live accuracy on labelled rows, by version", ("version",)),
    ("served_accuracy", "gauge", "streamfit_served_accuracy", "accuracy of served predictions whose labels arrived",
     ("version",)),
    ("request_accuracy", "gauge", "streamfit_request_weighted_accuracy",
     "accuracy of the answers returned to requests whose labels arrived, request-weighted (window: all, recent)",
     ("window",)),
    ("stale_share", "gauge", "streamfit_stale_share", "share of requests answered by a version trained only on rows "
     "before the current concept began, estimated by the newest drift refit (window: all, recent)", ("window",)),
    ("seconds_to_full", "gauge", "streamfit_seconds_to_full_traffic", "seconds from a detected concept change (a drift "
     "refit) to a version trained after it serving 100 %, over the detected changes (stat: p50, max, last)",
     ("stat",)),
    ("quality", "gauge", "streamfit_live_quality", "live quality of each version on labelled rows in the task's "
     "metrics (accuracy, logloss, auc; rmse, mae, pinball), on served requests or on the stream",
     ("version", "metric", "source")),
    ("psi", "gauge", "streamfit_feature_psi", "PSI of each feature against the live reference", ("feature",)),
    ("prediction_psi", "gauge", "streamfit_prediction_psi", "PSI of the live version's scores (its predicted values; "
     "multiclass: its predicted class mix)", ()),
    ("prediction_shift_p", "gauge", "streamfit_prediction_shift_p", "chi-square p-value of the live version's "
     "predicted class mix against its training shares (multiclass)", ()),
    ("mean_error", "gauge", "streamfit_live_mean_error", "mean per-row error of the live version the error drift "
     "detector watches (multiclass: 0/1; regression: absolute error in holdout MAEs)", ()),
    ("alarm", "gauge", "streamfit_drift_alarm", "1 while a drift alarm is raised", ()),
    ("refits", "gauge", "streamfit_refits", "refits so far, by reason", ("reason",)),
    ("skew_rows", "gauge", "streamfit_skew_rows_compared",
     "labelled scored events whose served vector was compared with the point-in-time one", ()),
    ("skew_rows_differing", "gauge", "streamfit_skew_rows_differing",
     "compared events whose served vector differed in any feature", ()),
    ("skew_share", "gauge", "streamfit_skew_share", "share of compared events whose served value differed, by feature",
     ("feature",)),
    ("skew_max_abs_diff", "gauge", "streamfit_skew_max_abs_diff",
     "largest |served - point-in-time| difference, by feature", ("feature",)),
]

QUALITY_METRICS = ("accuracy", "logloss", "auc", "rmse", "mae", "pinball")  # whichever a version's task reports

SERVE_METRICS: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    ("lookup_unavailable", "counter", "streamfit_lookup_unavailable",
     "raw-event requests answered 503: a feature shard was slow or restarting", ("shard",)),
    ("auth_failures", "counter", "streamfit_auth_failures",
     "requests refused for their token, by the scope they needed and why (missing, wrong, scope)", ("scope", "reason")),
    ("actor_unavailable", "counter", "streamfit_actor_unavailable",
     "requests answered 503: an actor of another plane was slow, not running or restarting", ("actor",)),
    ("ingest_refused_rows", "counter", "streamfit_ingest_refused_rows",
     "rows refused with 429: the ingest buffer was full (the client retries after Retry-After)", ()),
    ("unseen_category", "counter", "streamfit_unseen_categories",
     "categorical values a version never saw at training time, scored as missing, by field", ("field",)),
]


def prometheus_names() -> set[str]:
    """The names these metrics (the monitor's and the Serve replicas') have in Prometheus' text format."""
    return {f"ray_{name}_total" if kind == "counter" else f"ray_{name}"
            for _, kind, name, _, _ in METRICS + SERVE_METRICS}


def ray_metrics(table: list[tuple[str, str, str, str, tuple[str, ...]]] = METRICS) -> dict[str, Any]:
    """The metrics of ``table`` as ``ray.util.metrics`` objects (inside a Ray worker), by key."""
    from ray.util import metrics as m

    kinds = {"counter": m.Counter, "gauge": m.Gauge}
    return {key: kinds[kind](name, desc, tags or None) for key, kind, name, desc, tags in table}


def serve_metrics() -> dict[str, Any]:
    """The metrics a Serve replica counts (``SERVE_METRICS``) as ``ray.util.metrics`` objects, by key."""
    return ray_metrics(SERVE_METRICS)


class MetricsExport:
    """Maps each sample's figures onto the metrics."""

    def __init__(self, metrics: Mapping[str, Any]) -> None:
        self.metrics = metrics

    def _inc(self, key: str, value: float, tags: dict[str, str] | None = None) -> None:
        if value > 0:  # ray.util.metrics counters refuse 0 (and a restarted plane's counters start again)
            self.metrics[key].inc(value, tags)

    def _set(self, key: str, value: float, tags: dict[str, str] | None = None) -> None:
        self.metrics[key].set(value, tags)

    def export(self, sample: Sample) -> None:
        """Move the counters by what moved since the last sample, and set the gauges to this sample's figures."""
        if sample.coordinator is not None:
            self._stream(sample)
        if sample.control is not None:
            self._slots(sample)
        for f, value in sample.drift["psi"].items():
            self._set("psi", value, {"feature": f})
        if sample.drift.get("prediction_psi") is not None:
            self._set("prediction_psi", sample.drift["prediction_psi"])
        self._set("alarm", 1.0 if sample.drift.get("alarm") else 0.0)
        for key, source, by_version in (("accuracy", "stream", sample.stream_accuracy),
                                        ("served_accuracy", "served", sample.served_accuracy)):
            for v, a in by_version.items():
                if "accuracy" in a:  # a regression version has none
                    self._set(key, a["accuracy"], {"version": str(v)})
                for metric in QUALITY_METRICS:
                    if a.get(metric) is not None and math.isfinite(a[metric]):
                        self._set("quality", a[metric], {"version": str(v), "metric": metric, "source": source})
        self._task_drift(sample.drift)
        counts = sample.refit_counts  # the trainer's totals; its refit list holds only the newest
        for reason, n in (counts if counts is not None else Counter(r["reason"] for r in sample.refits or ())).items():
            self._set("refits", n, {"reason": reason})
        if sample.freshness is not None:
            self._freshness(sample.freshness)

    def _task_drift(self, drift: dict[str, Any]) -> None:
        """The figures only regression and multiclass monitors report: class-mix chi-square, error drift."""
        if drift.get("prediction_shift_p") is not None:
            self._set("prediction_shift_p", drift["prediction_shift_p"])
        mean_error = (drift.get("error_drift") or {}).get("mean_error")
        if mean_error is not None:
            self._set("mean_error", mean_error)

    def _freshness(self, f: dict[str, Any]) -> None:
        for key, all_, recent in (("request_accuracy", "served_accuracy", "served_accuracy_recent"),
                                  ("stale_share", "stale_share", "stale_share_recent")):
            for window, name in (("all", all_), ("recent", recent)):
                if f.get(name) is not None:
                    self._set(key, f[name], {"window": window})
        last = f["changes"][-1]["seconds"] if f.get("changes") else None
        for stat, value in (("p50", f.get("p50_s")), ("max", f.get("max_s")), ("last", last)):
            if value is not None:
                self._set("seconds_to_full", value, {"stat": stat})

    def _stream(self, sample: Sample) -> None:
        if sample.moved:
            self._inc("events", sample.moved["events"])
            self._inc("accepted", sample.moved["accepted"])
            for reason, n in sample.moved["reasons"].items():
                self._inc("rejected", n, {"reason": reason})
        if sample.coordinator.get("watermark_lag_s") is not None:
            self._set("watermark_lag", sample.coordinator["watermark_lag_s"])
        if sample.skew is not None:
            self._skew(sample.skew)

    def _skew(self, skew: dict[str, Any]) -> None:
        self._set("skew_rows", skew.get("compared_rows", 0))
        self._set("skew_rows_differing", skew.get("rows_differing", 0))
        for f, s in skew.get("features", {}).items():
            self._set("skew_share", s["share"], {"feature": f})
            self._set("skew_max_abs_diff", s["max_abs_diff"], {"feature": f})

    def _slots(self, sample: Sample) -> None:
        st = sample.control
        for slot in st["slot_stats"]:
            self._set("weight", st["weights"][slot], {"slot": slot})
            if st["slots"].get(slot) is not None:
                self._set("slot_version", st["slots"][slot], {"slot": slot})
            s = sample.slots.get(slot)
            if s is None:
                continue
            tags = {"slot": slot, "version": str(st["slots"].get(slot))}
            self._inc("requests", s["requests"], tags)
            self._inc("errors", s["errors"], tags)
            if s["p50_ms"] is not None:
                self._set("p50", s["p50_ms"], {"slot": slot})
                self._set("p99", s["p99_ms"], {"slot": slot})
