"""The HTTP ingest log under restarts and failed writes (issue 13, items 1, 2 and 15).

- a log restarted after a checkpoint committed every row numbers new rows after the commit
  and still refuses a client's retry of a committed row; a coordinator resuming from that
  checkpoint reads exactly the rows accepted after the restart;
- the rows of the previous checkpoint stay readable (a start that falls back to it, because
  the newest one is damaged, loses nothing);
- a write-ahead write that fails leaves the ids unseen, so the client's retry is accepted;
  event ids of mixed types are written as text and never fail the write;
- a damaged segment or commit marker found at start is reported with its path and skipped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

from streamfit.actors.stream.ingest import HttpSource, IngestLog, ingest_frame
from streamfit.actors.stream.local_runner import LocalRunner
from streamfit.config import FeaturesConfig
from streamfit.errors import StreamfitError

FEATURES = FeaturesConfig()
T0 = 1_700_000_000.0


def events(ids: list, t: float = T0) -> pd.DataFrame:
    return ingest_frame([{"event_id": i, "entity": f"u{n % 3}", "event_time": t + n, "x0": 1.0, "x1": 0.0,
                          "x2": 0.0} for n, i in enumerate(ids)])


def test_a_restart_after_a_full_commit_continues_positions_and_refuses_retries_of_committed_rows(tmp_path):
    wal = str(tmp_path / "wal")
    log = IngestLog(wal)
    assert log.append(events(["a", "b", "c"])) == (3, 0)
    _, pos = log.read(0, 10)
    log.commit(pos)  # a checkpoint holds every row: the segments may go
    again = IngestLog(wal)
    assert again.stats()["next_position"] == pos == 3
    assert again.append(events(["a", "b"])) == (0, 2), "a retry of committed rows was accepted again"
    assert again.append(events(["d"])) == (1, 0)
    df, nxt = again.read(pos, 10)
    assert list(df["event_id"]) == ["d"] and nxt == 4


def test_a_coordinator_resuming_from_its_checkpoint_reads_exactly_the_rows_accepted_after_a_restart(tmp_path):
    wal, ckpt = str(tmp_path / "wal"), str(tmp_path / "ckpt")
    first = LocalRunner(FEATURES, HttpSource(IngestLog(wal), 100), checkpoint_uri=ckpt)
    first.coordinator.source.buffer.append(events([f"a{i}" for i in range(30)]))
    first.run_until(30)
    asyncio.run(first.coordinator.checkpoint())  # commits position 30: every segment is deleted
    assert first.coordinator.stats()["accepted"] == 30
    log = IngestLog(wal)  # the ingest buffer restarted
    assert log.append(events([f"a{i}" for i in range(5)])) == (0, 5)  # a client's late retry
    assert log.append(events([f"b{i}" for i in range(7)], t=T0 + 100)) == (7, 0)
    second = LocalRunner(FEATURES, HttpSource(log, 100), checkpoint_uri=ckpt)
    assert second.position == 30
    stats = second.run_until(37)
    assert stats["accepted"] == 7 and stats["rejected"] == 0, stats
    df, _ = log.read(30, 100)
    assert list(df["event_id"]) == [f"b{i}" for i in range(7)]


def test_the_rows_of_the_previous_checkpoint_stay_readable_after_a_restart(tmp_path):
    wal = str(tmp_path / "wal")
    log = IngestLog(wal)
    log.append(events(["a", "b"]))
    log.commit(2)  # checkpoint 1
    log.append(events(["c", "d"]))
    log.commit(4)  # checkpoint 2: a start that finds it damaged falls back to checkpoint 1 (position 2)
    again = IngestLog(wal)
    assert again.stats()["committed"] == 4
    df, nxt = again.read(2, 10)
    assert list(df["event_id"]) == ["c", "d"] and nxt == 4
    log.append(events(["e"]))
    log.commit(5)  # checkpoint 3: checkpoint 1's rows may go now
    df, _ = IngestLog(wal).read(0, 10)
    assert list(df["event_id"]) == ["e"]
    assert len(list(Path(wal).glob("0*.arrow"))) == 1  # only the segment after checkpoint 2 is kept


def test_a_failed_write_ahead_write_leaves_the_ids_unseen_so_the_retry_is_accepted(tmp_path):
    log = IngestLog(str(tmp_path / "wal"))
    put = log.store.put
    failures = [StreamfitError("ingest log: cannot write (injected S3 error)")]

    def flaky_put(path: str, data: bytes) -> None:
        if failures:
            raise failures.pop()
        put(path, data)

    log.store.put = flaky_put
    with pytest.raises(StreamfitError):
        log.append(events(["a", "b"]))
    assert log.stats()["next_position"] == 0
    assert log.append(events(["a", "b"])) == (2, 0), "the retry of rows never stored was answered 'duplicates'"
    assert list(IngestLog(str(tmp_path / "wal")).read(0, 10)[0]["event_id"]) == ["a", "b"]


def test_a_failed_commit_changes_nothing_and_its_retry_writes_the_marker(tmp_path):
    wal = str(tmp_path / "wal")
    log = IngestLog(wal)
    log.append(events(["a", "b"]))
    put = log.store.put
    log.store.put = lambda path, data: (_ for _ in ()).throw(StreamfitError("injected"))
    with pytest.raises(StreamfitError):
        log.commit(2)
    assert log.stats()["committed"] == 0
    log.store.put = put
    log.commit(2)  # the coordinator's retry
    again = IngestLog(wal)
    assert again.stats()["committed"] == 2 and again.append(events(["a"])) == (0, 1)


def test_event_ids_of_mixed_types_are_written_as_text(tmp_path):
    log = IngestLog(str(tmp_path / "wal"))
    assert log.append(events([7, "e8"])) == (2, 0)  # an Arrow type error before the fix, then 'duplicates'
    assert log.append(events(["7"])) == (0, 1)  # 7 and "7" name the same event
    df, _ = IngestLog(str(tmp_path / "wal")).read(0, 10)
    assert df["event_id"].tolist() == ["7", "e8"]


def test_a_damaged_segment_found_at_start_is_reported_and_skipped(tmp_path, caplog):
    wal = tmp_path / "wal"
    log = IngestLog(str(wal))
    log.append(events(["a"]))
    log.append(events(["b", "c"]))
    log.append(events(["d"]))
    middle = sorted(wal.glob("*.arrow"))[1]
    middle.write_bytes(middle.read_bytes()[:40])  # a torn write
    again = IngestLog(str(wal))
    assert str(middle) in caplog.text
    assert again.stats()["damaged"] == [str(middle)]
    df, nxt = again.read(0, 10)
    assert list(df["event_id"]) == ["a", "d"] and nxt == 4
    assert again.append(events(["e"])) == (1, 0) and again.read(4, 10)[0]["event_id"].tolist() == ["e"]


def test_a_damaged_commit_marker_falls_back_to_the_previous_one(tmp_path, caplog):
    wal = tmp_path / "wal"
    log = IngestLog(str(wal))
    log.append(events(["a", "b"]))
    log.commit(2)
    log.append(events(["c"]))
    log.commit(3)
    markers = sorted(p for p in wal.iterdir() if p.name.startswith("committed"))
    markers[-1].write_bytes(b"")
    again = IngestLog(str(wal))
    assert str(markers[-1]) in caplog.text
    assert again.stats()["next_position"] == 3  # the segment after the previous commit is still there
    assert again.append(events(["a", "c"])) == (0, 2)
    assert again.append(events(["d"])) == (1, 0) and again.read(3, 10)[0]["event_id"].tolist() == ["d"]


def test_without_a_write_ahead_log_a_restarted_buffer_numbers_new_rows_after_its_reader():
    """Checkpoints off: what the buffer held is gone with it, but rows accepted after the restart are not skipped."""
    log = IngestLog()
    log.append(events(["a", "b", "c"]))
    _, pos = log.read(0, 10)  # the coordinator is at 3
    restarted = IngestLog()
    assert restarted.append(events(["d", "e"])) == (2, 0)
    df, nxt = restarted.read(pos, 10)
    assert list(df["event_id"]) == ["d", "e"] and nxt == pos + 2
