"""Kafka end to end: a real Kafka-protocol broker (Tansu), the real data plane on a local Ray; the
pipeline is killed mid-stream and restarted, and every event is applied exactly once."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import ray

from kafka_broker import broker_fixture
from streamfit.config import config_from_dict
from streamfit.actors.stream.kafka_source import produce_events
from streamfit.actors.stream.sources import SyntheticSource
from streamfit.scripts.pipeline import NAMESPACE, start_data_plane, wait_until

kafka = broker_fixture()
N_BATCHES = 12  # of the synthetic stream, 500 events each, labels included


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    yield
    ray.shutdown()


def _rows(cfg, lo: int, hi: int) -> list[dict]:
    src = SyntheticSource(cfg.stream, cfg.features)
    df = pd.concat([src.read(p)[0] for p in range(lo, hi)], ignore_index=True)
    return [{k: v for k, v in r.items() if not (isinstance(v, float) and np.isnan(v))}
            for r in df.to_dict(orient="records")]


def _cfg(tmp_path, kafka, topic: str, group: str):
    return config_from_dict({
        "stream": {"source": "kafka", "entities": 100, "batch_size": 500, "label_delay_events": 200,
                   "bad_row_rate": 0.0,
                   "kafka": {"bootstrap_servers": kafka.bootstrap, "topic": topic, "group_id": group,
                             "batch_size": 300, "poll_timeout_s": 0.2}},
        "checkpoints": {"uri": str(tmp_path / group), "interval_s": 2.0},
        "shards": {"num_shards": 2, "num_cpus": 0},
    })


def _events_applied(shards) -> int:
    return sum(s["events"] for s in ray.get([s.stats.remote() for s in shards]))


def test_killed_and_restarted_pipeline_applies_every_event_exactly_once(tmp_path, kafka):
    kafka.create_topic("reference", partitions=2)
    kafka.create_topic("events", partitions=2)
    cfg = _cfg(tmp_path, kafka, "reference", "reference")
    first, second = _rows(cfg, 0, N_BATCHES // 2), _rows(cfg, N_BATCHES // 2, N_BATCHES)
    n_events = sum(1 for r in first + second if r["kind"] == "event")
    n_first = sum(1 for r in first if r["kind"] == "event")

    # Reference: one uninterrupted run over everything.
    produce_events(kafka.bootstrap, "reference", first + second)
    shards, coord = start_data_plane(cfg, None)
    run = coord.run.remote(None)
    assert wait_until(lambda: _events_applied(shards) == n_events, timeout_s=120)
    ray.get(coord.stop.remote())
    ray.get(run, timeout=60)
    reference = ray.get([s.snapshot.remote() for s in shards])
    for a in (coord, *shards):
        ray.kill(a)

    # Interrupted: the same events on another topic; the pipeline is killed after a checkpoint and
    # more applied batches, then restarted from the checkpoint and the committed offsets.
    produce_events(kafka.bootstrap, "events", first)
    cfg2 = _cfg(tmp_path, kafka, "events", "interrupted")
    shards, coord = start_data_plane(cfg2, None)
    run = coord.run.remote(None)
    assert wait_until(lambda: _events_applied(shards) >= n_first, timeout_s=60)
    assert wait_until(lambda: ray.get(coord.stats.remote()).get("checkpoints", 0) >= 1, timeout_s=60)
    produce_events(kafka.bootstrap, "events", second)
    assert wait_until(lambda: _events_applied(shards) >= n_first + (n_events - n_first) // 2, timeout_s=60)
    killed_at = ray.get(coord.stats.remote())
    for a in (coord, *shards):
        ray.kill(a, no_restart=True)
    time.sleep(0.5)

    shards, coord = start_data_plane(cfg2, None)
    resumed = ray.get(coord.stats.remote())
    assert resumed["resumed_from_batch"] is not None
    assert resumed["resumed_from_batch"] < killed_at["batch_id"], "nothing to replay: the kill came too late"
    run = coord.run.remote(None)
    assert wait_until(lambda: _events_applied(shards) >= n_events, timeout_s=120)
    time.sleep(1.0)  # anything applied twice would show up now
    ray.get(coord.stop.remote())
    ray.get(run, timeout=60)
    stats = ray.get([s.stats.remote() for s in shards])
    assert sum(s["events"] for s in stats) == n_events
    assert sum(s.get("rejected:duplicate", 0) for s in stats) == 0
    after = ray.get([s.snapshot.remote() for s in shards])
    for a, b in zip(after, reference):
        for name in ("events", "labels"):
            for col in ("keys", "times", "values"):
                np.testing.assert_array_equal(a[name][col], b[name][col])
    for a in (coord, *shards):
        ray.kill(a)
