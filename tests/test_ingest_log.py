"""The HTTP ingest log: idempotent appends, replay by position, and a write-ahead log that survives a restart."""

from __future__ import annotations

import pandas as pd

from streamfit.actors.stream.ingest import IngestLog


def rows(ids, kind="event"):
    return pd.DataFrame({"kind": kind, "event_id": ids, "entity": "u1", "event_time": 1.0})


def test_a_restarted_log_keeps_acknowledged_rows_and_still_refuses_retries(tmp_path):
    log = IngestLog(str(tmp_path / "wal"))
    assert log.append(rows(["a", "b"])) == (2, 0)
    assert log.append(rows(["a"], kind="label")) == (1, 0)  # a label shares its event's id
    again = IngestLog(str(tmp_path / "wal"))  # the actor restarted
    df, nxt = again.read(0, 10)
    assert list(df["event_id"]) == ["a", "b", "a"] and nxt == 3
    assert again.append(rows(["a", "b"])) == (0, 2)  # a client's retry after the restart adds nothing
    assert again.append(rows(["a"], kind="label")) == (0, 1)
    again.commit(2)  # the first segment is in a checkpoint: its file goes
    third = IngestLog(str(tmp_path / "wal"))
    df, nxt = third.read(0, 10)
    assert list(df["kind"]) == ["label"] and nxt == 3
