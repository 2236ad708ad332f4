"""Bounded memory for unbounded keys (issue 13 item 5), at unit level: plain classes, no Ray.

Written first, against the code before the bounds: there the ingest log took rows until the
process died, the coordinator's replay log with checkpoints off kept every batch of the run, and
the prediction log held 200,000 entries of any id length (10 KB ids: 2 GB) and outcomes for every
version ever joined. Each test drives 100,000 distinct entities or oversized ids through and checks
the bytes held (tracemalloc, ``memory_usage``) stay flat, and that a refusal is counted, never a
silent drop: the ingest log refuses with ``IngestBufferFull`` (the API's 429 with Retry-After),
taking nothing and remembering no id, so the retry after a checkpoint is accepted.
"""

from __future__ import annotations

import asyncio
import pickle
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.monitoring.prediction_log import MAX_ID_CHARS, PredictionLog, bounded_id
from streamfit.actors.stream.coordinator_core import Coordinator
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.ingest import IngestBufferFull, IngestLog
from streamfit.actors.stream.local_runner import LocalShard
from streamfit.actors.stream.replay_log import ReplayLog, frame_bytes
from streamfit.actors.stream.sources import FramesSource
from streamfit.config import FeaturesConfig, HttpSourceConfig
from streamfit.serve.api import Backend, build_api
from streamfit.serve.auth import Authorizer
from streamfit.serve.router import RouterCore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FEATURES = FeaturesConfig()
ENTITIES = 100_000
T0 = 1_700_000_000.0


def events(start: int, n: int, id_chars: int = 12) -> pd.DataFrame:
    """``n`` events of distinct entities ``start..start+n``, each with a distinct id of ``id_chars``."""
    i = np.arange(start, start + n)
    return pd.DataFrame({"kind": "event", "event_id": [f"{k:0{id_chars}d}" for k in i],
                         "entity": [f"entity-{k}" for k in i], "event_time": T0 + i.astype(float),
                         "x0": 1.0, "x1": 2.0, "x2": 3.0})


# -- the ingest log ----------------------------------------------------------------------

def test_a_full_ingest_log_refuses_counts_and_takes_nothing():
    log = IngestLog(max_bytes=sum(frame_bytes(typed(events(100 * k, 100))) for k in range(3)), retry_after_s=5)
    for k in range(3):
        assert log.append(events(100 * k, 100)) == (100, 0)
    with pytest.raises(IngestBufferFull) as err:
        log.append(events(300, 100))
    assert err.value.retry_after_s == 5
    stats = log.stats()
    assert stats["refused_requests"] == 1 and stats["refused_rows"] == 100 and stats["next_position"] == 300
    assert stats["bytes_held"] <= stats["max_bytes"]
    df, nxt = log.read(0, 10_000)
    assert len(df) == 300 and nxt == 300  # nothing dropped: every accepted row is there
    log.commit(300)  # a checkpoint covers them: room again
    assert log.append(events(300, 100)) == (100, 0)  # the refused ids were not remembered: the retry is taken
    assert log.append(events(300, 100)) == (0, 100)


def typed(df: pd.DataFrame) -> pd.DataFrame:
    from streamfit.actors.stream.ingest import typed_frame

    return typed_frame(df)


def test_an_empty_ingest_log_takes_an_append_larger_than_its_cap():
    log = IngestLog(max_bytes=10)
    assert log.append(events(0, 50)) == (50, 0)
    with pytest.raises(IngestBufferFull):
        log.append(events(50, 1))


def test_the_ingest_log_stays_flat_over_100k_entities_with_commits():
    log = IngestLog(max_bytes=2_000_000)
    position, refused, held = 0, 0, []
    tracemalloc.start()
    try:
        for start in range(0, ENTITIES, 2000):
            try:
                log.append(events(start, 2000, id_chars=200))
            except IngestBufferFull:
                refused += 1
                df, position = log.read(position, 100_000)  # the coordinator reads, a checkpoint commits
                log.commit(position)
                log.append(events(start, 2000, id_chars=200))  # the client's retry
            held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert log.next_position == ENTITIES and refused > 10
    assert log.stats()["bytes_held"] <= 2_000_000
    assert max(held[10:]) < held[5] + 4_000_000, (held[5], max(held[10:]))  # flat, not 100k rows of 200-char ids


def test_without_a_write_ahead_log_reading_frees_the_buffer():
    """Checkpoints off: nothing commits the log, so the reader's position does (else it would fill for good)."""
    log = IngestLog(max_bytes=2 * frame_bytes(typed(events(ENTITIES, 1000))))  # the batch read, and the next
    position = 0
    for start in range(0, ENTITIES, 1000):
        assert log.append(events(start, 1000)) == (1000, 0)
        df, position = log.read(position, 5000)  # frees what the reader had before
        assert len(df) == 1000
    assert log.stats()["refused_requests"] == 0
    assert log.read(position, 10)[1] == ENTITIES and log.stats()["bytes_held"] == 0  # the reader went on


def test_the_full_error_survives_pickling_and_rays_wrapping():
    err = pickle.loads(pickle.dumps(IngestBufferFull("full", 7)))
    assert err.retry_after_s == 7 and str(err) == "full"
    from ray.exceptions import RayTaskError

    wrapped = RayTaskError("append", "traceback", IngestBufferFull("full", 7)).as_instanceof_cause()
    assert getattr(wrapped, "retry_after_s", None) == 7 or wrapped.cause.retry_after_s == 7


class LogBackend(Backend):
    """The API over an ``IngestLog`` in this process (the Ray actor's log)."""

    def __init__(self, log: IngestLog) -> None:
        self.log = log
        self.refused = 0

    async def ingest(self, rows):
        return self.log.append(rows)

    def ingest_refused(self, rows: int) -> None:
        self.refused += rows


def test_a_full_buffer_answers_429_with_retry_after_over_http():
    log = IngestLog(max_bytes=1, retry_after_s=3)
    backend = LogBackend(log)
    app = build_api(RouterCore(FEATURES.feature_names()), backend, FEATURES, ingest_enabled=True,
                    auth=Authorizer({}, open_scopes=["read", "ingest"]), ingest_limits=HttpSourceConfig())
    client = TestClient(app, raise_server_exceptions=False)
    body = lambda start: {"events": events(start, 5).to_dict("records")}  # noqa: E731
    assert client.post("/ingest", json=body(0)).json()["accepted"] == 5
    r = client.post("/ingest", json=body(5))
    assert r.status_code == 429 and r.headers["Retry-After"] == "3", r.text
    assert backend.refused == 5 and log.stats()["refused_requests"] == 1
    assert client.get("/healthz").json()["ingest_refused"] == {"requests": 1, "rows": 5}
    log.commit(5)
    assert client.post("/ingest", json=body(5)).json() == {"accepted": 5, "duplicates": 0, "rejected": []}


# -- the coordinator's replay log with checkpoints off -------------------------------------

def test_the_replay_log_is_capped_in_bytes_and_counts_its_drops():
    part = typed(events(0, 1000))
    cap = 10 * frame_bytes(part)
    log = ReplayLog(max_bytes=cap)
    tracemalloc.start()
    try:
        sizes = []
        for b in range(1, ENTITIES // 1000 + 1):
            log.append(b, 0.0, 0.0, [typed(events(1000 * (b - 1), 1000, id_chars=100))])
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert log.bytes <= cap and log.dropped == 100 - len(log.batches) and log.dropped > 80
    assert log.stats()["replay_dropped_bytes"] > 0
    assert max(sizes[20:]) < sizes[15] * 1.5, (sizes[15], max(sizes[20:]))
    assert [b.batch_id for b in log.skipped(0)] == list(range(1, log.dropped_upto + 1))


class RestartsOnce(LocalShard):
    """A shard that restarts (empty: checkpoints are off) when batch ``at`` arrives."""

    def __init__(self, shard_id: int, at: int | None) -> None:
        super().__init__(FeatureShard(FEATURES, shard_id))
        self.at = at

    def process(self, batch_id, df, watermark, clock):
        if batch_id == self.at:
            self.at = None
            self.shard = FeatureShard(FEATURES, self.shard.shard_id)
        return super().process(batch_id, df, watermark, clock)


def test_with_checkpoints_off_a_restarted_shard_skips_what_the_capped_log_dropped():
    batches = [events(500 * k, 500) for k in range(40)]
    shards = [RestartsOnce(0, at=35), RestartsOnce(1, at=None)]
    cap = 5 * frame_bytes(typed(batches[0]))  # about ten batches (each shard gets half of one)
    coord = Coordinator(FramesSource(batches), shards, replay_max_bytes=cap, now=lambda: 0.0)
    stats = asyncio.run(coord.run())
    assert stats["batches"] == 40 and stats["replay_dropped_batches"] > 20
    assert stats["replay_log_bytes"] <= cap
    # The batches dropped before the restart were sent to it empty, counted; later drops were never needed.
    assert 20 < stats["replay_skipped_batches"] <= stats["replay_dropped_batches"]
    assert stats["shard_recoveries"] == 1
    assert [s.shard.last_batch_id for s in shards] == [40, 40]  # the stream went on past the restart
    # The restarted shard holds the events of the batches the log still had, and later ones: fewer.
    assert shards[0].shard.stats()["events"] < shards[1].shard.stats()["events"] / 2


def test_with_checkpoints_on_the_replay_log_is_not_capped():
    log = ReplayLog()
    for b in range(1, 50):
        log.append(b, 0.0, 0.0, [events(0, 10)])
    assert len(log.batches) == 49 and log.dropped == 0


# -- the prediction log --------------------------------------------------------------------

def test_oversized_event_ids_are_keyed_by_a_digest_and_still_join():
    log = PredictionLog()
    long_id = "x" * 100_000
    log.record([(long_id, 1, "blue", 0.9, 10.0)])
    assert all(len(k) <= MAX_ID_CHARS for k in log.waiting)
    assert log.labels([long_id], [1.0], now=11.0) == 1
    assert log.accuracy_since(1, since=0.0) == (1, 1.0)
    assert bounded_id(long_id) != bounded_id("x" * 99_999)


def test_the_prediction_log_stays_flat_over_100k_oversized_ids():
    log = PredictionLog(max_bytes=2_000_000)
    sizes = []
    tracemalloc.start()
    try:
        for start in range(0, ENTITIES, 5000):
            ids = [f"{k:05000d}" for k in range(start, start + 5000)]  # 5 KB ids
            log.record([(e, 1, "blue", 0.7, float(k)) for k, e in enumerate(ids)])
            log.labels([f"label-only-{k}-" + "y" * 2000 for k in range(start, start + 5000)], [1.0] * 5000, now=1.0)
            del ids
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    stats = log.stats()
    assert stats["waiting_bytes"] <= 2_000_000 and stats["early_label_bytes"] <= 2_000_000
    assert stats["evicted"]["waiting"] > 0 and stats["evicted"]["early_labels"] > 0
    assert max(sizes[5:]) < sizes[3] * 1.3, (sizes[3], max(sizes[5:]))


def test_outcomes_are_kept_for_the_versions_joined_most_lately():
    log = PredictionLog(max_versions=5)
    for v in range(1, 101):
        log.record([(f"e{v}", v, "blue", 0.9, float(v))])
        log.labels([f"e{v}"], [1.0], now=float(v))
        log.record([("live", 1, "blue", 0.9, float(v))])  # version 1 stays in use
        log.labels(["live"], [1.0], now=float(v))
    assert len(log.outcomes) == 5 and 1 in log.outcomes and 100 in log.outcomes
    assert log.stats()["evicted"]["versions"] == 100 - 5


def test_freshness_tracker_keys_oversized_event_ids_by_a_digest_and_still_joins_them():
    from streamfit.actors.monitoring.freshness import FreshnessTracker

    f = FreshnessTracker(window_s=60.0, trained_through=lambda v: 0.0)
    ids = [f"{i}-" + "x" * 5_000 for i in range(200)]
    f.record([(e, 1, "blue", 0.9, 1.0) for e in ids])
    assert max(len(k) for k in f.waiting) <= 64  # 200 x 5 KB ids are not kept as keys
    f.labels(ids[:100], [1.0] * 100, now=2.0)  # joined through the same digest
    assert len(f.waiting) == 100 and not f.early
    f.labels(["y" * 5_000], [0.0], now=2.0)  # a label before its answer: kept by digest too
    assert max(len(k) for k in f.early) <= 64
