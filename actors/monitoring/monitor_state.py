"""What the monitor keeps across a restart: its stream monitor (reference, drift window, outcomes, alarm) and
its refit alarm's cooldown, in one Parquet object (``<uri>/state.parquet``) beside the checkpoints.

``MonitorState.save`` writes, at most every ``every_s`` seconds and only when something changed, one
atomic object: the stream monitor's window of labelled rows as the table, and in its metadata the
rest of ``StreamMonitor.snapshot()`` (the live version it measures, that version's reference
quantiles, each version's outcomes on the stream, the alarm) and ``RefitAlarm.snapshot()``.
``load`` puts them back into a fresh ``Monitor`` and loads the booster of the version measured
from the registry. An object that cannot be read is reported (``stats()["damaged"]``) and
ignored: the monitor starts empty, never in a crash loop.

Example:
    >>> import tempfile, pandas as pd
    >>> from streamfit.config import MonitorConfig
    >>> from streamfit.actors.monitoring.core import Monitor
    >>> mon = Monitor(MonitorConfig(), feature_names=["x"])
    >>> mon.stream.set_live(3, None, {"reference": {"x": [0.0, 1.0, 2.0]}})
    >>> mon.stream.observe(pd.DataFrame({"x": [0.5, 1.5], "label": [1.0, 0.0]}))
    >>> state = MonitorState(tempfile.mkdtemp()); state.save(mon, now=100.0)
    True
    >>> again = Monitor(MonitorConfig(), feature_names=["x"]); MonitorState(state.store.uri).load(again)
    True
    >>> again.stream.version, again.stream.reference, len(again.stream.frame())
    (3, {'x': [0.0, 1.0, 2.0]}, 2)
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamfit.errors import StreamfitError
from streamfit.registry import version_task
from streamfit.storage import Storage
from streamfit.actors.monitoring.core import Monitor



class MonitorStateError(StreamfitError):
    """The monitor's state could not be written or read."""


log = logging.getLogger(__name__)
META_KEY, SAVE_EVERY_S = b"streamfit.monitor_state", 10.0  # the metadata key; seconds between writes at most


def plain(value: Any) -> Any:
    """A snapshot's values as JSON values (arrays as lists; outcomes are (n, 2) float arrays)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


class MonitorState:
    """Saves and loads a ``Monitor``'s stream monitor and refit alarm under one storage root."""

    def __init__(self, uri: str, every_s: float = SAVE_EVERY_S) -> None:
        self.store = Storage(uri, error=MonitorStateError, what="monitor state", write_attempts=4)
        self.path = self.store.path("state.parquet")
        self.every_s = every_s
        self.saved_at, self.saved_key = float("-inf"), None
        self.writes = self.write_failures = 0
        self.damaged: str | None = None

    @staticmethod
    def _key(monitor: Monitor) -> tuple:
        """Changes whenever the state does: rows observed, version, alarm, requests."""
        return (monitor.rows_observed, monitor.stream.version, monitor.stream.alarm, len(monitor.alarm.requests),
                monitor.alarm.last_request)

    def save(self, monitor: Monitor, now: float, force: bool = False) -> bool:
        """Write the state if it changed and ``every_s`` passed since the last write (or ``force``); True if written."""
        key = self._key(monitor)
        if key == self.saved_key or (not force and now - self.saved_at < self.every_s):
            return False
        stream = monitor.stream.snapshot()
        window = stream.pop("window")
        rest = {"stream": stream, "alarm": monitor.alarm.snapshot(), "rows_observed": monitor.rows_observed}
        try:
            table = pa.Table.from_pydict({c: pa.array(v) for c, v in window.items()})
            table = table.replace_schema_metadata({META_KEY: json.dumps(plain(rest)).encode()})
            out = io.BytesIO()
            pq.write_table(table, out)
            self.store.put(self.path, out.getvalue())
        except (MonitorStateError, pa.ArrowException) as err:  # counted; the monitor goes on, tries again later
            self.write_failures += 1
            log.warning("monitor: state not saved: %s", err)
            return False
        self.saved_at, self.saved_key, self.writes = now, key, self.writes + 1
        return True

    def load(self, monitor: Monitor) -> bool:
        """Put the saved state into ``monitor`` (and load its version's booster); False if there was none."""
        try:
            if not self.store.exists(self.path):
                return False
            with self.store.open(self.path) as f:
                table = pq.read_table(f)
            rest = json.loads(table.schema.metadata[META_KEY])
            window = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
            monitor.stream.restore({**rest["stream"], "window": window})
            monitor.alarm.restore(rest["alarm"])
            monitor.rows_observed = int(rest["rows_observed"])
        except Exception as err:  # damaged or unreadable: reported, the monitor starts empty
            self.damaged = f"{self.path}: {type(err).__name__}: {err}"
            log.error("monitor: saved state skipped: %s", self.damaged)
            return False
        version = monitor.stream.version
        if version is not None and monitor.stream.booster is None and monitor.registry is not None:
            try:
                monitor.stream.booster, meta = monitor.registry.load(version)
                monitor.stream.cats = version_task(meta).categories
            except Exception as err:  # the version is gone: the next follow_live moves to the live one
                log.warning("monitor: version %s of the saved state cannot be loaded: %s", version, err)
        self.saved_key = self._key(monitor)
        return True

    def stats(self) -> dict[str, Any]:
        """Writes, failed writes, and the saved state skipped at start (None if it was read)."""
        return {"writes": self.writes, "write_failures": self.write_failures, "damaged": self.damaged}
