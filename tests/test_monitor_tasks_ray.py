"""The monitor actor speaks the config's task on a real local Ray (issue 15 item 4): started with the model
section, it joins regression values and multiclass probabilities with their labels and reports the task's
metrics per version, its alarm and its Prometheus figures from a sample. The plain classes are tested in
test_monitor_tasks.py."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from streamfit.actors.monitoring import MonitorActor


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_a_regression_monitor_reports_rmse_and_mae_per_version():
    mon = MonitorActor.remote({"sample_s": 3600}, model={"task": "regression", "objective": "reg:absoluteerror"})
    rows = [(f"e{i}", 2, "blue", float(i) + (1.0 if i % 2 else -1.0), 10.0) for i in range(40)]
    ray.get(mon.record.remote(rows))
    assert ray.get(mon.labels.remote([f"e{i}" for i in range(40)], [float(i) for i in range(40)])) == 40
    quality = ray.get(mon.per_version.remote())[2]
    assert quality["source"] == "served" and quality["labelled"] == 40 and "accuracy" not in quality
    assert quality["rmse"] == pytest.approx(1.0) and quality["mae"] == pytest.approx(1.0)
    n, value, metric, _ = ray.get(mon.accuracy_since.remote(2, 0.0))
    assert (n, value, metric) == (40, pytest.approx(1.0), "mae")  # the canary judges by the objective's loss
    point = ray.get(mon.sample.remote())
    assert point["mae"] == {"2": pytest.approx(1.0)} and point["accuracy"] == {}
    ray.kill(mon)


def test_a_multiclass_monitor_pairs_probabilities_by_the_likeliest_class():
    mon = MonitorActor.remote({"sample_s": 3600}, model={"task": "multiclass", "classes": ["a", "b", "c"]})
    probs = np.full((30, 3), 0.1)
    probs[np.arange(30), np.arange(30) % 3] = 0.8
    ray.get(mon.record.remote([(f"e{i}", 1, "blue", probs[i].tolist(), 10.0) for i in range(30)]
                              + [(f"e{i}", 2, "green", [0.8, 0.1, 0.1], 10.0, True) for i in range(30)]))
    ray.get(mon.labels.remote([f"e{i}" for i in range(30)], [float(i % 3) for i in range(30)]))
    assert ray.get(mon.accuracy_since.remote(1, 0.0)) == (30, 1.0)
    paired = ray.get(mon.paired_since.remote(1, 2, 0.0))
    assert (paired["n"], paired["live_only"], paired["both"]) == (30, 20, 10)
    assert set(ray.get(mon.per_version.remote())[1]) == {"labelled", "accuracy", "logloss", "source"}
    ray.kill(mon)
