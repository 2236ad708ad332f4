"""Online lookups: a raw event in, the model row a shard would compute for it now, out.

``FeatureShard.lookup`` scores events against a ``ShardView``: the shard's state as it was
after its last applied batch. The view holds the same ``SeriesStore`` arrays as the shard;
it can be shared because the store never changes an array in place (every insert and prune
builds new arrays and then rebinds them), so a view published after a batch stays exactly
that batch's state while the next batch is applied. A lookup reads ``shard.view`` once and
never touches the live state: that is what lets the Ray actor answer lookups in their own
concurrency group, beside a running ``process()``, without a lock.

This module prepares the rows (the time of an event without one is the shard's stream
clock; the fields go through ``streamfit.schema.check_columns``, the rules ``validate`` applies
to every ingested event; times too far from the clock are refused) and holds the answer type;
the features themselves come from ``FeatureShard._features_at``, the function that makes
training rows. A Router sends its events as ``EventArrays`` (plain arrays: nothing to parse,
and Ray ships them whole); a frame is accepted too.

Every answer says how busy the shard is applying batches (``LookupResult.busy``, a ``BusyMeter``):
a lookup call costs the shard a fixed few milliseconds of CPU in Ray whatever its size, taken from
``process()`` (same process, same GIL), so a Router spaces its calls to a busy shard further apart
and sends more events per call (``serve/lookup.py``).

Example:
    >>> import pandas as pd
    >>> from streamfit.config import FeaturesConfig, ModelConfig
    >>> ev = pd.DataFrame({"entity": ["u", "u"], "event_time": [float("nan"), 1e9],
    ...                    "x0": [1.0, 1.0], "x1": [0.0, 0.0], "x2": [0.0, "a"], "event_id": ["", "e"]})
    >>> clean, reason, times, ids = prepare(ev, FeaturesConfig(), clock_us=10_000_000)
    >>> reason.tolist(), float(times[0]), ids.tolist()
    (['', 'non_numeric:x2'], 10.0, ['', 'e'])
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig, ModelConfig
from streamfit.schema import EVENT_ID, EVENT_TIME, KIND, EventArrays, check_columns
from streamfit.actors.stream.task_columns import CategoryTexts
from streamfit.actors.stream.windows import US, SeriesStore

NO_CLOCK = int(np.iinfo(np.int64).min)  # the stream clock before any event


@dataclass
class LookupResult:
    """Model rows of looked-up events (rows not scored are NaN and carry a reason)."""

    features: np.ndarray  # (n, len(feature_names)) float64, NaN = missing
    feature_names: list[str]  # == FeaturesConfig.feature_names()
    times: np.ndarray  # the event time (s) each row was computed at
    as_of: float  # the shard's stream clock (s); NaN before any event
    reasons: list[str]  # '' if scored, else why not ('non_numeric:x0', 'event_time_future', ...)
    busy: float = 0.0  # share of recent wall time the shard spent applying batches (BusyMeter)
    # A categorical field's column in ``features`` is NaN; its text per row is here (None = missing or not scored).
    text: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.reasons)

    def scored(self) -> np.ndarray:
        """Mask of the rows that were scored."""
        return np.array([r == "" for r in self.reasons], dtype=bool)

    def rows(self) -> pd.DataFrame:
        """The model rows as a frame, categorical columns as text (what a version's CategoryDictionary encodes)."""
        out = pd.DataFrame(self.features, columns=list(self.feature_names))
        for name, values in self.text.items():
            out[name] = pd.Series(values, dtype=object)
        return out


class BusyMeter:
    """Share of recent wall time spent between ``begin()`` and ``end()``: an exponential average over ``tau_s``.

    Written by the thread that applies batches, read by lookup threads: the state is one tuple,
    rebound whole, so a reader never sees half an update.

    >>> m = BusyMeter(tau_s=1.0)
    >>> m.begin(now=0.0); m.end(now=10.0); round(m.share(now=10.0), 3)   # busy for ten taus
    1.0
    >>> round(m.share(now=11.0), 3)                                      # then idle for one
    0.368
    """

    def __init__(self, tau_s: float = 1.0) -> None:
        self.tau_s = tau_s
        self._state: tuple[float, float | None, bool] = (0.0, None, False)  # (share at t, t, busy since t)

    def begin(self, now: float | None = None) -> None:
        """A busy stretch starts."""
        now = time.monotonic() if now is None else now
        self._state = (self.share(now), now, True)

    def end(self, now: float | None = None) -> None:
        """The busy stretch ends."""
        now = time.monotonic() if now is None else now
        self._state = (self.share(now), now, False)

    def share(self, now: float | None = None) -> float:
        """The share of recent time spent busy, in [0, 1]."""
        s, t, busy = self._state
        if t is None:
            return s
        decay = math.exp(-max(0.0, (time.monotonic() if now is None else now) - t) / self.tau_s)
        return 1.0 - (1.0 - s) * decay if busy else s * decay


@dataclass(frozen=True)
class ShardView:
    """A shard's state after one batch, frozen: what lookups read while the next batch is applied."""

    events: SeriesStore
    labels: SeriesStore
    clock_us: int
    last_batch_id: int
    texts: CategoryTexts = field(default_factory=CategoryTexts)  # categories read back as <field>_last

    @classmethod
    def of(cls, events: SeriesStore, labels: SeriesStore, clock_us: int, last_batch_id: int,
           texts: CategoryTexts | None = None) -> "ShardView":
        """A view sharing the stores' (and the category map's) current arrays: replaced, never written, afterwards."""
        return cls(events.frozen(), labels.frozen(), int(clock_us), int(last_batch_id),
                   (texts or CategoryTexts()).frozen())

    @property
    def as_of(self) -> float:
        """The stream clock in seconds (NaN before any event)."""
        return float("nan") if self.clock_us == NO_CLOCK else self.clock_us / US


def prepare(events: pd.DataFrame | EventArrays, cfg: FeaturesConfig, clock_us: int,
            model: ModelConfig | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """(clean columns, reason per row ('' = score it), event time in seconds, event id ('' = none)) per lookup row."""
    n = len(events)
    has_clock = clock_us != NO_CLOCK
    now = clock_us / US if has_clock else 0.0  # before any event every history is empty, at any time
    cols, t, ids = _columns(events)
    cols[EVENT_TIME] = np.where(np.isnan(t), now, t)
    cols.pop(KIND, None)  # every lookup row is an event
    # A lookup may name no event; validate's rule that events carry an id is for the stream.
    cols[EVENT_ID] = np.full(n, "-", dtype=object)
    clean, reason = check_columns(cols, n, cfg, model)
    times = clean[EVENT_TIME]
    if has_clock:
        ok = reason == ""
        reason[ok & (times > now + cfg.max_future_s)] = "event_time_future"
        reason[ok & (times < now - cfg.max_past_s)] = "event_time_past"
    return clean, reason, times, ids


def _columns(events: pd.DataFrame | EventArrays) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(columns by name, event time (NaN = none), event id ('' = none)) of a lookup's input."""
    if isinstance(events, EventArrays):
        return events.columns(), np.asarray(events.event_time, dtype=float), np.asarray(events.event_id, dtype=object)
    n = len(events)
    t = pd.to_numeric(events[EVENT_TIME], errors="coerce").to_numpy(dtype=float) if EVENT_TIME in events \
        else np.full(n, np.nan)
    ids = events[EVENT_ID].fillna("").astype(str).to_numpy(dtype=object) if EVENT_ID in events \
        else np.full(n, "", dtype=object)
    return {c: events[c] for c in events.columns}, t, ids
