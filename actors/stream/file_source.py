"""Replay of a CSV, Parquet or JSON-lines file in event-time order.

The whole file is read once (with ``pyarrow``) into one ordered stream of rows; the
position is the index of the next row in that stream, so reading a position again
gives the same rows, and a checkpoint that records it can replay from there.

- Columns are renamed with ``columns`` (streamfit name -> file column); file columns
  that are not part of the batch schema are dropped.
- The time column becomes float epoch seconds (``time_unit``: ``s``/``ms``/``us``/``ns``
  for numbers, ``datetime`` for strings; Arrow/pandas timestamps are converted whatever
  the unit). A time that cannot be parsed becomes NaN, and the shards reject the row.
- Without an ``event_id`` column each row gets the stable id ``row-<n>`` (``n`` = its
  0-based row number in the file).
- Without a ``kind`` column every row is an event; its label, when the file has one,
  arrives as a separate label row ``label_delay_s`` after the event (same ``event_id``
  and ``entity``, fields NaN), and the event row itself carries no label.
- A value that is not a number stays in the frame as it is, so the shards reject the
  row with a reason instead of the source crashing.
- ``speed``: ``None`` replays as fast as possible; otherwise event time advances at
  ``speed`` x wall-clock time from the first read (``read`` returns the rows that are
  due, waiting at most ``MAX_WAIT_S`` at a time, so a stop request is never blocked).

Example:
    >>> import pathlib, tempfile
    >>> from streamfit.config import FeaturesConfig, FileSourceConfig
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.csv"
    >>> _ = path.write_text("customer_id,ts,x0,x1,x2,y\\nc1,20,1,2,3,1\\nc2,10,4,5,6,0\\n")
    >>> cfg = FileSourceConfig(path=str(path), label_delay_s=5,
    ...                        columns={"entity": "customer_id", "event_time": "ts", "label": "y"})
    >>> src = FileReplaySource(cfg, FeaturesConfig())
    >>> batch, nxt = src.read(src.initial_position())
    >>> for row in batch[["kind", "event_id", "entity", "event_time", "label"]].itertuples(index=False):
    ...     print(*row)
    event row-1 c2 10.0 nan
    label row-1 c2 15.0 0.0
    event row-0 c1 20.0 nan
    label row-0 c1 25.0 1.0
    >>> nxt, src.at_end(nxt)
    (4, True)
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from streamfit.config import FeaturesConfig, FileSourceConfig
from streamfit.errors import ConfigError
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL, LABEL_KIND

log = logging.getLogger(__name__)

SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
TIME_SCALE = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
MAX_WAIT_S = 1.0  # longest single sleep inside read() when pacing
_WHERE = "stream.file"  # config path used in error messages


def numeric_or_raw(values: pd.Series) -> pd.Series:
    """Numbers as float64; a value that is not a number is kept as it is (object column).

    >>> numeric_or_raw(pd.Series(["1.5", "abc", None])).tolist()
    [1.5, 'abc', nan]
    """
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype(float)
    num = pd.to_numeric(values, errors="coerce").astype(float)
    bad = num.isna() & values.notna()
    if not bad.any():
        return num
    out = num.astype(object)
    out[bad] = values[bad]
    return out


def as_text(value: Any) -> Any:
    """Ids, keys and kinds as strings (12 and 12.0 -> "12"); a missing value stays None.

    >>> [as_text(v) for v in (12, 12.0, "u1", None, float("nan"), 2.5)]
    ['12', '12', 'u1', None, None, '2.5']
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)


def epoch_seconds(values: pd.Series, unit: str) -> pd.Series:
    """Float epoch seconds from numbers in ``unit`` or from datetimes; unparseable -> NaN.

    >>> epoch_seconds(pd.Series([1500, None]), "ms").tolist()
    [1.5, nan]
    >>> epoch_seconds(pd.Series(["1970-01-01T00:01:00Z", "soon"]), "datetime").tolist()
    [60.0, nan]
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values.dtype):
        return _datetime_seconds(values)
    if unit != "datetime":
        return pd.to_numeric(values, errors="coerce").astype(float) / TIME_SCALE[unit]
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype(float)  # numbers given with time_unit 'datetime' are epoch seconds
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    retry = parsed.isna() & values.notna()
    if retry.any():  # other layouts ("01/02/2024 10:00", …): slower per-value parsing, only where needed
        parsed[retry] = pd.to_datetime(values[retry].astype(str), errors="coerce", utc=True, format="mixed")
    return _datetime_seconds(parsed)


def _datetime_seconds(values: pd.Series) -> pd.Series:
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_localize("UTC")  # naive timestamps are read as UTC
    return ((values - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).astype(float)


class Pacer:
    """Event time advances at ``speed`` x wall-clock time from the first event time it sees.

    >>> p = Pacer(10.0)
    >>> p.delay(100.0, now=50.0)  # the first call sets the origin
    0.0
    >>> p.delay(110.0, now=50.5)  # 10 s of event time = 1 s of wall time at 10x; 0.5 s already passed
    0.5
    >>> p.replay_time(now=52.0)
    120.0
    """

    def __init__(self, speed: float) -> None:
        self.speed = float(speed)
        self.origin: tuple[float, float] | None = None  # (event time, wall time)

    def start(self, event_time: float, now: float) -> None:
        if self.origin is None:
            self.origin = (float(event_time), float(now))

    def replay_time(self, now: float) -> float:
        """Event time that is due at wall time ``now``."""
        if self.origin is None:
            return math.inf
        t0, w0 = self.origin
        return t0 + (now - w0) * self.speed

    def delay(self, event_time: float, now: float) -> float:
        """Seconds to wait at wall time ``now`` before the row at ``event_time`` is due (0 when due)."""
        self.start(event_time, now)
        t0, w0 = self.origin  # type: ignore[misc]
        return max(0.0, (event_time - t0) / self.speed - (now - w0))


class FileReplaySource:
    """A file replayed as one event-time-ordered stream; position = index of the next row."""

    def __init__(
        self,
        cfg: FileSourceConfig,
        features: FeaturesConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg = cfg
        self.fields = [f.name for f in features.fields]
        self.text_fields = set(features.categorical_fields())  # a file's categories are text, whatever they look like
        self.format = self._format()
        self.pacer = Pacer(cfg.speed) if cfg.speed is not None else None
        self._clock, self._sleep = clock, sleep
        self.frame = self._load()

    # -- Source protocol -------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    @property
    def num_rows(self) -> int:
        """Rows in the ordered stream (events plus label rows)."""
        return len(self.frame)

    def initial_position(self) -> int:
        """The first row."""
        return 0

    def at_end(self, position: int) -> bool:
        """True once every row has been read."""
        return int(position) >= len(self.frame)

    def read(self, position: int) -> tuple[pd.DataFrame, int]:
        """Up to ``batch_size`` rows from ``position`` (only those already due when paced) and the next position."""
        start = int(position)
        batch = self.frame.iloc[start : start + self.cfg.batch_size]
        if self.pacer is not None and len(batch):
            batch = self._due(batch)
        return batch.reset_index(drop=True), start + len(batch)

    def commit(self, position: int) -> None:
        """Nothing to release: the file can be re-read from any position."""

    def close(self) -> None:
        """Nothing to close: the file was read whole at start."""

    # -- pacing ----------------------------------------------------------------------

    def _due(self, batch: pd.DataFrame) -> pd.DataFrame:
        times = batch[EVENT_TIME].to_numpy(dtype=float)
        finite = times[np.isfinite(times)]
        if not len(finite):
            return batch  # only rows without a time: nothing to wait for (the shards reject them)
        assert self.pacer is not None
        wait = self.pacer.delay(float(finite[0]), self._clock())
        if wait > 0:
            self._sleep(min(wait, MAX_WAIT_S))
        due_until = self.pacer.replay_time(self._clock())
        due = (times <= due_until) | ~np.isfinite(times)
        n = len(due) if due.all() else int(np.argmin(due))  # rows are time-ordered: `due` is a prefix
        return batch.iloc[:n]

    # -- loading ---------------------------------------------------------------------

    def _format(self) -> str:
        if self.cfg.format is not None:
            return self.cfg.format
        suffix = Path(self.cfg.path).suffix.lower()
        if suffix not in SUFFIX_FORMATS:
            raise ConfigError(
                f"{_WHERE}.format: cannot tell the format of {self.cfg.path!r} from its suffix; "
                "set format to csv, parquet or jsonl"
            )
        return SUFFIX_FORMATS[suffix]

    def _read(self) -> pa.Table | pd.DataFrame:
        path = self.cfg.path
        if not Path(path).is_file():
            raise ConfigError(f"{_WHERE}.path: no such file {path!r}")
        try:
            if self.format == "parquet":
                return pq.read_table(path)
            if self.format == "csv":
                return _read_csv(path)
            return _read_jsonl(path)
        except (pa.ArrowException, OSError, ValueError) as err:
            raise ConfigError(f"{_WHERE}.path: cannot read {path!r} as {self.format}: {err}") from None

    def _select(self, data: pa.Table | pd.DataFrame) -> pd.DataFrame:
        """The batch columns of the file under their streamfit names; ids, keys and kinds as text."""
        names = list(data.column_names) if isinstance(data, pa.Table) else [str(c) for c in data.columns]
        known = [KIND, EVENT_ID, ENTITY, EVENT_TIME, *self.fields, LABEL]
        for name, column in self.cfg.columns.items():
            if name not in known:
                raise ConfigError(f"{_WHERE}.columns.{name}: not a batch column (one of {known})")
            if column not in names:
                raise ConfigError(
                    f"{_WHERE}.columns.{name}: column {column!r} not in {self.cfg.path!r} (columns: {names})"
                )
        chosen = {name: self.cfg.columns.get(name, name) for name in known}
        chosen = {name: column for name, column in chosen.items() if column in names}
        for name in (ENTITY, EVENT_TIME):
            if name not in chosen:
                raise ConfigError(
                    f"{_WHERE}.columns.{name}: no {name!r} column in {self.cfg.path!r} "
                    f"(columns: {names}); map one, e.g. columns: {{{name}: <file column>}}"
                )
        text = (KIND, EVENT_ID, ENTITY)
        if isinstance(data, pa.Table):
            arrays = {}
            for name, column in chosen.items():
                arr = data.column(column)
                arrays[name] = _as_string(arr) if name in text and not pa.types.is_string(arr.type) else arr
            return pa.table(arrays).to_pandas()
        df = pd.DataFrame({name: data[column].to_numpy() for name, column in chosen.items()})
        for name in text:
            if name in df:
                df[name] = df[name].map(as_text)
        return df

    def _load(self) -> pd.DataFrame:
        df = self._select(self._read())
        n = len(df)
        df[EVENT_TIME] = epoch_seconds(df[EVENT_TIME], self.cfg.time_unit)
        if EVENT_ID not in df:
            df[EVENT_ID] = pd.Series([f"row-{i}" for i in range(n)], dtype=object)
        for name in [*self.fields, LABEL]:
            if name not in df:
                df[name] = np.nan
            elif name in self.text_fields:  # a CSV cannot say 75001 is a postcode: its categories are read as text
                df[name] = df[name].astype(object).map(as_text)
            else:
                df[name] = numeric_or_raw(df[name])
        if KIND in df:
            rows = df  # the file already says which rows are events and which are labels
        else:
            df[KIND] = EVENT
            events = df.assign(**{LABEL: np.nan})
            has_label = df[LABEL].notna() & df[EVENT_TIME].notna()  # an event without a time is rejected anyway
            labels = df.loc[has_label, [EVENT_ID, ENTITY, EVENT_TIME, LABEL]].assign(**{KIND: LABEL_KIND})
            labels[EVENT_TIME] = labels[EVENT_TIME] + self.cfg.label_delay_s
            for name in self.fields:
                labels[name] = np.nan
            rows = pd.concat([events, labels], ignore_index=True) if len(labels) else events
        rows = rows[[KIND, EVENT_ID, ENTITY, EVENT_TIME, *self.fields, LABEL]]
        # Stable: equal times keep file order, and a label never overtakes its own event.
        out = rows.sort_values(EVENT_TIME, kind="stable", na_position="last", ignore_index=True)
        log.info("file source %s: %d rows (%d events) from %s", self.format, len(out), n, self.cfg.path)
        return out


def _as_string(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """Ids and keys as strings (17 -> "17", not 17.0 after a null made pandas use floats)."""
    try:
        if pa.types.is_floating(arr.type):
            # whole floats (17.0) come from integer ids that a null turned into floats
            as_int = pc.cast(arr, pa.int64(), safe=True)
            return pc.cast(as_int, pa.string())
    except pa.ArrowInvalid:
        pass
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return arr  # nested values stay as they are; the shards stringify keys


def _read_csv(path: str) -> pa.Table:
    convert = pa_csv.ConvertOptions(strings_can_be_null=True)
    try:
        return pa_csv.read_csv(path, convert_options=convert)
    except pa.ArrowInvalid as err:
        # Types are inferred from the first block: a bad value in a later block fails the
        # conversion. Read every column as text then; numbers are parsed per column later.
        log.warning("%s: %s; reading every column as text", path, err)
        names = pa_csv.open_csv(path).schema.names
        convert = pa_csv.ConvertOptions(strings_can_be_null=True, column_types={c: pa.string() for c in names})
        return pa_csv.read_csv(path, convert_options=convert)


def _read_jsonl(path: str) -> pa.Table | pd.DataFrame:
    try:
        return pa_json.read_json(path)
    except pa.ArrowInvalid as err:
        # Mixed types in a column ("x0": 1 then "x0": "abc"), a broken line, or a JSON
        # array: parse in Python and keep every value as it is.
        log.warning("%s: %s; parsing line by line", path, err)
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    records: list[Any]
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except ValueError:
            records = []
    else:
        records = []
        for line in text.splitlines():
            if not line.strip():
                continue  # blank lines are not rows (as for pyarrow)
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({})  # a broken line is a row without values: the shards reject it
    rows = [r if isinstance(r, dict) else {} for r in records]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object) for c in columns})
