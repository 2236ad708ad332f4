"""HTTP push ingestion: events accepted by ``POST /ingest`` wait in a durable log until a checkpoint.

``IngestLog`` is plain Python: an append-only sequence of rows, idempotent by event id
(a client retrying a request does not add its events twice), replayable by position,
and written ahead to storage (one Arrow file per append, typed so any JSON a client sends
can be stored) so acknowledged events survive a restart of the actor. Ids count as seen
only once their rows are written, so a failed write can be retried. Each commit writes a
marker with the committed position and the remembered ids, so a restarted log numbers
new rows after everything already checkpointed and still refuses a retry of a committed
row; the previous commit's rows stay on disk for a start that falls back to the previous
checkpoint. Its rows held in memory are capped in bytes (``max_bytes``): an append that would
go past the cap raises ``IngestBufferFull`` (counted in ``stats()``, nothing taken, no id
remembered), which the HTTP API answers with 429 and ``Retry-After``; the next checkpoint's
commit frees the rows it covers. ``IngestLog`` is a ``Stateful``
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
import logging
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import ray

from streamfit.config import HttpSourceConfig
from streamfit.storage import Storage
from streamfit.schema import ENTITY, EVENT_ID, KIND, hash_keys
from streamfit.actors.stream.dedup import Dedup, isin_sorted
from streamfit.actors.stream.replay_log import frame_bytes


LEGACY_COMMITTED = "committed.json"  # the committed position as written before commit markers held the ids
MARKER = "committed-"  # committed-<position>.arrow: the ids remembered at that commit, positions in metadata
WAL_WRITE_ATTEMPTS = 5  # tries of each write-ahead write, with exponential backoff (0.05 s, 0.1 s, …)

log = logging.getLogger(__name__)
BUFFER_BYTES, RETRY_AFTER_S = HttpSourceConfig().buffer_max_bytes, HttpSourceConfig().retry_after_s


class IngestBufferFull(Exception):
    """The ingest log holds ``max_bytes`` of rows not yet checkpointed: the client retries after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:  # crosses Ray with its retry time
        return (IngestBufferFull, (str(self), self.retry_after_s))


def typed_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows as Arrow can always store them: ids and keys as text, other columns as numbers or else text.

    Missing values stay missing; a value that is not a number stays visible as text, so the
    shards still reject its row with the same reason.

    >>> typed_frame(pd.DataFrame({"event_id": [7, "e8"], "x0": [1, "abc"], "x1": [2, None]})).to_dict("list")
    {'event_id': ['7', 'e8'], 'x0': ['1', 'abc'], 'x1': [2.0, nan]}
    """
    out = {}
    for col in rows.columns:
        values = rows[col]
        if col in (KIND, EVENT_ID, ENTITY) or values.dtype == object:
            text = pd.api.types.infer_dtype(values, skipna=True) == "string"  # text already (the usual case)
            num = None if text or col in (KIND, EVENT_ID, ENTITY) else _numbers(values)
            if text:
                values = values.where(values.notna(), None) if values.isna().any() else values
            elif num is not None:
                values = num
            else:
                values = values.map(lambda v: v if isinstance(v, str) else None if pd.isna(v) else str(v),
                                    na_action="ignore").astype(object).where(values.notna(), None)
        out[col] = values.reset_index(drop=True)
    return pd.DataFrame(out, index=pd.RangeIndex(len(rows)))


def _numbers(values: pd.Series) -> pd.Series | None:
    """The column as floats when every value present is a number, else None."""
    try:
        num = pd.to_numeric(values, errors="coerce")
    except (TypeError, ValueError):  # nested values (lists, dicts) are not numbers
        return None
    return None if (num.isna() & values.notna()).any() else num.astype(float)


def _segment_name(base: str) -> tuple[int, int | None] | None:
    """(first position, rows) of a write-ahead segment's file name; rows unknown in names written before."""
    if not base.endswith(".arrow") or not base[:1].isdigit():
        return None
    parts = base[:-6].split("-")
    return int(parts[0]), int(parts[1]) if len(parts) == 3 else None


def _arrow_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


class IngestLog:
    """Rows pushed over HTTP, numbered from 0; rows before the committed position are forgotten.

    Durable with ``wal_uri``: every append is one segment file written before it is
    acknowledged; every commit writes a marker with the positions and the ids remembered
    for dedup before any segment goes; the segments and marker of the previous commit are
    kept, so a start that falls back to the previous checkpoint still reads its rows. A
    damaged segment or marker found at start is logged with its path, listed in
    ``stats()["damaged"]`` and skipped. Without ``wal_uri`` (checkpoints off) a restart loses
    the rows held, and the first read from a position past the log's end numbers the rows
    accepted since from that position, so none of them is skipped, and a read frees the rows before
    its position (no checkpoint will commit them). Rows held past ``max_bytes`` are refused
    (``IngestBufferFull``); an append to an empty log is always taken.
    """

    def __init__(self, wal_uri: str | None = None, dedup_capacity: int = 1_000_000, max_bytes: int = BUFFER_BYTES,
                 retry_after_s: int = RETRY_AFTER_S) -> None:
        self.max_bytes, self.retry_after_s = max_bytes, retry_after_s
        self.refused = {"requests": 0, "rows": 0}
        self._sizes: dict[tuple[int, int], int] = {}  # (first position, rows) -> bytes of that frame
        self.frames: list[tuple[int, pd.DataFrame]] = []  # (first position, rows) from the committed position on
        self.segments: dict[int, tuple[str, int | None]] = {}  # first position -> (write-ahead file, rows)
        self.next_position = 0
        self.committed = 0
        self.previous: int | None = None  # the commit before: its rows stay on disk for a fallback to it
        self.damaged: list[str] = []
        self.dedup = Dedup(dedup_capacity)
        # A transient storage error is retried with backoff before the request sees it (then 503, never 500).
        self.store = Storage(wal_uri, what="ingest log", write_attempts=WAL_WRITE_ATTEMPTS) if wal_uri else None
        if self.store is not None:
            self.store.ensure_dir(self.store.root)
            self._recover()

    @staticmethod
    def _dedup_keys(rows: pd.DataFrame) -> np.ndarray:
        # An event and its label share an event id: they are told apart by kind.
        return hash_keys((rows[EVENT_ID].astype(str) + "|" + rows[KIND].astype(str)).values)

    def _damaged(self, path: str, err: Exception) -> None:
        log.error("ingest log: skipping damaged file %s (%s)", path, err)
        self.damaged.append(path)

    def _load(self, path: str) -> pd.DataFrame | None:
        try:
            return ipc.open_file(pa.BufferReader(self.store.get(path))).read_all().to_pandas()
        except (pa.ArrowException, OSError, ValueError) as err:  # a storage error (StreamfitError) propagates
            self._damaged(path, err)
            return None

    def _recover(self) -> None:
        infos = self.store.list(self.store.root)
        markers = sorted((i for i in infos if i.base_name.startswith(MARKER) and i.base_name.endswith(".arrow")),
                         key=lambda i: i.base_name, reverse=True)
        found = False
        for info in markers:  # the newest readable marker; a damaged one falls back to the one before
            try:
                table = ipc.open_file(pa.BufferReader(self.store.get(info.path))).read_all()
                meta = {k.decode(): int(v) for k, v in (table.schema.metadata or {}).items()}
                self.dedup.restore({"ids": table["ids"].to_numpy(), "n_old": meta["n_old"]})
                self.committed, self.previous = meta["committed"], meta["previous"] if meta["previous"] >= 0 else None
                found = True
                break
            except (pa.ArrowException, KeyError, ValueError) as err:
                self._damaged(info.path, err)
        legacy = self.store.path(LEGACY_COMMITTED)
        if not self.committed and self.store.exists(legacy):
            try:
                self.committed = int(json.loads(self.store.get(legacy))["committed"])
            except (ValueError, KeyError, TypeError) as err:
                self._damaged(legacy, err)
        segments = sorted((n, i.path) for i in infos if (n := _segment_name(i.base_name)) is not None)
        floor = None
        for (first, rows), path in segments:
            df = self._load(path)
            self.segments[first] = (path, len(df) if df is not None else rows)
            end = first + (len(df) if df is not None else rows or 0)
            self.next_position = max(self.next_position, end)
            if df is None:
                continue
            self.dedup.check_and_add(self._dedup_keys(df))
            floor = first if floor is None else floor
            if end > self.committed:
                self.frames.append((first, df))
        if not found and floor is not None:  # no marker yet: rows before the first segment are committed
            self.committed = max(self.committed, floor)
        self.next_position = max(self.next_position, self.committed)

    def append(self, rows: pd.DataFrame) -> tuple[int, int]:
        """Append rows not seen before (by event id and kind); returns (accepted, duplicates).

        Ids count as seen only once the rows are written ahead: a failed write may be retried.
        """
        if not len(rows):
            return 0, 0
        rows = typed_frame(rows)
        keys = self._dedup_keys(rows)
        has_id = rows[EVENT_ID].notna().to_numpy() if EVENT_ID in rows else np.zeros(len(rows), bool)
        dup = self._seen(keys) & has_id  # rows without an id go on, for the shards to reject with a reason
        fresh = rows[~dup].reset_index(drop=True)
        if len(fresh):
            size, held = frame_bytes(fresh), self.held_bytes()
            if held and held + size > self.max_bytes:  # refused before the write: nothing taken, no id kept
                self.refused["requests"] += 1
                self.refused["rows"] += len(fresh)
                raise IngestBufferFull(f"{held} bytes held until the next checkpoint, cap {self.max_bytes}",
                                       self.retry_after_s)
            first = self.next_position
            if self.store is not None:  # write ahead: acknowledged rows survive a restart
                segment = self.store.path(f"{first:015d}-{len(fresh):09d}-{uuid.uuid4().hex[:6]}.arrow")
                self.store.put(segment, _arrow_bytes(pa.Table.from_pandas(fresh, preserve_index=False)))
                self.segments[first] = (segment, len(fresh))
            self.dedup.check_and_add(keys[~dup & has_id])
            self.frames.append((first, fresh))
            self.next_position += len(fresh)
        return len(fresh), int(dup.sum())

    def held_bytes(self) -> int:
        """Bytes of the rows held in memory (those not yet committed); each frame is measured once."""
        self._sizes = {(f, len(df)): self._sizes.get((f, len(df))) or frame_bytes(df) for f, df in self.frames}
        return sum(self._sizes.values())

    def _seen(self, keys: np.ndarray) -> np.ndarray:
        """Mask of keys remembered, or repeated earlier in ``keys``; remembers nothing."""
        dup = isin_sorted(self.dedup.old, keys)
        for chunk in self.dedup.new:
            dup |= isin_sorted(chunk, keys)
        _, first = np.unique(keys, return_index=True)
        repeat = np.ones(len(keys), dtype=bool)
        repeat[first] = False
        return dup | repeat

    def _frames_from(self, position: int) -> list[tuple[int, pd.DataFrame]]:
        """The frames holding rows from ``position`` on: committed ones still on disk are read back."""
        if self.store is None or position >= self.committed:
            return self.frames
        held = {first for first, _ in self.frames}
        back = []
        for first, (path, rows) in sorted(self.segments.items()):
            if first not in held and first < self.committed and (rows is None or first + rows > position):
                df = self._load(path)
                if df is not None:
                    back.append((first, df))
        return back + self.frames

    def read(self, position: int, max_rows: int) -> tuple[pd.DataFrame, int]:
        """Up to ``max_rows`` rows from ``position`` and the position after them."""
        if self.store is None and position > self.next_position:
            # Only a log restarted without a write-ahead log is behind its reader: its rows go on from there.
            shift = position - self.committed
            self.frames = [(first + shift, df) for first, df in self.frames]
            self.committed, self.next_position = self.committed + shift, self.next_position + shift
        if self.store is None and position > self.committed:
            self.commit(position)  # nothing can re-read rows behind the reader without a write-ahead log: free them
        parts, n = [], 0
        kept = self.previous if self.store is not None and self.previous is not None else self.committed
        pos = max(position, kept)
        for first, df in self._frames_from(pos):
            if first + len(df) <= pos:
                continue
            pos = max(pos, first)  # past the gap a damaged segment left
            take = df.iloc[pos - first: pos - first + max_rows - n]
            parts.append(take)
            pos, n = pos + len(take), n + len(take)
            if n >= max_rows:
                break
        if not parts:
            return pd.DataFrame(), pos
        return pd.concat(parts, ignore_index=True), pos

    def commit(self, position: int) -> None:
        """Rows before ``position`` are in a checkpoint: forget them (their files once the next commit is written)."""
        if position <= self.committed:
            return
        previous = self.committed or None  # 0: nothing was committed before
        if self.store is not None:  # first: a failed write changes nothing and the commit can be retried
            self._write_marker(position, previous)
        self.previous, self.committed = previous, position
        self.frames = [(first, df) for first, df in self.frames if first + len(df) > self.committed]

    def _write_marker(self, committed: int, previous: int | None) -> None:
        # The marker goes before any file, so a restart never numbers rows from 0 again nor forgets their ids.
        snap = self.dedup.snapshot()
        before = -1 if previous is None else previous
        meta = {"committed": str(committed), "previous": str(before), "n_old": str(snap["n_old"])}
        table = pa.table({"ids": pa.array(snap["ids"], pa.uint64())}, metadata=meta)
        self.store.put(self.store.path(f"{MARKER}{committed:015d}.arrow"), _arrow_bytes(table))
        for first, (path, rows) in list(self.segments.items()):
            if rows is not None and first + rows <= before:
                self.store.delete_file(path)
                del self.segments[first]
        for info in self.store.list(self.store.root):
            number = info.base_name[len(MARKER):-6]
            if info.base_name.startswith(MARKER) and number.isdigit() and int(number) < before:
                self.store.delete_file(info.path)
        self.store.delete_file(self.store.path(LEGACY_COMMITTED))

    def stats(self) -> dict[str, Any]:
        """Positions, rows held and the damaged files skipped at start."""
        return {"next_position": self.next_position, "committed": self.committed,
                "rows_held": int(sum(len(df) for _, df in self.frames)), "bytes_held": self.held_bytes(),
                "max_bytes": self.max_bytes, "refused_requests": self.refused["requests"],
                "refused_rows": self.refused["rows"], "damaged": list(self.damaged)}

    def snapshot(self) -> dict[str, Any]:
        """Positions, the rows not yet committed (column arrays per append) and the remembered ids."""
        frames = [{"first": first, "columns": {str(c): df[c].to_numpy() for c in df.columns}}
                  for first, df in self.frames]
        return {"committed": self.committed, "previous": self.previous, "next_position": self.next_position,
                "frames": frames, "dedup": self.dedup.snapshot()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the in-memory state with ``snap``'s (the write-ahead log is left as it is)."""
        self.committed = int(snap["committed"])
        self.previous = None if snap.get("previous") is None else int(snap["previous"])
        self.next_position = int(snap["next_position"])
        self.frames = [(int(f["first"]), pd.DataFrame({c: np.array(v) for c, v in f["columns"].items()}))
                       for f in snap["frames"]]
        self.dedup.restore(snap["dedup"])


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class IngestBufferActor:
    """Named actor holding the IngestLog; the Router appends, the coordinator reads and commits."""

    def __init__(self, wal_uri: str | None, max_bytes: int = BUFFER_BYTES, retry_after_s: int = RETRY_AFTER_S) -> None:
        self.log = IngestLog(wal_uri, max_bytes=max_bytes, retry_after_s=retry_after_s)

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


def ingest_frame(events: list[dict[str, Any]] | dict[str, list[Any]]) -> pd.DataFrame:
    """Request rows (dicts, or columns of equal length) to a batch frame (kind defaults to 'event')."""
    df = pd.DataFrame(events)
    if "kind" not in df:
        df["kind"] = "event"
    df["kind"] = df["kind"].fillna("event")
    return df.replace({None: np.nan})
