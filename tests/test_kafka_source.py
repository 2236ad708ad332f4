"""Kafka source against a real Kafka-protocol broker (Tansu on 127.0.0.1)."""

from __future__ import annotations

import time

import pandas as pd

from kafka_broker import broker_fixture
from streamfit.schema import validate
from streamfit.actors.stream.kafka_source import BAD_KIND, KafkaSource, produce_events
from streamfit.config import FeaturesConfig, KafkaSourceConfig

FEATURES = FeaturesConfig()
kafka = broker_fixture()


def events(n: int, prefix: str = "e") -> list[dict]:
    return [
        {
            "event_id": f"{prefix}{i}",
            "entity": f"u{i % 37}",
            "event_time": 1_700_000_000.0 + i,
            "x0": i / 100.0,
            "x1": 1.0,
            "x2": -1.0,
        }
        for i in range(n)
    ]


def make_source(broker, topic: str, group: str, batch_size: int = 300) -> KafkaSource:
    cfg = KafkaSourceConfig(
        bootstrap_servers=broker.bootstrap, topic=topic, group_id=group, batch_size=batch_size, poll_timeout_s=0.5
    )
    return KafkaSource(cfg, FEATURES)


def drain(src: KafkaSource, position: dict, expect: int, timeout_s: float = 30.0) -> tuple[pd.DataFrame, dict]:
    """Read until `expect` rows came (then once more, to show nothing else is there)."""
    batches, got = [], 0
    deadline = time.monotonic() + timeout_s
    while got < expect and time.monotonic() < deadline:
        batch, position = src.read(position)
        assert len(batch) <= src.batch_size
        batches.append(batch)
        got += len(batch)
    extra, after = src.read(position)
    assert len(extra) == 0 and after == position, "rows after the expected end"
    return pd.concat(batches, ignore_index=True), position


def test_every_event_exactly_once_over_two_partitions(kafka):
    kafka.create_topic("once", partitions=2)
    sent = events(1000)
    produce_events(kafka.bootstrap, "once", sent)
    src = make_source(kafka, "once", "g-once")
    try:
        start = src.initial_position()
        assert start == {"0": 0, "1": 0}
        got, end = drain(src, start, 1000)
    finally:
        src.close()

    assert len(got) == 1000
    assert not got["event_id"].duplicated().any()
    assert set(got["event_id"]) == {e["event_id"] for e in sent}
    assert set(end) == {"0", "1"} and end["0"] > 0 and end["1"] > 0 and end["0"] + end["1"] == 1000
    assert (got["kind"] == "event").all() and got["event_time"].dtype == float
    by_id = got.set_index("event_id")
    for e in sent[::97]:
        assert by_id.loc[e["event_id"], "entity"] == e["entity"]
        assert by_id.loc[e["event_id"], "x0"] == e["x0"]
        assert by_id.loc[e["event_id"], "event_time"] == e["event_time"]
    # one entity, one partition: the key keeps an entity's events in order
    for _, g in got.groupby("entity"):
        assert g["event_time"].is_monotonic_increasing
    _, reasons = validate(got, FEATURES)
    assert (reasons == "").all()


def test_restart_resumes_exactly_at_the_committed_position(kafka):
    kafka.create_topic("resume", partitions=2)
    sent = events(1000)
    produce_events(kafka.bootstrap, "resume", sent)

    first = make_source(kafka, "resume", "g-resume", batch_size=250)
    pos = first.initial_position()
    seen = []
    while sum(map(len, seen)) < 400:
        batch, pos = first.read(pos)
        seen.append(batch)
    checkpoint = pos
    first.commit(checkpoint)
    # read on past the checkpoint without committing: a restart must not skip these
    more, _ = first.read(checkpoint)
    assert len(more) > 0
    first.close()
    before = set(pd.concat(seen)["event_id"])

    second = make_source(kafka, "resume", "g-resume")
    try:
        assert second.initial_position() == checkpoint
        rest, _ = drain(second, second.initial_position(), 1000 - len(before))
    finally:
        second.close()
    assert not rest["event_id"].duplicated().any()
    assert before.isdisjoint(rest["event_id"])
    assert before | set(rest["event_id"]) == {e["event_id"] for e in sent}

    other = make_source(kafka, "resume", "g-other")  # another group starts from the beginning
    try:
        assert other.initial_position() == {"0": 0, "1": 0}
    finally:
        other.close()


def test_reading_an_older_position_again_replays_the_same_rows(kafka):
    kafka.create_topic("replay", partitions=2)
    produce_events(kafka.bootstrap, "replay", events(600))
    src = make_source(kafka, "replay", "g-replay", batch_size=200)
    try:
        p0 = src.initial_position()
        a, p1 = src.read(p0)
        b, p2 = src.read(p1)
        assert len(a) == len(b) == 200 and set(a["event_id"]).isdisjoint(b["event_id"])
        again, q1 = src.read(p0)  # a shard restarted: the coordinator replays from the checkpoint
        assert q1 == p1 and list(again["event_id"]) == list(a["event_id"])
        then, q2 = src.read(q1)
        assert q2 == p2 and list(then["event_id"]) == list(b["event_id"])
    finally:
        src.close()


def test_non_json_message_is_marked_for_rejection_not_raised(kafka):
    kafka.create_topic("dirty", partitions=1)
    good = events(3, prefix="ok")
    no_kind_no_entity = {"event_id": "bare", "event_time": 1_700_000_100.0, "x0": 1.0, "x1": 2.0, "x2": 3.0}
    produce_events(
        kafka.bootstrap, "dirty", [good[0], b"{not json", good[1], "[1, 2, 3]", b"\xff\xfe", no_kind_no_entity, good[2]]
    )
    src = make_source(kafka, "dirty", "g-dirty", batch_size=100)
    try:
        batch, pos = src.read(src.initial_position())
    finally:
        src.close()
    assert len(batch) == 7 and pos == {"0": 7}
    bad = batch[batch["kind"] == BAD_KIND]
    assert list(bad["event_id"]) == ["dirty:0:1", "dirty:0:3", "dirty:0:4"]  # topic:partition:offset
    bare = batch.set_index("event_id").loc["bare"]
    assert bare["kind"] == "event"  # kind defaults to event
    _, reasons = validate(batch, FEATURES)
    by_id = dict(zip(batch["event_id"], reasons))
    assert [by_id[i] for i in bad["event_id"]] == ["bad_kind"] * 3
    assert all(by_id[e["event_id"]] == "" for e in good)
    assert by_id["bare"] == "missing:entity"  # no key, no entity: rejected with a reason, not a crash


def test_missing_topic_gives_empty_batches(kafka):
    src = make_source(kafka, "topic-that-is-not-there", "g-missing")
    try:
        batch, pos = src.read(src.initial_position())
        assert len(batch) == 0 and pos == {} and "kind" in batch.columns
        assert not src.at_end(pos)
    finally:
        src.close()
