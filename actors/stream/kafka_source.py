"""A Kafka topic read by a consumer group, with offsets committed only at checkpoints.

Messages are JSON objects with the batch columns (``kind``, ``event_id``, ``entity``,
``event_time``, the numeric fields, ``label``), keyed by entity. Defaults: ``kind`` is
``"event"``, ``entity`` is the message key, ``event_time`` is the message timestamp,
``event_id`` is ``"<topic>:<partition>:<offset>"`` (stable across replays). Other keys
are ignored. A message that is not a JSON object becomes a row of kind ``"bad"`` (its
``event_id`` names topic, partition and offset), so the shards reject and count it;
``read`` never raises on message content.

The position is ``{"<partition>": <next offset>}`` (JSON, stored in checkpoint
manifests). ``read(position)`` seeks only where the consumer is not already there, so
reading on from the last position costs nothing and replaying an older one works.
Auto-commit is off: ``commit(position)`` commits exactly those offsets, synchronously,
and is called when a checkpoint completes, so a restarted consumer group resumes there.

Example (needs a broker, so not run here):

    src = KafkaSource(KafkaSourceConfig(bootstrap_servers="127.0.0.1:9092", topic="events"), FeaturesConfig())
    pos = src.initial_position()          # the group's committed offsets, else the beginning
    batch, pos = src.read(pos)            # up to batch_size rows and the position after them
    src.commit(pos)                       # after the checkpoint at `pos` is written
    src.close()
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Iterable

import numpy as np
import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamfit.actors.stream.file_source import as_text, numeric_or_raw
from streamfit.config import FeaturesConfig, KafkaSourceConfig
from streamfit.errors import StreamfitError
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL, PARTITION

log = logging.getLogger(__name__)

BAD_KIND = "bad"  # kind of a row made from a message that is not a JSON object: the shards reject it
METADATA_TIMEOUT_S = 10.0
CATCH_UP_S = 10.0  # longest a read waits for messages the broker said are there

KafkaPosition = dict[str, int]


class KafkaSource:
    """Consumer-group source over one topic; position = next offset per partition."""

    def __init__(self, cfg: KafkaSourceConfig, features: FeaturesConfig) -> None:
        self.cfg = cfg
        self.fields = [f.name for f in features.fields]
        self.text_fields = set(features.categorical_fields())  # JSON says what is text: kept as sent
        self.columns = [KIND, EVENT_ID, ENTITY, EVENT_TIME, *self.fields, LABEL]
        settings: dict[str, Any] = {
            "bootstrap.servers": cfg.bootstrap_servers,
            "group.id": cfg.group_id,
            "auto.offset.reset": "earliest",
            **cfg.extra,
        }
        # Offsets move only through commit(): never let librdkafka commit or store them itself.
        settings.update({"enable.auto.commit": False, "enable.auto.offset.store": False})
        self.consumer = Consumer(settings)
        self._next: dict[str, int] = {}  # where the consumer will read next, per assigned partition
        self._warned_missing = False
        self._closed = False

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    # -- Source protocol -------------------------------------------------------------

    def partitions(self) -> list[int]:
        """Partition numbers of the topic (empty when the topic does not exist yet)."""
        md = self.consumer.list_topics(self.cfg.topic, timeout=METADATA_TIMEOUT_S)
        topic = md.topics.get(self.cfg.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            if not self._warned_missing:
                log.warning("kafka topic %r has no partitions yet (%s)", self.cfg.topic, topic and topic.error)
                self._warned_missing = True
            return []
        return sorted(topic.partitions)

    def initial_position(self) -> KafkaPosition:
        """The group's committed offset for every partition, or the partition's beginning where none is."""
        parts = self.partitions()
        if not parts:
            return {}
        tps = [TopicPartition(self.cfg.topic, p) for p in parts]
        committed = self.consumer.committed(tps, timeout=METADATA_TIMEOUT_S)
        position: KafkaPosition = {}
        for tp in committed:
            position[str(tp.partition)] = tp.offset if tp.offset >= 0 else self._beginning(tp.partition)
        return position

    def read(self, position: KafkaPosition) -> tuple[pd.DataFrame, KafkaPosition]:
        """Up to ``batch_size`` rows from ``position`` and the position after them (empty frame if none)."""
        pos = {str(p): int(o) for p, o in (position or {}).items()}
        if not pos:
            pos = self.initial_position()  # the topic may have appeared since
            if not pos:
                return self.empty(), {}
        self._position_at(pos)
        rows = []
        after = dict(pos)
        for msg in self._consume(after):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka %s: %s", self.cfg.topic, err)
                continue
            part = str(msg.partition())
            if part not in after:
                continue  # not asked for (cannot happen with an explicit assignment)
            row = self._row(msg)
            row[PARTITION] = part
            rows.append(row)
            after[part] = msg.offset() + 1
        self._next.update(after)
        return self._frame(rows), after

    def at_end(self, position: KafkaPosition) -> bool:
        """A topic has no end."""
        return False

    def commit(self, position: KafkaPosition) -> None:
        """Commit exactly these offsets for the group, synchronously."""
        offsets = [TopicPartition(self.cfg.topic, int(p), int(o)) for p, o in position.items() if int(o) >= 0]
        if not offsets:
            return
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as err:
            raise StreamfitError(f"kafka commit of {position} to group {self.cfg.group_id!r} failed: {err}") from err
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise StreamfitError(f"kafka commit failed for {[(tp.partition, str(tp.error)) for tp in failed]}")

    def close(self) -> None:
        """Leave the group and close the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self.consumer.close()

    # -- helpers ---------------------------------------------------------------------

    def empty(self) -> pd.DataFrame:
        """A batch with the batch columns and no rows."""
        return self._frame([])

    def _beginning(self, partition: int) -> int:
        try:
            low, _ = self.consumer.get_watermark_offsets(
                TopicPartition(self.cfg.topic, partition), timeout=METADATA_TIMEOUT_S, cached=False
            )
            return int(low) if low >= 0 else OFFSET_BEGINNING
        except KafkaException as err:
            log.warning("kafka %s[%d]: no low watermark (%s); reading from the beginning", self.cfg.topic, partition, err)
            return OFFSET_BEGINNING

    def _position_at(self, pos: KafkaPosition) -> None:
        """Assign the partitions of ``pos`` and seek those where the consumer is somewhere else."""
        if set(pos) != set(self._next):
            self._assign(pos)
            return
        for part, offset in pos.items():
            if self._next[part] == offset:
                continue
            try:
                self.consumer.seek(TopicPartition(self.cfg.topic, int(part), offset))
                self._next[part] = offset
            except KafkaException as err:  # e.g. the partition is not fetching yet: assign afresh
                log.info("kafka seek %s[%s] -> %d failed (%s); re-assigning", self.cfg.topic, part, offset, err)
                self._assign(pos)
                return

    def _consume(self, pos: KafkaPosition) -> list[Any]:
        """Up to ``batch_size`` messages from ``pos``.

        One poll may return a short batch, or nothing just after a seek, while fetches are
        still on their way (a loaded machine). So polling goes on while the batch is short and
        short of the end the broker had reported after the first poll (a cached high watermark,
        fixed then, so a stream that keeps growing does not keep a read waiting), for at most
        ``CATCH_UP_S``; where that end is not known, while polls keep bringing messages. A
        position read again thus gives the same batch when the topic already holds it.
        """
        want, timeout = self.cfg.batch_size, self.cfg.poll_timeout_s
        deadline = time.monotonic() + max(timeout, CATCH_UP_S)
        messages = last = self.consumer.consume(num_messages=want, timeout=timeout)
        ends = {part: self._high(part) for part in pos}
        while len(messages) < want:
            behind = self._behind(pos, messages, ends)
            left = deadline - time.monotonic()
            if behind is False or (behind is None and not last) or left <= 0:
                break
            last = self.consumer.consume(num_messages=want - len(messages), timeout=min(timeout, left))
            messages += last
        return messages

    def _high(self, part: str) -> int:
        """The partition's end as of the last fetch (no request to the broker); -1 if not known."""
        try:
            return int(self.consumer.get_watermark_offsets(TopicPartition(self.cfg.topic, int(part)), cached=True)[1])
        except KafkaException:
            return -1

    @staticmethod
    def _behind(pos: KafkaPosition, messages: list[Any], ends: dict[str, int]) -> bool | None:
        """Whether ``messages`` stop short of ``ends`` on some partition (None: not known)."""
        nxt = dict(pos)
        for msg in messages:
            if msg.error() is None:
                nxt[str(msg.partition())] = msg.offset() + 1
        known = True
        for part, offset in nxt.items():
            end = ends.get(part, -1)
            if end < 0 or offset < 0:
                known = False
            elif offset < end:
                return True
        return False if known else None

    def _assign(self, pos: KafkaPosition) -> None:
        self.consumer.assign([TopicPartition(self.cfg.topic, int(p), o) for p, o in pos.items()])
        self._next = dict(pos)

    def _row(self, msg: Any) -> dict[str, Any]:
        key = msg.key()
        entity = key.decode("utf-8", errors="replace") if isinstance(key, bytes) else key
        default_id = f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
        try:
            obj = json.loads(msg.value())
        except (TypeError, ValueError):  # None (tombstone), not UTF-8, not JSON
            obj = None
        if not isinstance(obj, dict):
            return {KIND: BAD_KIND, EVENT_ID: default_id, ENTITY: entity, EVENT_TIME: math.nan}
        row = {c: obj.get(c) for c in self.columns}
        if row[KIND] is None:
            row[KIND] = EVENT
        if row[EVENT_ID] is None:
            row[EVENT_ID] = default_id
        if row[ENTITY] is None:
            row[ENTITY] = entity
        if row[EVENT_TIME] is None:
            ts_type, ts_ms = msg.timestamp()
            if ts_type != 0 and ts_ms is not None and ts_ms >= 0:  # 0 = TIMESTAMP_NOT_AVAILABLE
                row[EVENT_TIME] = ts_ms / 1000.0
        return row

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        data: dict[str, Any] = {c: [r.get(c) for r in rows] for c in self.columns}
        df = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in data.items()})
        for c in (KIND, EVENT_ID, ENTITY):
            df[c] = df[c].map(as_text)
        df[EVENT_TIME] = pd.to_numeric(df[EVENT_TIME], errors="coerce").astype(float)  # the shards reject NaN times
        for c in [*self.fields, LABEL]:
            if c not in self.text_fields:  # a number where a category is due stays a number: rejected with a reason
                df[c] = numeric_or_raw(df[c])
        df[PARTITION] = pd.Series([r.get(PARTITION) for r in rows], dtype=object)
        return df


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    return value


def produce_events(bootstrap: str, topic: str, rows: Iterable[dict[str, Any] | bytes | str], timeout_s: float = 30.0) -> int:
    """Produce rows as JSON messages keyed by ``entity`` and wait for delivery; returns the count.

    A ``bytes``/``str`` item is sent as it is (unkeyed) — handy to test bad input.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    count = 0
    for row in rows:
        if isinstance(row, (bytes, str)):
            key, value = None, row
        else:
            clean = {k: _json_value(v) for k, v in row.items()}
            key = None if clean.get(ENTITY) is None else str(clean[ENTITY])
            value = json.dumps(clean, default=str)
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
        count += 1
    left = producer.flush(timeout_s)
    if left or errors:
        raise StreamfitError(f"produce to {topic!r}: {left} not delivered, errors: {errors[:5]}")
    return count
