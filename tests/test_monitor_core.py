"""The monitoring plane without Ray: the prediction log's join, the stream monitor's drift and accuracy,
the sampler's points and rates, the refit alarm's cooldown, the Prometheus mapping, and the shapes of
the reports ``MonitorActor`` forwards (stats, per_version, drift, timeseries)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from streamfit.config import MonitorConfig
from streamfit.psi import reference_quantiles
from streamfit.request_stats import SlotStats
from streamfit.actors.monitoring import (MetricsExport, Monitor, PredictionLog, RefitAlarm, Sampler, StreamMonitor,
                                         prometheus_names)
from streamfit.actors.monitoring.metrics_export import METRICS, SERVE_METRICS

FEATURES = ["x0", "x1"]


class Booster:
    """Stands in for an XGBoost booster: the probability is a logistic of x0."""

    def inplace_predict(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-4.0 * x[:, 0]))


class Registry:
    """The two registry calls the monitor makes, over one live version."""

    def __init__(self, live: int, meta: dict[str, Any]) -> None:
        self.live, self.meta, self.loads = live, meta, 0

    def aliases(self) -> dict[str, int]:
        return {"live": self.live}

    def load(self, version: int) -> tuple[Any, dict[str, Any]]:
        self.loads += 1
        return Booster(), self.meta


class Recorder:
    """A metric that records what was done to it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict[str, str] | None]] = []

    def inc(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("inc", value, tags))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("set", value, tags))


def rows(n: int, seed: int, shift: float = 0.0, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    return pd.DataFrame({"event_id": [f"e{start + i}" for i in range(n)], "x0": x0 + shift,
                         "x1": rng.normal(size=n), "label": (x0 > 0).astype(float)})


def reference(seed: int = 0) -> dict[str, Any]:
    ref = rows(4000, seed)
    return {"reference": {f: reference_quantiles(ref[f].to_numpy()) for f in FEATURES},
            "reference_prediction": reference_quantiles(Booster().inplace_predict(ref[FEATURES].to_numpy()))}


def stream_monitor(**cfg: Any) -> StreamMonitor:
    mon = StreamMonitor(MonitorConfig(window_rows=1000, min_rows=200, psi_alarm=0.5, **cfg), FEATURES, ["x0"])
    mon.set_live(1, Booster(), reference())
    return mon


# -- the prediction log -----------------------------------------------------------------------------

def test_predictions_and_labels_join_in_either_order():
    log = PredictionLog()
    log.labels(["early"], [1.0], now=1.0)  # the label overtook its prediction
    log.record([("early", 2, "green", 0.9, 2.0), ("late", 2, "green", 0.3, 2.0), ("never", 2, "green", 0.5, 2.0)])
    assert log.labels(["late"], [1.0], now=5.0) == 1
    assert (log.predictions_logged, log.joined, len(log.waiting)) == (3, 2, 1)
    assert log.accuracy_since(2, since=0.0) == (2, 0.5)
    assert log.accuracy_since(2, since=3.0) == (1, 0.0)  # only the label that arrived at 5.0
    assert log.accuracy_since(7, since=0.0) is None
    per = log.per_version()
    assert list(per) == [2] and list(per[2]) == ["labelled", "accuracy", "logloss", "auc"]


def test_the_log_is_bounded():
    log = PredictionLog(capacity=3, window=2)
    log.record([(f"e{i}", 1, "blue", 0.9, float(i)) for i in range(5)])
    assert list(log.waiting) == ["e2", "e3", "e4"]
    log.labels(["e2", "e3", "e4"], [1.0, 1.0, 1.0], now=9.0)
    assert log.per_version()[1]["labelled"] == 2


# -- the stream monitor -----------------------------------------------------------------------------

def test_clean_rows_raise_no_alarm_and_score_the_live_version():
    mon = stream_monitor()
    mon.observe(rows(150, 1))
    assert mon.drift()["psi"] == {} and mon.drift()["prediction_psi"] is None  # under min_rows
    mon.observe(rows(900, 2, start=150))
    d = mon.drift()
    assert set(d) == {"psi", "ks", "rows", "version", "prediction_psi", "alarm"}
    assert d["rows"] == 1050 and d["version"] == 1 and d["alarm"] is None
    assert max(d["psi"].values()) < 0.1 and d["prediction_psi"] < 0.1 and max(d["ks"].values()) < 0.1
    acc = mon.live_accuracy()[1]
    assert acc["labelled"] == 1000 and acc["accuracy"] > 0.95  # the outcome window keeps window_rows


def test_a_shift_of_a_watched_field_raises_the_alarm_until_the_live_version_changes():
    mon = stream_monitor()
    mon.observe(rows(500, 3, shift=3.0))
    assert mon.drift()["alarm"].startswith("x0 PSI")
    mon.observe(rows(2000, 4))  # the shifted rows left the window: the alarm stays raised …
    assert mon.drift()["alarm"] is not None
    mon.set_live(2, Booster(), reference())  # … until the live version changes
    assert "alarm" not in mon.drift() and mon.alarm is None and mon.frame().empty  # (too few rows: no verdict)


def test_only_watched_fields_raise_the_alarm():
    mon = stream_monitor()
    frame = rows(500, 5)
    frame["x1"] += 3.0  # x1 is a feature, not one of the alarm's fields
    mon.observe(frame)
    d = mon.drift()
    assert d["psi"]["x1"] > 0.5 and d["alarm"] is None
    everything = stream_monitor(alarm_on="all")
    everything.observe(frame)
    assert everything.drift()["alarm"].startswith("x1")


# -- the sampler ------------------------------------------------------------------------------------

def slot_report(weights: dict[str, int], n_blue: int, n_green: int, errors: int = 0) -> dict[str, Any]:
    blue, green = SlotStats(), SlotStats()
    for i in range(n_blue):
        blue.record(0.004, 0.7, error=i < errors)
    for _ in range(n_green):
        green.record(0.004, 0.7)
    return {"weights": weights, "slots": {"blue": 1, "green": None},
            "slot_stats": {"blue": blue.to_dict(), "green": green.to_dict()}}


def coord(events: int, rejected: int, reasons: dict[str, int], lag: float | None = 1.5) -> dict[str, Any]:
    return {"events": events, "accepted": events - rejected, "rejected": rejected, "reasons": reasons,
            "null_rate": 0.0, "watermark_lag_s": lag, "other": "left out"}


def test_the_first_sample_has_no_rates_and_the_next_ones_do():
    s = Sampler(points=2)
    first = s.take(10.0, coord(100, 0, {}), slot_report({"blue": 100, "green": 0}, 10, 0))
    assert list(first.point) == ["t", "quality", "weights", "slots", "p50_ms", "p99_ms", "requests_per_s", "psi",
                                 "prediction_psi", "accuracy"]
    assert first.point["quality"] == {k: coord(100, 0, {})[k] for k in
                                      ("accepted", "rejected", "events", "reasons", "null_rate", "watermark_lag_s")}
    assert first.point["requests_per_s"] == {} and first.moved == {} and first.slots == {}
    second = s.take(14.0, coord(500, 8, {"missing:x2": 8}), slot_report({"blue": 90, "green": 10}, 50, 4, errors=3),
                    {"psi": {"x0": 0.1}, "prediction_psi": 0.02}, {1: {"accuracy": 0.9}})
    p = second.point
    assert list(p)[:3] == ["t", "events_per_s", "rejected_per_s"]
    assert (p["events_per_s"], p["rejected_per_s"]) == (100.0, 2.0)
    assert p["requests_per_s"] == {"blue": 10.0, "green": 1.0} and p["p50_ms"]["blue"] >= 4.0
    assert (p["psi"], p["prediction_psi"], p["accuracy"]) == ({"x0": 0.1}, 0.02, {"1": 0.9})
    assert second.moved == {"events": 400, "accepted": 392, "rejected": 8, "reasons": {"missing:x2": 8}}
    assert second.slots["blue"]["requests"] == 40 and second.slots["blue"]["errors"] == 3
    s.take(15.0)
    assert [q["t"] for q in s.series] == [14.0, 15.0]  # bounded by series_points


def test_a_sample_without_planes_still_has_drift_and_accuracy():
    point = Sampler(points=5).take(1.0).point
    assert point == {"t": 1.0, "psi": {}, "prediction_psi": None, "accuracy": {}}


# -- the refit alarm --------------------------------------------------------------------------------

def test_the_alarm_asks_once_per_cooldown_and_only_if_configured():
    alarm = RefitAlarm(MonitorConfig(alarm_cooldown_s=60))
    assert alarm.due(0.0, None) is None
    assert alarm.due(0.0, "x0 PSI 2.00 > 0.5") == "drift alarm: x0 PSI 2.00 > 0.5"
    assert alarm.due(60.0, "x0 PSI 2.00 > 0.5") is None  # within the cooldown
    assert alarm.due(60.5, "x0 PSI 2.00 > 0.5") is not None
    alarm.answered(60.5, "x0 PSI 2.00 > 0.5", 3)
    assert alarm.requests == [{"t": 60.5, "alarm": "x0 PSI 2.00 > 0.5", "version": 3}]
    off = RefitAlarm(MonitorConfig(alarm_triggers_refit=False))
    assert off.due(0.0, "x0 PSI 2.00 > 0.5") is None


# -- the Prometheus mapping -------------------------------------------------------------------------

def recorders() -> dict[str, Recorder]:
    return {key: Recorder() for key, *_ in METRICS}


def test_the_export_moves_counters_by_deltas_and_sets_gauges():
    metrics = recorders()
    export, s = MetricsExport(metrics), Sampler(points=5)
    export.export(s.take(0.0, coord(100, 0, {}), slot_report({"blue": 100, "green": 0}, 5, 0)))
    assert metrics["events"].calls == [] and metrics["requests"].calls == []  # nothing moved yet
    assert metrics["weight"].calls == [("set", 100, {"slot": "blue"}), ("set", 0, {"slot": "green"})]
    assert metrics["slot_version"].calls == [("set", 1, {"slot": "blue"})]  # green holds no version
    sample = s.take(2.0, coord(300, 10, {"missing:x2": 10}), slot_report({"blue": 100, "green": 0}, 25, 0, errors=2),
                    {"psi": {"x0": 0.3}, "prediction_psi": None, "alarm": "x0 PSI 0.30 > 0.25"})
    sample.stream_accuracy, sample.served_accuracy = {1: {"accuracy": 0.8}}, {1: {"accuracy": 0.75}}
    sample.refits = [{"reason": "volume"}, {"reason": "drift"}, {"reason": "volume"}]
    export.export(sample)
    assert metrics["events"].calls == [("inc", 200, None)]
    assert metrics["accepted"].calls == [("inc", 190, None)]
    assert metrics["rejected"].calls == [("inc", 10, {"reason": "missing:x2"})]
    assert metrics["watermark_lag"].calls[-1] == ("set", 1.5, None)
    assert metrics["requests"].calls == [("inc", 20, {"slot": "blue", "version": "1"})]  # green served none: no 0
    assert metrics["errors"].calls == [("inc", 2, {"slot": "blue", "version": "1"})]
    assert [c[2] for c in metrics["p99"].calls] == [{"slot": "blue"}]
    assert metrics["psi"].calls == [("set", 0.3, {"feature": "x0"})] and metrics["prediction_psi"].calls == []
    assert metrics["alarm"].calls[-1] == ("set", 1.0, None)
    assert metrics["accuracy"].calls == [("set", 0.8, {"version": "1"})]
    assert metrics["served_accuracy"].calls == [("set", 0.75, {"version": "1"})]
    assert metrics["refits"].calls == [("set", 2, {"reason": "volume"}), ("set", 1, {"reason": "drift"})]


def test_a_restarted_coordinator_moves_no_counter_backwards():
    metrics = recorders()
    export, s = MetricsExport(metrics), Sampler(points=5)
    export.export(s.take(0.0, coord(500, 5, {"missing:x2": 5})))
    export.export(s.take(1.0, coord(20, 0, {"missing:x2": 0}, lag=None)))
    assert metrics["events"].calls == [] and metrics["rejected"].calls == []
    assert len(metrics["watermark_lag"].calls) == 1  # no lag reported: the gauge keeps its value


def test_every_metric_has_its_prometheus_name():
    assert len(prometheus_names()) == len(METRICS) + len(SERVE_METRICS)
    assert "ray_streamfit_rows_rejected_total" in prometheus_names() and "ray_streamfit_feature_psi" in prometheus_names()


# -- the monitor behind the actor -------------------------------------------------------------------

def test_the_monitor_follows_the_live_version_and_reports_in_its_shapes():
    registry = Registry(1, reference())
    mon = Monitor(MonitorConfig(window_rows=1000, min_rows=200), registry, FEATURES, ["x0"])
    batch = rows(600, 6)
    mon.record([(e, 1, "blue", 0.9, 0.0) for e in batch["event_id"][:40]])
    mon.observe_rows(batch, now=100.0)
    mon.observe_rows(rows(10, 7, start=600), now=100.5)  # within a second: the registry is not asked again
    assert registry.loads == 1 and mon.stream.version == 1
    stats = mon.stats()
    assert list(stats) == ["predictions_logged", "joined", "waiting", "per_version", "stream_accuracy",
                           "served_accuracy", "drift", "refit_requests", "last_error", "skew", "freshness"]
    assert (stats["predictions_logged"], stats["joined"], stats["waiting"]) == (40, 40, 0)
    assert stats["per_version"][1]["source"] == "served"  # 40 labelled served predictions are enough
    assert stats["stream_accuracy"][1]["labelled"] == 610
    assert stats["drift"] == mon.drift() and stats["drift"]["alarm"] is None
    assert mon.accuracy_since(1, since=0.0)[0] == 40
    assert mon.timeseries() == []


def test_the_sampling_tick_follows_the_live_version_while_no_rows_come():
    mon = Monitor(MonitorConfig(), Registry(3, reference()), FEATURES, ["x0"])
    assert mon.drift()["version"] is None
    mon.sample(10.0)
    assert mon.drift()["version"] == 3 and mon.drift()["rows"] == 0


def test_with_few_served_labels_the_stream_speaks_for_a_version():
    mon = Monitor(MonitorConfig(), Registry(1, reference()), FEATURES, ["x0"])
    batch = rows(300, 8)
    mon.record([(e, 1, "blue", 0.5, 0.0) for e in batch["event_id"][:5]])
    mon.observe_rows(batch, now=1.0)
    assert mon.per_version()[1]["source"] == "stream" and mon.per_version()[1]["labelled"] == 300
    mon.record([("only-served", 9, "green", 0.5, 0.0)])
    mon.labels(["only-served"], [1.0], now=2.0)
    assert mon.per_version()[9] == {"labelled": 1, "accuracy": 1.0, "logloss": pytest.approx(np.log(2)),
                                    "auc": pytest.approx(np.nan, nan_ok=True), "source": "served"}


def test_a_drift_alarm_asks_for_a_refit_only_with_a_trainer_and_after_the_cooldown():
    mon = Monitor(MonitorConfig(window_rows=1000, min_rows=200, psi_alarm=0.5, alarm_cooldown_s=30),
                  Registry(1, reference()), FEATURES, ["x0"])
    mon.observe_rows(rows(600, 9, shift=3.0), now=0.0)
    assert mon.sample(1.0).refit_reason is None  # no trainer attached
    trainer = {"refits": [{"reason": "volume"}]}
    first = mon.sample(2.0, trainer=trainer)
    assert first.refit_reason.startswith("drift alarm: x0 PSI") and first.refits == trainer["refits"]
    assert mon.sample(20.0, trainer=trainer).refit_reason is None
    assert mon.sample(33.0, trainer=trainer).refit_reason is not None
    mon.alarm.answered(33.0, first.drift["alarm"], 2)
    assert mon.stats()["refit_requests"] == [{"t": 33.0, "alarm": first.drift["alarm"], "version": 2}]
    assert [p["t"] for p in mon.timeseries()] == [1.0, 2.0, 20.0, 33.0]
    assert mon.timeseries()[-1]["psi"]["x0"] > 0.5
