"""One contract for every ``Source``, run over every implementation (like the Stateful contract).

Each case prepares its data (small files in ``tmp_path``, a topic on the real Tansu broker of
``tests/kafka_broker.py``, an ingest log with its write-ahead log) and returns a factory of
new source instances over that same data. Every source must:

- read the same rows from the same position, however often it is read;
- after ``commit(p)``, let a new instance continue at ``p`` with no row lost or repeated
  (sources that keep their position themselves — a consumer group, the ingest log — also
  start there by ``initial_position()``; the others are resumed at the position the
  checkpoint recorded);
- reach ``at_end`` when bounded; when unbounded, give an empty batch and the same position
  once everything has been read.

To add a source: write a ``prepare`` function and append a ``SourceCase`` to ``CASES``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kafka_broker import broker_fixture
from streamfit.actors.stream.file_source import FileReplaySource
from streamfit.actors.stream.ingest import HttpSource, IngestLog, ingest_frame
from streamfit.actors.stream.kafka_source import KafkaSource, produce_events
from streamfit.actors.stream.sources import FramesSource, Source, SyntheticSource
from streamfit.config import FeaturesConfig, FileSourceConfig, KafkaSourceConfig, StreamConfig

FEATURES = FeaturesConfig()
BATCH = 40
N_EVENTS = 230
KEY = ["kind", "event_id"]  # a row's identity: a label shares its event's id
DEADLINE_S = 60.0  # generous bound for a broker on a loaded machine; reads stop as soon as rows are there

kafka = broker_fixture()  # one broker per module, started only if a Kafka case runs


def event_rows(n: int = N_EVENTS) -> list[dict[str, Any]]:
    """Events with increasing times; every third carries a label."""
    return [{"event_id": f"e{i}", "entity": f"u{i % 13}", "event_time": 1_700_000_000.0 + i,
             "x0": i / 10.0, "x1": 1.0, "x2": -1.0, "label": float(i % 2) if i % 3 == 0 else None}
            for i in range(n)]


def with_kinds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as pushed ones: label rows separate (kind "label") and later."""
    out = []
    for r in rows:
        out.append({**r, "kind": "event", "label": None})
        if r["label"] is not None:
            out.append({"kind": "label", "event_id": r["event_id"], "entity": r["entity"],
                        "event_time": r["event_time"] + 0.5, "label": r["label"]})
    return sorted(out, key=lambda r: r["event_time"])


@dataclass
class SourceCase:
    """One Source implementation under the contract."""

    name: str
    prepare: Callable[[Path, pytest.FixtureRequest], Callable[[], Source]]  # data -> factory of new instances
    rows: int | None  # rows the data holds (None: whatever the first full read gives)
    bounded: bool
    keeps_position: bool  # commit() is remembered: a new instance's initial_position() is the committed one
    ordered: bool = True  # rows come in one order (not interleaved across partitions)


def prepare_synthetic(tmp: Path, request: pytest.FixtureRequest) -> Callable[[], Source]:
    cfg = StreamConfig(batch_size=BATCH, max_events=N_EVENTS, label_delay_events=30, entities=20)
    return lambda: SyntheticSource(cfg, FEATURES)


def prepare_frames(tmp: Path, request: pytest.FixtureRequest) -> Callable[[], Source]:
    df = ingest_frame(with_kinds(event_rows()))
    frames = [df.iloc[i:i + BATCH].reset_index(drop=True) for i in range(0, len(df), BATCH)]
    return lambda: FramesSource(frames)


def file_case(fmt: str) -> Callable[[Path, pytest.FixtureRequest], Callable[[], Source]]:
    def prepare(tmp: Path, request: pytest.FixtureRequest) -> Callable[[], Source]:
        df = pd.DataFrame(event_rows()).rename(columns={"entity": "customer", "event_time": "ts"})
        df = df.sample(frac=1.0, random_state=1)  # the file is not in time order; the source sorts it
        path = tmp / f"events.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False)
        elif fmt == "parquet":
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        else:
            path.write_text("".join(json.dumps({k: v for k, v in r.items() if v == v}) + "\n"
                                    for r in df.to_dict("records")))
        cfg = FileSourceConfig(path=str(path), batch_size=BATCH, label_delay_s=0.5,
                               columns={"entity": "customer", "event_time": "ts"})
        return lambda: FileReplaySource(cfg, FEATURES)

    return prepare


def prepare_kafka(tmp: Path, request: pytest.FixtureRequest) -> Callable[[], Source]:
    broker = request.getfixturevalue("kafka")
    topic, group = f"contract-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=2)
    produce_events(broker.bootstrap, topic, with_kinds(event_rows()))
    cfg = KafkaSourceConfig(bootstrap_servers=broker.bootstrap, topic=topic, group_id=group, batch_size=BATCH,
                            poll_timeout_s=0.5)
    return lambda: KafkaSource(cfg, FEATURES)


def prepare_http(tmp: Path, request: pytest.FixtureRequest) -> Callable[[], Source]:
    wal = str(tmp / "wal")
    log = IngestLog(wal)
    rows = with_kinds(event_rows())
    for i in range(0, len(rows), 25):  # as several POST /ingest requests
        log.append(ingest_frame(rows[i:i + 25]))
    # each new source sees the log as a restarted buffer actor would: recovered from its write-ahead log
    return lambda: HttpSource(IngestLog(wal), BATCH)


N_PUSHED = len(with_kinds(event_rows()))
CASES = [
    SourceCase("synthetic", prepare_synthetic, None, bounded=True, keeps_position=False),
    SourceCase("frames", prepare_frames, N_PUSHED, bounded=True, keeps_position=False),
    SourceCase("file-csv", file_case("csv"), N_PUSHED, bounded=True, keeps_position=False),
    SourceCase("file-parquet", file_case("parquet"), N_PUSHED, bounded=True, keeps_position=False),
    SourceCase("file-jsonl", file_case("jsonl"), N_PUSHED, bounded=True, keeps_position=False),
    SourceCase("kafka", prepare_kafka, N_PUSHED, bounded=False, keeps_position=True, ordered=False),
    SourceCase("http", prepare_http, N_PUSHED, bounded=False, keeps_position=True),
]


# == reading ======================================================================================

@dataclass
class Read:
    """What a run of reads gave: the rows, the positions between batches, and the batches' sizes."""

    rows: pd.DataFrame
    positions: list[Any]  # positions[i] is where batch i started; the last one is where reading stopped
    sizes: list[int]


def read_all(case: SourceCase, src: Source, start: Any, rows: int | None) -> Read:
    """Read from ``start`` until the end (bounded) or until ``rows`` rows came (then once more: nothing)."""
    batches, positions, sizes = [], [start], []
    pos, got = start, 0
    deadline = time.monotonic() + DEADLINE_S
    while not (src.at_end(pos) if case.bounded else got >= rows):
        assert time.monotonic() < deadline, f"{case.name}: only {got} of {rows} rows after {DEADLINE_S}s"
        batch, pos = src.read(pos)
        if len(batch) or case.bounded:  # an unbounded source may have nothing yet: that is no batch
            batches.append(batch)
            positions.append(pos)
            sizes.append(len(batch))
            got += len(batch)
    if not case.bounded:
        extra, after = src.read(pos)
        assert len(extra) == 0 and after == pos, f"{case.name}: rows after the end"
    return Read(pd.concat(batches, ignore_index=True) if batches else pd.DataFrame(), positions, sizes)


def canonical(df: pd.DataFrame, ordered: bool) -> pd.DataFrame:
    """Rows in a comparable form (sorted by identity when the source interleaves partitions)."""
    cols = [c for c in df.columns if c != "partition"]
    out = df[cols].reset_index(drop=True)
    return out if ordered else out.sort_values(KEY, ignore_index=True)


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame, case: SourceCase, what: str) -> None:
    pd.testing.assert_frame_equal(canonical(a, case.ordered), canonical(b, case.ordered), obj=f"{case.name}: {what}")


def assert_no_row_twice(df: pd.DataFrame, case: SourceCase) -> None:
    assert not df.duplicated(KEY).any(), f"{case.name}: rows repeated: {df[df.duplicated(KEY)][KEY].values[:5]}"


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[SourceCase, Callable[[], Source]]:
    c: SourceCase = request.param
    return c, c.prepare(tmp_path, request)


def opened(factory: Callable[[], Source], request: pytest.FixtureRequest) -> Source:
    src = factory()
    request.addfinalizer(src.close)
    return src


# == the checks ===================================================================================

def test_is_a_source(case, request) -> None:
    c, factory = case
    src = opened(factory, request)
    assert isinstance(src, Source)


def test_reading_a_position_again_gives_the_same_rows(case, request) -> None:
    c, factory = case
    src = opened(factory, request)
    first = read_all(c, src, src.initial_position(), c.rows)
    if c.rows is not None:
        assert len(first.rows) == c.rows
    assert_no_row_twice(first.rows, c)
    mid = len(first.positions) // 2
    again = read_all(c, src, first.positions[mid], len(first.rows) - sum(first.sizes[:mid]))
    tail = first.rows.iloc[sum(first.sizes[:mid]):]
    assert_same_rows(again.rows, tail, c, f"rows from position {first.positions[mid]} read again")
    if c.ordered:  # one batch read again is the same batch (an interleaving source may split it otherwise)
        batch, nxt = src.read(first.positions[mid])
        assert_same_rows(batch, tail.iloc[:len(batch)], c, "one batch read again")
        assert nxt == first.positions[mid + 1]


def test_commit_then_a_new_instance_continues_where_it_stopped(case, request) -> None:
    c, factory = case
    src = opened(factory, request)
    whole = read_all(c, opened(factory, request), src.initial_position(), c.rows)
    total = len(whole.rows)
    # read about half, then commit there (as a completed checkpoint does) and stop
    pos, got, before = src.initial_position(), 0, []
    deadline = time.monotonic() + DEADLINE_S
    while got < total // 2:
        assert time.monotonic() < deadline, f"{c.name}: stuck at {got} rows"
        batch, pos = src.read(pos)
        before.append(batch)
        got += len(batch)
    src.commit(pos)
    src.close()

    resumed = opened(factory, request)
    if c.keeps_position:
        assert resumed.initial_position() == pos
    after = read_all(c, resumed, pos, total - got)
    both = pd.concat([*before, after.rows], ignore_index=True)
    assert_no_row_twice(both, c)
    assert len(both) == total, f"{c.name}: {total - len(both)} rows lost"
    assert_same_rows(both, whole.rows, c, "rows before the commit + rows after the resume")


def test_bounded_sources_reach_the_end_and_unbounded_ones_wait(case, request) -> None:
    c, factory = case
    src = opened(factory, request)
    start = src.initial_position()
    run = read_all(c, src, start, c.rows)  # for an unbounded source this also checks the empty read at the end
    assert src.at_end(run.positions[-1]) is c.bounded
    assert not src.at_end(start)


def test_a_log_committed_to_its_end_numbers_new_rows_after_the_commit_when_restarted(tmp_path) -> None:
    """Every segment gone after a commit: a restarted log must not number new rows from 0 again."""
    wal = str(tmp_path / "wal")
    src = HttpSource(IngestLog(wal), BATCH)
    src.buffer.append(ingest_frame(with_kinds(event_rows(10))))
    batch, pos = src.read(src.initial_position())
    src.commit(pos)
    restarted = HttpSource(IngestLog(wal), BATCH)
    assert restarted.initial_position() == pos == len(batch)
    restarted.buffer.append(ingest_frame([{"event_id": "new", "entity": "u", "event_time": 1.0}]))
    batch, _ = restarted.read(pos)
    assert list(batch["event_id"]) == ["new"]


# == the suite can fail ===========================================================================

class ShufflingFrames(FramesSource):
    """Not replayable: each read of a position gives its rows in another order."""

    def read(self, position: int) -> tuple[pd.DataFrame, int]:
        self.reads = getattr(self, "reads", 0) + 1
        return self.frames[position].sample(frac=1.0, random_state=self.reads), position + 1


class HttpIgnoringCommit(HttpSource):
    def commit(self, position: int) -> None:
        pass


BROKEN = [
    (SourceCase("shuffling-frames", lambda t, r: (lambda f=prepare_frames(t, r): ShufflingFrames(f().frames)),
                N_PUSHED, bounded=True, keeps_position=False), test_reading_a_position_again_gives_the_same_rows),
    (SourceCase("http-ignoring-commit", lambda t, r: (lambda f=prepare_http(t, r): HttpIgnoringCommit(f().buffer, BATCH)),
                N_PUSHED, bounded=False, keeps_position=True), test_commit_then_a_new_instance_continues_where_it_stopped),
]


@pytest.mark.parametrize("broken,check", BROKEN, ids=[b.name for b, _ in BROKEN])
def test_a_broken_source_is_caught(broken: SourceCase, check: Callable, request: pytest.FixtureRequest,
                                   tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        check((broken, broken.prepare(tmp_path, request)), request)
