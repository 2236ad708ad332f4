"""What the system does, made visible: data quality, drift, live performance per version, time series.

``PredictionLog`` joins served predictions (logged by Router replicas with their event id)
with labels that arrive later, in either order, in bounded memory: accuracy, logloss and AUC
of each version on real requests, which the canary analysis reads per step.

``StreamMonitor`` watches the labelled rows the shards emit: it scores the live version on
them (live accuracy on the stream), computes each feature's PSI (and a KS distance) against
the reference quantiles stored in the live version's metadata, and raises a drift alarm
over the configured threshold. Both are plain classes; ``MonitorActor`` is the named Ray
shell that also samples every plane every few seconds into a time series for the status
page, exports ``ray.util.metrics`` for Prometheus, and can ask the trainer for a refit.

Example:
    >>> log = PredictionLog()
    >>> log.record([("e1", 3, "blue", 0.9, 10.0), ("e2", 3, "blue", 0.2, 11.0)])
    >>> log.labels(["e1", "e2"], [1.0, 1.0], now=12.0)
    2
    >>> log.accuracy_since(3, since=0.0)
    (2, 0.5)
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import Any, Iterable

import numpy as np
import pandas as pd
import ray

from streamfit.config import MonitorConfig
from streamfit.registry import Registry
from streamfit.psi import psi
from streamfit.metrics import binary_metrics



class PredictionLog:
    """Predictions waiting for labels (and labels waiting for predictions), and per-version outcomes."""

    def __init__(self, capacity: int = 200_000, window: int = 5000) -> None:
        self.capacity = capacity
        self.window = window
        self.waiting: OrderedDict[str, tuple[int, str, float, float]] = OrderedDict()
        self.early_labels: OrderedDict[str, float] = OrderedDict()
        self.outcomes: dict[int, deque[tuple[float, float, float]]] = {}  # version -> (time, prob, label)
        self.predictions_logged = 0
        self.joined = 0

    def record(self, rows: Iterable[tuple[str, int, str, float, float]]) -> None:
        """Log predictions: (event_id, version, slot, probability, time)."""
        for event_id, version, slot, prob, t in rows:
            self.predictions_logged += 1
            label = self.early_labels.pop(event_id, None)
            if label is not None:
                self._outcome(version, t, prob, label)
                continue
            self.waiting[event_id] = (int(version), slot, float(prob), float(t))
            if len(self.waiting) > self.capacity:
                self.waiting.popitem(last=False)

    def labels(self, event_ids: Iterable[str], labels: Iterable[float], now: float | None = None) -> int:
        """Labels that arrived; returns how many matched a logged prediction."""
        now = time.time() if now is None else now
        matched = 0
        for event_id, label in zip(event_ids, labels):
            hit = self.waiting.pop(event_id, None)
            if hit is None:
                self.early_labels[event_id] = float(label)
                if len(self.early_labels) > self.capacity:
                    self.early_labels.popitem(last=False)
                continue
            version, _, prob, _ = hit
            self._outcome(version, now, prob, float(label))
            matched += 1
        return matched

    def _outcome(self, version: int, t: float, prob: float, label: float) -> None:
        self.joined += 1
        self.outcomes.setdefault(version, deque(maxlen=self.window)).append((t, prob, label))

    def accuracy_since(self, version: int, since: float) -> tuple[int, float] | None:
        """(labelled predictions, accuracy) of ``version`` joined at or after ``since``; None if none."""
        rows = [(p, y) for t, p, y in self.outcomes.get(version, ()) if t >= since]
        if not rows:
            return None
        p, y = np.array(rows).T
        return len(rows), float(((p >= 0.5) == (y >= 0.5)).mean())

    def per_version(self) -> dict[int, dict[str, Any]]:
        """Accuracy, logloss, AUC and labelled count of each version over the sliding window."""
        out = {}
        for version, rows in self.outcomes.items():
            if rows:
                _, p, y = np.array(list(rows)).T
                out[version] = {"labelled": len(rows), **_scores(y, p)}
        return out


def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    m = binary_metrics(y, p)
    return {"accuracy": m["accuracy"], "logloss": m["logloss"], "auc": m["auc"]}


def ks_distance(edges: list[float], values: np.ndarray) -> float:
    """Largest gap between the live CDF and the reference CDF known at its quantile edges (for
    discrete features, where PSI's quantile bins collapse)."""
    v = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    if not len(v) or len(edges) < 2:
        return 0.0
    grid = np.linspace(0, 1, len(edges))
    live = np.searchsorted(v, np.asarray(edges, dtype=float), side="right") / len(v)
    return float(np.max(np.abs(live - grid)))


class StreamMonitor:
    """Drift and live accuracy of the live version on the labelled rows of the stream."""

    def __init__(self, cfg: MonitorConfig, feature_names: list[str], fields: list[str] | None = None) -> None:
        self.cfg = cfg
        self.feature_names = feature_names
        self.alarm_features = set(feature_names if cfg.alarm_on == "all" or fields is None else fields)
        self.window: deque[pd.DataFrame] = deque()
        self.window_rows = 0
        self.version: int | None = None
        self.booster: Any = None
        self.reference: dict[str, list[float]] = {}
        self.reference_prediction: list[float] = []
        self.outcomes: dict[int, deque[tuple[float, float]]] = {}
        self.alarm: str | None = None

    def set_live(self, version: int, booster: Any, meta: dict[str, Any]) -> None:
        """The live version changed: measure against its reference from now on."""
        self.version, self.booster = version, booster
        self.reference = meta.get("reference", {})
        self.reference_prediction = meta.get("reference_prediction", [])
        self.window.clear()
        self.window_rows = 0
        self.alarm = None

    def observe(self, rows: pd.DataFrame) -> None:
        """Labelled rows (features as of each event, and the label)."""
        if rows is None or not len(rows):
            return
        self.window.append(rows)
        self.window_rows += len(rows)
        while self.window_rows - len(self.window[0]) >= self.cfg.window_rows:
            self.window_rows -= len(self.window.popleft())
        if self.booster is not None:
            p = np.asarray(self.booster.inplace_predict(rows[self.feature_names].to_numpy(dtype=float)), dtype=float)
            out = self.outcomes.setdefault(self.version, deque(maxlen=self.cfg.window_rows))
            out.extend(zip(p.tolist(), rows["label"].astype(float).tolist()))

    def frame(self) -> pd.DataFrame:
        """The rows in the window."""
        return pd.concat(list(self.window), ignore_index=True) if self.window else pd.DataFrame()

    def drift(self) -> dict[str, Any]:
        """PSI and KS distance per feature and PSI of the live version's scores, against its reference."""
        frame = self.frame()
        if not len(frame) or not self.reference or len(frame) < self.cfg.min_rows:
            return {"psi": {}, "ks": {}, "prediction_psi": None, "rows": len(frame), "version": self.version}
        out = {"psi": {}, "ks": {}, "rows": len(frame), "version": self.version}
        for f, edges in self.reference.items():
            if f in frame:
                out["psi"][f] = psi(edges, frame[f].to_numpy())
                out["ks"][f] = ks_distance(edges, frame[f].to_numpy())
        out["prediction_psi"] = None
        if self.booster is not None and self.reference_prediction:
            scores = self.booster.inplace_predict(frame[self.feature_names].to_numpy(dtype=float))
            out["prediction_psi"] = psi(self.reference_prediction, np.asarray(scores, dtype=float))
        watched = {f: v for f, v in out["psi"].items() if f in self.alarm_features}
        worst = max(watched.items(), key=lambda kv: kv[1], default=(None, 0.0))
        if worst[0] is not None and worst[1] > self.cfg.psi_alarm:
            self.alarm = f"{worst[0]} PSI {worst[1]:.2f} > {self.cfg.psi_alarm}"
        out["alarm"] = self.alarm
        return out

    def live_accuracy(self) -> dict[int, dict[str, Any]]:
        """Each version's accuracy, logloss and AUC on the stream's labelled rows while it was live."""
        out = {}
        for version, rows in self.outcomes.items():
            if rows:
                p, y = np.array(list(rows)).T
                out[version] = {"labelled": len(rows), **_scores(y, p)}
        return out


def _inc(counter: Any, value: float, tags: dict[str, str] | None = None) -> None:
    if value > 0:  # ray.util.metrics counters refuse 0
        counter.inc(value, tags)


# (key, kind, name, description, tag keys): exported through ray.util.metrics, so Prometheus sees
# counters as ray_<name>_total and gauges as ray_<name> on Ray's metrics-export port.
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
    ("psi", "gauge", "streamfit_feature_psi", "PSI of each feature against the live reference", ("feature",)),
    ("prediction_psi", "gauge", "streamfit_prediction_psi", "PSI of the live version's scores", ()),
    ("alarm", "gauge", "streamfit_drift_alarm", "1 while a drift alarm is raised", ()),
    ("refits", "gauge", "streamfit_refits", "refits so far, by reason", ("reason",)),
]


def prometheus_names() -> set[str]:
    """The names these metrics have in Prometheus' text format."""
    return {f"ray_{name}_total" if kind == "counter" else f"ray_{name}" for _, kind, name, _, _ in METRICS}


def _metrics() -> dict[str, Any]:
    from ray.util import metrics as m

    kinds = {"counter": m.Counter, "gauge": m.Gauge}
    return {key: kinds[kind](name, desc, tags or None) for key, kind, name, desc, tags in METRICS}


@ray.remote(num_cpus=0, max_restarts=-1)
class MonitorActor:
    """Named actor: prediction log, stream monitor, time series, Prometheus metrics, drift alarm."""

    def __init__(self, cfg: dict[str, Any] | None = None, registry_uri: str | None = None,
                 feature_names: list[str] | None = None, fields: list[str] | None = None) -> None:
        self.cfg = MonitorConfig.model_validate(cfg or {})
        self.log = PredictionLog()
        self.registry = Registry(registry_uri) if registry_uri else None
        self.stream = StreamMonitor(self.cfg, feature_names or [], fields)
        self.series: deque[dict[str, Any]] = deque(maxlen=self.cfg.series_points)
        self.planes: dict[str, Any] = {}
        self.metrics = _metrics()
        self._last: dict[str, Any] = {}
        self._last_refit_request = 0.0
        self.refit_requests: list[dict[str, Any]] = []
        self._task = asyncio.get_event_loop().create_task(self._sample_forever())

    def attach(self, **handles: Any) -> None:
        """Handles of the planes to sample: coordinator, controller, trainer."""
        self.planes.update(handles)

    # -- inputs ------------------------------------------------------------------------
    def record(self, rows: list[tuple[str, int, str, float, float]]) -> None:
        self.log.record(rows)

    def labels(self, event_ids: list[str], labels: list[float]) -> int:
        return self.log.labels(event_ids, labels)

    def observe_rows(self, rows: pd.DataFrame) -> None:
        """Labelled rows from the coordinator: labels for the prediction log, rows for drift and accuracy."""
        self.log.labels(rows["event_id"].astype(str).tolist(), rows["label"].astype(float).tolist())
        self._follow_live()
        self.stream.observe(rows)

    def _follow_live(self) -> None:
        if self.registry is None:
            return
        now = time.time()
        if now - self._last.get("alias_checked", 0.0) < 1.0:
            return
        self._last["alias_checked"] = now
        live = self.registry.aliases().get("live")
        if live is not None and live != self.stream.version:
            booster, meta = self.registry.load(live)
            self.stream.set_live(live, booster, meta)

    # -- outputs -----------------------------------------------------------------------
    def accuracy_since(self, version: int, since: float) -> tuple[int, float] | None:
        return self.log.accuracy_since(version, since)

    def per_version(self) -> dict[int, dict[str, Any]]:
        """Live accuracy per version: on served, labelled requests where there are enough, else on the stream."""
        stream = self.stream.live_accuracy()
        served = self.log.per_version()
        out = {}
        for v in set(stream) | set(served):
            s, st = served.get(v), stream.get(v)
            if s is not None and (s["labelled"] >= 30 or st is None):
                out[v] = {**s, "source": "served"}
            else:
                out[v] = {**st, "source": "stream"}
        return out

    def drift(self) -> dict[str, Any]:
        return self.stream.drift()

    def timeseries(self) -> list[dict[str, Any]]:
        return list(self.series)

    def stats(self) -> dict[str, Any]:
        return {"predictions_logged": self.log.predictions_logged, "joined": self.log.joined,
                "waiting": len(self.log.waiting), "per_version": self.per_version(),
                "stream_accuracy": self.stream.live_accuracy(), "served_accuracy": self.log.per_version(),
                "drift": self.stream.drift(), "refit_requests": list(self.refit_requests),
                "last_error": self._last.get("error")}

    # -- sampling, metrics, alarm ------------------------------------------------------
    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sample_s)
            try:
                await self.sample()
            except Exception as err:  # a plane restarting: the next sample will do
                self._last["error"] = f"{type(err).__name__}: {err}"

    async def sample(self) -> dict[str, Any]:
        """One point of the time series (and the Prometheus metrics), from every plane."""
        now = time.time()
        point: dict[str, Any] = {"t": now}
        coord = self.planes.get("coordinator")
        if coord is not None:
            c = await coord.stats.remote()
            prev = self._last.get("coord")
            dt = now - self._last.get("t", now)
            if prev is not None and dt > 0:
                point["events_per_s"] = (c.get("events", 0) - prev.get("events", 0)) / dt
                point["rejected_per_s"] = (c.get("rejected", 0) - prev.get("rejected", 0)) / dt
                _inc(self.metrics["events"], c.get("events", 0) - prev.get("events", 0))
                _inc(self.metrics["accepted"], c.get("accepted", 0) - prev.get("accepted", 0))
                for reason, n in c.get("reasons", {}).items():
                    delta = n - prev.get("reasons", {}).get(reason, 0)
                    _inc(self.metrics["rejected"], delta, {"reason": reason})
            point["quality"] = {k: c.get(k) for k in ("accepted", "rejected", "events", "reasons", "null_rate",
                                                      "watermark_lag_s")}
            if c.get("watermark_lag_s") is not None:
                self.metrics["watermark_lag"].set(c["watermark_lag_s"])
            self._last["coord"] = c
        ctl = self.planes.get("controller")
        if ctl is not None:
            st = await ctl.status.remote()
            point["weights"] = st["weights"]
            point["slots"] = st["slots"]
            self._slot_metrics(st, point)
        drift = self.stream.drift()
        point["psi"] = drift["psi"]
        point["prediction_psi"] = drift.get("prediction_psi")
        point["accuracy"] = {str(v): a["accuracy"] for v, a in self.per_version().items()}
        for f, value in drift["psi"].items():
            self.metrics["psi"].set(value, {"feature": f})
        if drift.get("prediction_psi") is not None:
            self.metrics["prediction_psi"].set(drift["prediction_psi"])
        self.metrics["alarm"].set(1.0 if drift.get("alarm") else 0.0)
        for v, a in self.stream.live_accuracy().items():
            self.metrics["accuracy"].set(a["accuracy"], {"version": str(v)})
        for v, a in self.log.per_version().items():
            self.metrics["served_accuracy"].set(a["accuracy"], {"version": str(v)})
        trainer = self.planes.get("trainer")
        if trainer is not None:
            refits = (await trainer.stats.remote())["refits"]
            counts: dict[str, int] = {}
            for r in refits:
                counts[r["reason"]] = counts.get(r["reason"], 0) + 1
            for reason, n in counts.items():
                self.metrics["refits"].set(n, {"reason": reason})
            if drift.get("alarm") and self.cfg.alarm_triggers_refit and \
                    now - self._last_refit_request > self.cfg.alarm_cooldown_s:
                self._last_refit_request = now
                out = await trainer.request_refit.remote(f"drift alarm: {drift['alarm']}", "drift")
                self.refit_requests.append({"t": now, "alarm": drift["alarm"], "version": out.get("version")})
        self._last["t"] = now
        self.series.append(point)
        return point

    def _slot_metrics(self, st: dict[str, Any], point: dict[str, Any]) -> None:
        from streamfit.request_stats import minus, summary

        prev = self._last.get("slot_stats")
        point["p50_ms"], point["p99_ms"], point["requests_per_s"] = {}, {}, {}
        for slot, stats in st["slot_stats"].items():
            version = str(st["slots"].get(slot))
            self.metrics["weight"].set(st["weights"][slot], {"slot": slot})
            if st["slots"].get(slot) is not None:
                self.metrics["slot_version"].set(st["slots"][slot], {"slot": slot})
            if prev is None:
                continue
            delta = minus(stats, prev[slot])
            s = summary(delta)
            _inc(self.metrics["requests"], delta["requests"], {"slot": slot, "version": version})
            _inc(self.metrics["errors"], delta["errors"], {"slot": slot, "version": version})
            if s["p50_ms"] is not None:
                self.metrics["p50"].set(s["p50_ms"], {"slot": slot})
                self.metrics["p99"].set(s["p99_ms"], {"slot": slot})
            point["p50_ms"][slot], point["p99_ms"][slot] = s["p50_ms"], s["p99_ms"]
            dt = point["t"] - self._last.get("t", point["t"])
            point["requests_per_s"][slot] = delta["requests"] / dt if dt > 0 else None
        self._last["slot_stats"] = st["slot_stats"]
