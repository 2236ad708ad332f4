"""HTTP push ingestion: events accepted by ``POST /ingest`` wait in a durable log until a checkpoint.

``IngestLog`` is plain Python: an append-only sequence of rows, idempotent by event id
(a client retrying a request does not add its events twice), replayable by position,
and written ahead to storage (one Arrow file per append) so acknowledged events survive a
restart of the actor; the committed position is written there too, so a restarted log
numbers new rows after everything already checkpointed. ``IngestLog`` is a ``Stateful``
(its in-memory state as plain data). ``IngestBufferActor`` is its named Ray shell;
``HttpSource`` is the ``Source`` the coordinator reads it through.

Example:
    >>> import pandas as pd
    >>> log = IngestLog()
    >>> rows = pd.DataFrame({"kind": ["event"], "event_id": ["e1"], "entity": ["u1"], "event_time": [1.0]})
    >>> log.append(rows), log.append(rows)       # the retry adds nothing
    ((1, 0), (0, 1))
    >>> df, nxt = log.read(0, 100); len(df), nxt
    (1, 1)
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import ray

from streamfit.storage import Storage
from streamfit.schema import EVENT_ID, hash_keys
from streamfit.actors.stream.dedup import Dedup


COMMITTED = "committed.json"  # the committed position, beside the write-ahead segments


class IngestLog:
    """Rows pushed over HTTP, numbered from 0; rows before the committed position are forgotten."""

    def __init__(self, wal_uri: str | None = None, dedup_capacity: int = 1_000_000) -> None:
        self.frames: list[tuple[int, pd.DataFrame]] = []  # (first position, rows)
        self.segments: dict[int, str] = {}  # first position -> its write-ahead object
        self.next_position = 0
        self.committed = 0
        self.dedup = Dedup(dedup_capacity)
        self.store = Storage(wal_uri, what="ingest log") if wal_uri else None
        if self.store is not None:
            self.store.ensure_dir(self.store.root)
            self._recover()

    @staticmethod
    def _dedup_keys(rows: pd.DataFrame) -> np.ndarray:
        # An event and its label share an event id: they are told apart by kind.
        return hash_keys((rows[EVENT_ID].astype(str) + "|" + rows["kind"].astype(str)).values)

    def _recover(self) -> None:
        infos = [i for i in self.store.list(self.store.root) if i.base_name.endswith(".arrow")]
        for info in sorted(infos, key=lambda i: i.base_name):
            first = int(info.base_name.split("-")[0])
            df = ipc.open_file(pa.BufferReader(self.store.get(info.path))).read_all().to_pandas()
            self.frames.append((first, df))
            self.segments[first] = info.path
            self.dedup.check_and_add(self._dedup_keys(df))
            self.next_position = max(self.next_position, first + len(df))
        if self.frames:
            self.committed = self.frames[0][0]
        marker = self.store.path(COMMITTED)
        if self.store.exists(marker):  # every segment may be gone: positions still go on from here
            self.committed = max(self.committed, int(json.loads(self.store.get(marker))["committed"]))
        self.next_position = max(self.next_position, self.committed)

    def append(self, rows: pd.DataFrame) -> tuple[int, int]:
        """Append rows not seen before (by event id and kind); returns (accepted, duplicates)."""
        if not len(rows):
            return 0, 0
        dup = self.dedup.check_and_add(self._dedup_keys(rows))
        fresh = rows[~dup].reset_index(drop=True)
        if len(fresh):
            first = self.next_position
            if self.store is not None:  # write ahead: acknowledged rows survive a restart
                sink = io.BytesIO()
                table = pa.Table.from_pandas(fresh, preserve_index=False)
                with ipc.new_file(sink, table.schema) as w:
                    w.write_table(table)
                segment = self.store.path(f"{first:015d}-{uuid.uuid4().hex[:6]}.arrow")
                self.store.put(segment, sink.getvalue())
                self.segments[first] = segment
            self.frames.append((first, fresh))
            self.next_position += len(fresh)
        return len(fresh), int(dup.sum())

    def read(self, position: int, max_rows: int) -> tuple[pd.DataFrame, int]:
        """Up to ``max_rows`` rows from ``position`` and the position after them."""
        parts, pos = [], max(position, self.committed)
        for first, df in self.frames:
            end = first + len(df)
            if end <= pos:
                continue
            take = df.iloc[pos - first: pos - first + max_rows - sum(len(p) for p in parts)]
            parts.append(take)
            pos += len(take)
            if sum(len(p) for p in parts) >= max_rows:
                break
        if not parts:
            return pd.DataFrame(), pos
        return pd.concat(parts, ignore_index=True), pos

    def commit(self, position: int) -> None:
        """Rows before ``position`` are in a checkpoint: forget them (and their write-ahead files)."""
        if position <= self.committed:
            return
        self.committed = position
        if self.store is not None:  # before the segments go, so a restart never numbers rows from 0 again
            self.store.put(self.store.path(COMMITTED), json.dumps({"committed": position}).encode())
        keep = []
        for first, df in self.frames:
            if first + len(df) <= self.committed:
                segment = self.segments.pop(first, None)
                if self.store is not None and segment is not None:
                    self.store.delete_file(segment)
            else:
                keep.append((first, df))
        self.frames = keep

    def stats(self) -> dict[str, Any]:
        """Positions and rows held."""
        return {"next_position": self.next_position, "committed": self.committed,
                "rows_held": int(sum(len(df) for _, df in self.frames))}

    def snapshot(self) -> dict[str, Any]:
        """Positions, the rows not yet committed (column arrays per append) and the remembered ids."""
        frames = [{"first": first, "columns": {str(c): df[c].to_numpy() for c in df.columns}}
                  for first, df in self.frames]
        return {"committed": self.committed, "next_position": self.next_position, "frames": frames,
                "dedup": self.dedup.snapshot()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the in-memory state with ``snap``'s (the write-ahead log is left as it is)."""
        self.committed = int(snap["committed"])
        self.next_position = int(snap["next_position"])
        self.frames = [(int(f["first"]), pd.DataFrame({c: np.array(v) for c, v in f["columns"].items()}))
                       for f in snap["frames"]]
        self.dedup.restore(snap["dedup"])


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class IngestBufferActor:
    """Named actor holding the IngestLog; the Router appends, the coordinator reads and commits."""

    def __init__(self, wal_uri: str | None) -> None:
        self.log = IngestLog(wal_uri)

    def append(self, rows: pd.DataFrame) -> tuple[int, int]:
        return self.log.append(rows)

    def read(self, position: int, max_rows: int) -> tuple[pd.DataFrame, int]:
        return self.log.read(position, max_rows)

    def commit(self, position: int) -> None:
        self.log.commit(position)

    def stats(self) -> dict[str, Any]:
        return self.log.stats()


class HttpSource:
    """The coordinator's view of the ingest buffer (position = row sequence number).

    ``buffer`` is the ``IngestBufferActor``'s handle, or an ``IngestLog`` in this process
    (a local runner, tests).
    """

    def __init__(self, buffer: Any, batch_size: int) -> None:
        self.buffer = buffer
        self.batch_size = batch_size

    def _call(self, method: str, *args: Any) -> Any:
        if isinstance(self.buffer, IngestLog):
            return getattr(self.buffer, method)(*args)
        return ray.get(getattr(self.buffer, method).remote(*args))

    def initial_position(self) -> int:
        """The log's committed position: everything before it is in a checkpoint."""
        return int(self._call("stats")["committed"])

    def read(self, position: int) -> tuple[pd.DataFrame, int]:
        """Up to ``batch_size`` rows from ``position`` and the position after them."""
        return self._call("read", position, self.batch_size)

    def at_end(self, position: int) -> bool:
        """Pushed events have no end."""
        return False

    def commit(self, position: int) -> None:
        """The log forgets the rows before ``position`` (and their write-ahead files)."""
        self._call("commit", position)

    def close(self) -> None:
        """Nothing to close: the buffer outlives the source."""


def ingest_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    """Request rows to a batch frame (kind defaults to 'event')."""
    df = pd.DataFrame(events)
    if "kind" not in df:
        df["kind"] = "event"
    df["kind"] = df["kind"].fillna("event")
    return df.replace({None: np.nan})
