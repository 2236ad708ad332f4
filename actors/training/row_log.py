"""The trainer's durable state: the training rows it took, as Parquet segments beside the checkpoints.

Each call that changes the trainer writes one segment, one atomic object: the rows it took (none
for a requested refit) and, in the Parquet metadata, the trainer's state after them (policy
counters and detector, refit history, clock; see ``TrainerCore.snapshot``). A restarted trainer
reads the segments in order: the newest ``keep_rows`` rows are its window again, and the newest
readable segment's state is its state, so rows and state always come from one write.

    <root>/segments/000000000007.parquet        rows of one call, state after it
    <root>/segments/000000000042-base.parquet   a compaction: the whole window then, and the state

Bounded by the trainer's window: after each write, segments whose rows all lie before the window
start are deleted; past ``max_segments`` (small batches), the next write is a base segment holding
the whole window, and every older segment is deleted. A segment that cannot be read (truncated,
zero-length) is reported in ``damaged`` with its path and skipped, never raised: the trainer
starts with what the others hold. The window's ``window_s`` cut applies when a refit reads the
window, so bounding by rows keeps every row a refit can use.

Example:
    >>> import tempfile, pandas as pd
    >>> log = RowLog(tempfile.mkdtemp(), keep_rows=3)
    >>> for i in range(3):
    ...     log.append(pd.DataFrame({"t": [2.0 * i, 2.0 * i + 1]}), {"calls": i + 1})
    >>> rows, state = RowLog(log.store.uri, keep_rows=3).load(["t"])
    >>> rows["t"].tolist(), state, len(log.segments)
    ([3.0, 4.0, 5.0], {'calls': 3}, 2)
"""

from __future__ import annotations

import io
import json
import logging
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from streamfit.errors import StreamfitError
from streamfit.storage import Storage

log = logging.getLogger(__name__)

STATE_KEY = b"streamfit.trainer_state"
MAX_SEGMENTS = 64
WRITE_ATTEMPTS = 4


class RowLogError(StreamfitError):
    """The trainer's row log could not be written or listed (the trainer goes on without it)."""


def to_json(value: Any) -> Any:
    """Plain data (numpy arrays included) as JSON values; ``from_json`` inverts it."""
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def from_json(value: Any) -> Any:
    """The inverse of ``to_json``."""
    if isinstance(value, dict):
        if "__array__" in value:
            return np.asarray(value["__array__"], dtype=np.dtype(value["dtype"]))
        return {k: from_json(v) for k, v in value.items()}
    return [from_json(v) for v in value] if isinstance(value, list) else value


@dataclass
class Segment:
    """One segment object: its sequence number, its row count (0 when unreadable) and whether it is a base."""

    seq: int
    rows: int
    base: bool

    @property
    def name(self) -> str:
        return f"{self.seq:012d}{'-base' if self.base else ''}.parquet"


def parse_name(name: str) -> Segment | None:
    """The segment a file name describes (None for anything else, e.g. a temporary)."""
    stem = name.rsplit("/", 1)[-1]
    if not stem.endswith(".parquet"):
        return None
    head, base = stem[: -len(".parquet")], False
    if head.endswith("-base"):
        head, base = head[: -len("-base")], True
    return Segment(int(head), 0, base) if head.isdigit() else None


class RowLog:
    """Parquet segments of training rows, each with the trainer's state after it, bounded by the window."""

    def __init__(self, uri: str, keep_rows: int, max_segments: int = MAX_SEGMENTS) -> None:
        self.store = Storage(uri, error=RowLogError, what="trainer row log", write_attempts=WRITE_ATTEMPTS)
        self.keep_rows, self.max_segments = keep_rows, max(2, max_segments)
        self.segments: list[Segment] = []  # oldest first
        self.damaged: list[str] = []  # "path: error" of segments skipped when loading
        self.write_failures = 0
        self.next_seq: int | None = None  # known once loaded

    def _path(self, seg: Segment) -> str:
        return self.store.path("segments", seg.name)

    def _list(self) -> list[Segment]:
        found = [s for info in self.store.list(self.store.path("segments")) if (s := parse_name(info.path))]
        return sorted(found, key=lambda s: s.seq)

    def _read(self, seg: Segment) -> tuple[pd.DataFrame, dict[str, Any] | None]:
        with self.store.open(self._path(seg)) as f:
            table = pq.read_table(f)
        meta = (table.schema.metadata or {}).get(STATE_KEY)
        return table.to_pandas(), from_json(json.loads(zlib.decompress(meta))) if meta else None

    # -- start -------------------------------------------------------------------------
    def load(self, columns: list[str]) -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
        """The window (the newest ``keep_rows`` rows since the newest base) and the newest readable state."""
        listed, self.segments = self._list(), []
        bases = [i for i, s in enumerate(listed) if s.base]
        older, listed = listed[: bases[-1]] if bases else [], listed[bases[-1]:] if bases else listed
        frames, state = [], None
        for seg in listed:
            try:
                frame, seg_state = self._read(seg)
                if list(frame.columns) != list(columns):
                    raise ValueError(f"columns {list(frame.columns)} are not the trainer's {list(columns)}")
            except Exception as err:  # a damaged or foreign segment: reported, skipped, never a crash loop
                self.damaged.append(f"{self._path(seg)}: {type(err).__name__}: {err}")
                log.warning("trainer row log: skipping %s", self.damaged[-1])
                self.segments.append(seg)
                continue
            seg.rows = len(frame)
            self.segments.append(seg)
            frames.append(frame)
            state = seg_state if seg_state is not None else state
        for seg in older:  # a compaction that stopped before deleting what it replaced
            self.store.delete_file(self._path(seg))
        self.store.clean_stale(self.store.path("tmp"))  # temporaries of a writer that died mid-write
        self.next_seq = (self.segments[-1].seq if self.segments else 0) + 1
        if not frames:
            return None, state
        window = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return window.iloc[-self.keep_rows:].reset_index(drop=True), state

    # -- each change -------------------------------------------------------------------
    def append(self, rows: pd.DataFrame, state: dict[str, Any], window: pd.DataFrame | None = None) -> None:
        """Write ``rows`` and ``state`` as the next segment (the whole ``window`` as a base past ``max_segments``),
        then delete the segments the window no longer reaches. Raises ``RowLogError`` if the write failed."""
        if self.next_seq is None:
            self.load(list(rows.columns))  # never loaded: continue after what is there
        base = window is not None and len(self.segments) + 1 > self.max_segments
        seg = Segment(self.next_seq, len(window) if base else len(rows), base)
        try:
            table = pa.Table.from_pandas(window if base else rows, preserve_index=False)
            # Compressed: Arrow keeps the metadata twice (footer and schema), and the refit records repeat keys.
            table = table.replace_schema_metadata({STATE_KEY: zlib.compress(json.dumps(to_json(state)).encode())})
            out = io.BytesIO()
            pq.write_table(table, out)
            self.store.put(self._path(seg), out.getvalue())
        except (RowLogError, pa.ArrowException, TypeError, ValueError) as err:  # storage down, or rows Arrow refuses
            self.write_failures += 1
            raise err if isinstance(err, RowLogError) else RowLogError(f"segment {seg.name}: {err}") from None
        self.next_seq += 1
        self.segments.append(seg)
        self._trim()

    def _trim(self) -> None:
        """Delete segments older than the newest base, or whose rows all lie before the window start."""
        bases = [i for i, s in enumerate(self.segments) if s.base]
        first = bases[-1] if bases else 0
        held = 0
        for i in range(len(self.segments) - 1, first - 1, -1):
            if held >= self.keep_rows:
                first = i + 1
                break
            held += self.segments[i].rows
        for seg in self.segments[:first]:
            self.store.delete_file(self._path(seg))
        self.segments = self.segments[first:]

    def stats(self) -> dict[str, Any]:
        """Segments held, rows in them, failed writes and damaged segments skipped at start."""
        return {"segments": len(self.segments), "rows": sum(s.rows for s in self.segments),
                "write_failures": self.write_failures, "damaged": list(self.damaged)}
