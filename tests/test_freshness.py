"""Freshness arithmetic on hand-made timelines (no Ray): stale share, seconds to 100 %, the live tracker."""

from __future__ import annotations

from streamfit.actors.monitoring import Monitor
from streamfit.config import MonitorConfig
from streamfit.freshness import Change, concept_start, full_version, is_stale, seconds_to_full, spread, stale_share
from streamfit.actors.monitoring.freshness import FreshnessTracker
from streamfit.status import Freshness, MonitorReport

# Concepts begin at event times 0, 100, 200, 300; their events began being ingested at wall 0, 50, 100, 150.
CHANGES = [Change(100.0, 50.0), Change(200.0, 100.0), Change(300.0, 150.0)]
STARTS = [0.0] + [c.start for c in CHANGES]
TRAINED = {1: 60.0, 2: 95.0, 3: 140.0, 4: 210.0, 5: 260.0, 6: 330.0}  # version -> newest training row's event time


def test_a_request_is_stale_when_its_version_learnt_only_rows_before_its_concept_began() -> None:
    assert concept_start(150.0, STARTS) == 100.0 and concept_start(100.0, STARTS) == 100.0
    assert concept_start(-1.0, STARTS) is None
    assert is_stale(TRAINED[2], 100.0) and not is_stale(TRAINED[3], 100.0)
    assert not is_stale(None, 100.0) and not is_stale(60.0, None)  # unknown: no claim
    # Events at 50 (concept 0), 150 (1), 250 (2): answered by v1, v2, v3, v4.
    requests = [(1, concept_start(50.0, STARTS)), (2, concept_start(150.0, STARTS)), (3, concept_start(150.0, STARTS)),
                (3, concept_start(250.0, STARTS)), (4, concept_start(250.0, STARTS))]
    assert stale_share(requests, TRAINED) == 2 / 5  # v2 on concept 1 and v3 on concept 2
    assert stale_share([], TRAINED) is None


def test_seconds_to_full_traffic_counts_from_each_change_to_the_first_fresh_version_at_100() -> None:
    # The version at 100 % over wall time: v1, a canary of v2 (split), v3 at 70, v4 at 130 (after a split),
    # v5 at 160 — a version trained after the second change but before the third; v6 never gets there.
    full = [(10.0, 1), (40.0, None), (45.0, 2), (70.0, 3), (110.0, None), (130.0, 4), (160.0, 5)]
    out = seconds_to_full(CHANGES, TRAINED, full, end=200.0)
    assert [(r["seconds"], r["reached"], r["version"]) for r in out] == [
        (20.0, True, 3),  # change at wall 50: v2 (trained through 95 < 100) does not count, v3 at 70 does
        (30.0, True, 4),  # change at wall 100: v4 at 130
        (50.0, False, None),  # change at wall 150: v5 trained through 260 < 300; not reached by the end
    ]
    assert spread([r["seconds"] for r in out]) == {"p50_s": 30.0, "max_s": 50.0}
    assert spread([]) == {"p50_s": None, "max_s": None}


def test_a_fresh_version_already_at_100_when_the_change_is_detected_counts_zero() -> None:
    # Live, a change is detected after the refit it came from may already be serving.
    out = seconds_to_full([Change(100.0, 60.0)], TRAINED, [(10.0, 1), (55.0, 3)], end=90.0)
    assert out[0]["seconds"] == 0.0 and out[0]["reached"]


def test_full_version_is_the_slot_at_100_percent() -> None:
    assert full_version({"blue": 1, "green": 2}, {"blue": 100, "green": 0}) == 1
    assert full_version({"blue": 1, "green": 2}, {"blue": 75, "green": 25}) is None
    assert full_version({"blue": None, "green": None}, {"blue": 100, "green": 0}) is None


def test_the_tracker_counts_returned_answers_not_shadow_ones_and_estimates_changes_from_drift_refits() -> None:
    trained = {1: 90.0, 2: 150.0, 3: 260.0}
    f = FreshnessTracker(window_s=10.0, trained_through=trained.get)
    split = lambda v, w=100: {"slots": {"blue": v}, "weights": {"blue": w}}  # noqa: E731
    f.observe(0.0, split(1), {"refits": [{"reason": "volume", "event_time": 80.0}], "rejected": []})
    f.record([("a", 1, "blue", 0.9, 1.0), ("a", 2, "green", 0.1, 1.0, True)])  # the shadow answer is not counted
    f.labels(["a"], [1.0], now=2.0)
    assert (f.requests, f.labelled, f.correct, f.stale) == (1, 1, 1, 0)  # no change detected yet: nothing stale
    # A drift refit (rejected by the gate, still a detected change) on rows through 200, seen at 20 s;
    # a second one 5 s later is the same change.
    f.observe(20.0, split(1), {"refits": [], "rejected": [{"reason": "drift", "event_time": 200.0}]})
    f.observe(25.0, split(1), {"refits": [{"reason": "drift", "event_time": 205.0}], "rejected": []})
    assert [c.start for c in f.changes] == [200.0]
    f.labels(["d"], [1.0], now=22.5)  # a label may come before its answer is logged
    f.record([("b", 1, "blue", 0.9, 21.0), ("c", 2, "blue", 0.9, 22.0), ("d", 2, "blue", 0.9, 38.0)])
    f.labels(["b", "c", "zz"], [0.0, 1.0, 1.0], now=38.0)  # "zz" was never answered
    f.observe(30.0, split(2), None)  # v2 (trained through 150 < 200) at 100 %: still stale
    f.observe(40.0, split(3, 50), None)
    f.observe(45.0, split(3), None)  # v3 at 100 %: 25 s after the change was detected
    fig = f.figures(46.0)
    assert fig["requests"] == 4 and fig["stale_share"] == 3 / 4
    assert fig["labelled"] == 4 and fig["served_accuracy"] == 3 / 4
    assert fig["served_accuracy_recent"] == 2 / 3  # labels of the last 10 s: b wrong, c and d right
    assert [(c["seconds"], c["reached"], c["version"]) for c in fig["changes"]] == [(25.0, True, 3)]
    assert (fig["p50_s"], fig["max_s"], fig["detected_changes"]) == (25.0, 25.0, 1)
    assert "stale 75.0%" in Freshness.model_validate(fig).text()


def test_the_monitor_reports_freshness_in_stats_points_and_the_monitor_report() -> None:
    mon = Monitor(MonitorConfig(freshness_window_s=60.0))
    mon.record([("e1", 1, "blue", 0.8, 10.0), ("e2", 1, "blue", 0.8, 10.0), ("e2", 2, "green", 0.2, 10.0, True)])
    mon.labels(["e1", "e2"], [1.0, 0.0], now=11.0)
    controller = {"slots": {"blue": 1, "green": None}, "weights": {"blue": 100, "green": 0}, "slot_stats": {}}
    sample = mon.sample(12.0, controller=controller, trainer={"refits": [], "rejected": []})
    assert sample.freshness["served_accuracy"] == 0.5 and sample.freshness["requests"] == 2
    assert sample.point["freshness"]["served_accuracy"] == 0.5 and "changes" not in sample.point["freshness"]
    report = MonitorReport.from_monitor(mon.stats(), mon.timeseries())
    assert report.freshness.served_accuracy == 0.5 and report.freshness.labelled == 2
    assert report.freshness.stale_share == 0.0 and report.freshness.p50_s is None
    assert "no drift detected" in report.freshness.text()


def test_the_freshness_gauges_are_set_from_a_sample() -> None:
    from streamfit.actors.monitoring import MetricsExport, Sample, prometheus_names
    from streamfit.actors.monitoring.metrics_export import METRICS

    calls: list[tuple[str, float, dict[str, str] | None]] = []

    class Gauge:
        def __init__(self, key: str) -> None:
            self.key = key

        def set(self, value: float, tags: dict[str, str] | None = None) -> None:
            calls.append((self.key, value, tags))

        inc = set

    export = MetricsExport({key: Gauge(key) for key, *_ in METRICS})
    sample = Sample({"t": 1.0}, freshness={"served_accuracy": 0.8, "served_accuracy_recent": None, "stale_share": 0.1,
                                           "stale_share_recent": 0.25, "p50_s": 20.0, "max_s": 40.0,
                                           "changes": [{"seconds": 40.0}]})
    export.export(sample)
    fresh = [c for c in calls if c[0] in ("request_accuracy", "stale_share", "seconds_to_full")]
    assert fresh == [("request_accuracy", 0.8, {"window": "all"}), ("stale_share", 0.1, {"window": "all"}),
                     ("stale_share", 0.25, {"window": "recent"}), ("seconds_to_full", 20.0, {"stat": "p50"}),
                     ("seconds_to_full", 40.0, {"stat": "max"}), ("seconds_to_full", 40.0, {"stat": "last"})]
    assert {"ray_streamfit_request_weighted_accuracy", "ray_streamfit_stale_share",
            "ray_streamfit_seconds_to_full_traffic"} <= prometheus_names()


def test_the_bench_places_each_change_between_two_looks_at_the_planes() -> None:
    from streamfit.scripts.freshness import full_timeline, wall_at_position

    ticks = [(100.0, 0, None), (101.0, 10, 1), (102.0, 30, 1), (103.0, 30, 2), (104.0, 40, None)]
    assert wall_at_position(ticks, 20) == 101.5 and wall_at_position(ticks, 10) == 101.0
    assert wall_at_position(ticks, 0) == 100.0 and wall_at_position(ticks, 41) is None
    assert full_timeline(ticks) == [(100.0, None), (101.0, 1), (103.0, 2), (104.0, None)]


def test_live_the_drift_refits_own_version_is_the_first_fresh_one() -> None:
    # The registry's window.end stops before the holdout (the newest rows): the refit's own time says when it
    # was trained, on the same clock as the change it marks.
    f = FreshnessTracker(window_s=60.0, trained_through={1: 50.0, 2: 180.0}.get)
    drift = {"reason": "drift", "event_time": 200.0, "version": 2, "accepted": True}
    f.observe(10.0, {"slots": {"blue": 1}, "weights": {"blue": 100}}, {"refits": [drift]})
    assert f.trained_at(2) == 200.0 and f.trained_at(1) == 50.0  # v1: no refit record, the registry's figure
    f.record([("a", 2, "green", 0.9, 11.0)])
    f.observe(16.0, {"slots": {"blue": 1, "green": 2}, "weights": {"blue": 0, "green": 100}}, {"refits": [drift]})
    fig = f.figures(17.0)
    assert fig["stale_share"] == 0.0 and [(c["seconds"], c["version"]) for c in fig["changes"]] == [(6.0, 2)]
