"""Micro-batched feature lookups of one Router replica: one call per owning shard per short tick.

``LookupBatcher`` is plain asyncio (unit-tested without Ray). Each request's raw events
(``EventRows``) are split by owning shard (``streamfit.schema.shard_of``, the coordinator's
hash); the parts of every request that arrive within ``wait_s`` go to that shard in one call,
sooner when ``max_batch`` events wait for it. One call per shard is under way at a time (events
arriving meanwhile go together when it ends: under load the batches grow to what the shard can
answer, instead of small calls queueing in front of it). The answer is split back per request, in the
request's row order (``LookupAnswer``). A call slower than ``timeout_s``, or one that fails (an
actor dead or restarting), fails only the requests that had events in it, with
``ShardUnavailable``: the caller answers 503 with ``Retry-After``; other shards keep answering.

Lookups yield to ingestion. A lookup call costs the shard actor a fixed few milliseconds of CPU
(Ray's call path and the GIL it shares with ``process()``; the features themselves ~0.5 ms), taken
from the batches it applies. Each answer says how busy the shard is applying batches
(``LookupResult.busy``, the share of recent wall time); the next call to that shard starts no
sooner than ``gap = max_gap_s * min(1, busy / BUSY_FULL)`` after the last one ended, unless
``max_batch`` events wait. An idle shard (serving only) is called as before; a shard busy half the
time or more gets at most one call per ``max_gap_s`` (50 ms by default here; the Router passes
``serving.lookup_max_gap_ms``, 100) plus the call's own time, with all the events that arrived
meanwhile: fewer, larger calls. The wait a request can add is bounded by
``max_gap_s``; its deadline grows by as much.

Example:
    >>> import asyncio, numpy as np
    >>> from types import SimpleNamespace
    >>> calls = []
    >>> async def call(shard, events, record):
    ...     calls.append((shard, len(events)))
    ...     n = len(events)
    ...     return SimpleNamespace(features=np.zeros((n, 1)), feature_names=["f"], times=events.event_time,
    ...                            as_of=5.0, reasons=[""] * n)
    >>> b = LookupBatcher(call, num_shards=1, wait_s=0.001)
    >>> rows = [EventRows.of([{"entity": "u1", "event_time": 1.0, "x": 2.0}], ["x"]) for _ in range(3)]
    >>> async def main():
    ...     return await asyncio.gather(*(b.lookup(r) for r in rows))
    >>> answers = asyncio.run(main())
    >>> calls, answers[0].as_of.tolist()      # three requests, one call
    ([(0, 3)], [5.0])
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np

from streamfit.schema import ENTITY, EVENT_ID, EVENT_TIME, EventArrays, shard_of

LookupCall = Callable[[int, EventArrays, bool], Awaitable[Any]]
BACKSTOP_S = 0.05  # a request stops waiting this long after its calls should have timed out
BUSY_FULL = 0.5  # a shard applying batches this share of the time or more gets the whole max_gap_s between calls


class ShardUnavailable(Exception):
    """A shard did not answer a lookup in time, or failed (dead or restarting)."""

    def __init__(self, shard: int, why: str) -> None:
        super().__init__(f"feature shard {shard} is unavailable ({why}); retry shortly")
        self.shard = shard


@dataclass
class EventRows:
    """Raw events as columns: entities, times (NaN = the stream's now), ids ('' = none), field values."""

    entity: list[str]
    event_time: np.ndarray
    event_id: list[str]
    x: np.ndarray  # (n, len(fields)) float, NaN = missing (a categorical field's column: NaN, its text in text)
    fields: list[str]
    text: dict[str, np.ndarray] = field(default_factory=dict)  # categorical field -> text per row, None = missing

    @classmethod
    def of(cls, events: list[dict[str, Any]], fields: list[str], categorical: tuple[str, ...] = ()) -> "EventRows":
        """From event dicts (absent or None values become NaN / '' / None); ``categorical`` fields' values go to
        ``text``, as ``EventArrays`` carries them."""
        nan = math.nan
        times = [e.get(EVENT_TIME) for e in events]
        x = [[nan if (v := e.get(f)) is None or f in categorical else v for f in fields] for e in events]
        text = {f: np.array([e.get(f) for e in events], dtype=object) for f in categorical}
        return cls([e[ENTITY] for e in events], np.array([nan if t is None else t for t in times], dtype=float),
                   [e.get(EVENT_ID) or "" for e in events], np.array(x, dtype=float).reshape(len(events), len(fields)),
                   list(fields), text)

    def __len__(self) -> int:
        return len(self.entity)

    def take(self, idx: np.ndarray) -> "EventRows":
        """The rows at positions ``idx``."""
        return EventRows([self.entity[i] for i in idx], self.event_time[idx], [self.event_id[i] for i in idx],
                         self.x[idx], self.fields, {f: t[idx] for f, t in self.text.items()})

    def without_ids(self) -> "EventRows":
        """The same rows with no event ids (the shard logs nothing of them)."""
        return EventRows(self.entity, self.event_time, [""] * len(self), self.x, self.fields, self.text)

    @classmethod
    def concat(cls, parts: list["EventRows"]) -> "EventRows":
        """The rows of every part, in order."""
        if len(parts) == 1:
            return parts[0]
        return cls([e for p in parts for e in p.entity], np.concatenate([p.event_time for p in parts]),
                   [i for p in parts for i in p.event_id], np.vstack([p.x for p in parts]), parts[0].fields,
                   {f: np.concatenate([p.text[f] for p in parts]) for f in parts[0].text})

    def arrays(self, record: bool = True) -> EventArrays:
        """The lookup's input (``FeatureShard.lookup``), plain arrays; without ``record`` the ids are left out."""
        ids = np.array(self.event_id if record else [""] * len(self), dtype=object)
        if not self.text:  # as before categorical fields
            return EventArrays(np.array(self.entity, dtype=object), self.event_time, self.x, list(self.fields), ids)
        return EventArrays(np.array(self.entity, dtype=object), self.event_time, self.x, list(self.fields), ids,
                           text=dict(self.text))


@dataclass
class LookupAnswer:
    """One request's lookup, in its row order: model rows, the time each was computed at, the answering
    shard's stream clock per row, why a row was not scored ('' if it was), and the text of each
    categorical column (its column in ``features`` is NaN)."""

    features: np.ndarray
    feature_names: list[str]
    times: np.ndarray
    as_of: np.ndarray
    reasons: list[str]
    text: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class _Part:
    shard: int
    rows: EventRows
    positions: np.ndarray  # where these rows sit in their request
    record: bool
    done: asyncio.Future
    deadline: float  # loop time by which its request must be answered


class LookupBatcher:
    """Groups concurrent requests' events into one lookup call per owning shard per tick.

    At most ``max_in_flight`` calls per shard are under way: events arriving meanwhile wait and go
    together when a call ends (or, to a shard busy applying batches, up to ``max_gap_s`` later), so
    under load the batches grow to what the shard can answer instead of queueing small calls in front
    of it. A request is answered, or failed, within ``timeout_s`` (plus the tick and ``max_gap_s``) of
    its arrival, however long the calls ahead of it took.
    """

    def __init__(self, call: LookupCall, num_shards: int, wait_s: float = 0.002, max_batch: int = 256,
                 timeout_s: float = 1.0, max_in_flight: int = 1, max_gap_s: float = 0.05) -> None:
        self.call, self.num_shards = call, num_shards
        self.wait_s, self.max_batch, self.timeout_s, self.max_in_flight = wait_s, max_batch, timeout_s, max_in_flight
        self.max_gap_s = max_gap_s
        self._queues: dict[int, list[_Part]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._in_flight: Counter[int] = Counter()
        self._busy: dict[int, float] = {}  # each shard's last reported busy share
        self._next_at: dict[int, float] = {}  # loop time before which no call to the shard starts (unless full)
        self._running: set[asyncio.Task] = set()
        self.counters: Counter[str] = Counter()

    async def lookup(self, rows: EventRows, record: bool = False) -> LookupAnswer:
        """Model rows for ``rows`` from their owning shards; ``ShardUnavailable`` if one of them cannot answer.
        With ``record`` the shards log the served vectors of rows with an event id."""
        loop = asyncio.get_running_loop()
        owners = shard_of(np.asarray(rows.entity, dtype=object), self.num_shards)
        deadline = loop.time() + self.timeout_s + self.wait_s + self.max_gap_s
        parts = []
        for shard in np.unique(owners).tolist():
            idx = np.flatnonzero(owners == shard)
            parts.append(_Part(shard, rows if len(idx) == len(rows) else rows.take(idx), idx, record,
                               loop.create_future(), deadline))
            self._enqueue(parts[-1])
        self.counters["requests"] += 1
        try:  # the calls' own timeouts answer first; this is the backstop
            await asyncio.wait([p.done for p in parts], timeout=deadline - loop.time() + BACKSTOP_S)
            failed = [p.done.exception() if p.done.done() else ShardUnavailable(
                p.shard, f"no answer within {self.timeout_s:g} s") for p in parts]
        finally:
            for p in parts:  # a request that gave up (or was cancelled) leaves nothing waiting
                if not p.done.done():
                    p.done.cancel()
        if any(failed):
            self.counters["unavailable"] += 1
            raise next(f for f in failed if f is not None)
        if len(parts) == 1:
            return parts[0].done.result()
        return self._merge(len(rows), parts, [p.done.result() for p in parts])

    @staticmethod
    def _merge(n: int, parts: list[_Part], answers: list[LookupAnswer]) -> LookupAnswer:
        names = answers[0].feature_names
        feats, times, as_of = np.empty((n, len(names))), np.empty(n), np.empty(n)
        text = {f: np.empty(n, dtype=object) for f in answers[0].text}
        reasons = [""] * n
        for part, a in zip(parts, answers):
            feats[part.positions], times[part.positions], as_of[part.positions] = a.features, a.times, a.as_of
            for f, values in a.text.items():
                text[f][part.positions] = values
            for i, why in zip(part.positions.tolist(), a.reasons):
                reasons[i] = why
        return LookupAnswer(feats, names, times, as_of, reasons, text)

    def gap_s(self, shard: int) -> float:
        """How long after a call to ``shard`` ends the next one waits (unless full): by how busy the shard is."""
        return self.max_gap_s * min(1.0, self._busy.get(shard, 0.0) / BUSY_FULL)

    def _enqueue(self, part: _Part) -> None:
        shard = part.shard
        self._queues.setdefault(shard, []).append(part)
        if self._in_flight[shard] < self.max_in_flight:  # else the call under way sends the queue when it ends
            self._schedule(shard, asyncio.get_running_loop().time() + self.wait_s, tick=True)

    def _schedule(self, shard: int, earliest: float, tick: bool = False) -> None:
        """Send the shard's queue now if full, else at ``earliest`` or when the shard's gap ends, whichever is
        later; with ``tick``, never before the loop's next turn (requests gathered together go together)."""
        if sum(len(p.rows) for p in self._queues.get(shard, ())) >= self.max_batch:
            self.counters["full_batches"] += 1
            return self._flush(shard)
        loop = asyncio.get_running_loop()
        at = max(earliest, self._next_at.get(shard, 0.0))
        if at <= loop.time() and not tick:
            return self._flush(shard)
        timer = self._timers.get(shard)
        if timer is None or timer.when() > at:
            if timer is not None:
                timer.cancel()
            self.counters["spaced"] += at > earliest  # the shard's gap, not the tick, sets the time
            self._timers[shard] = loop.call_at(at, self._flush, shard)

    def _flush(self, shard: int) -> None:
        timer = self._timers.pop(shard, None)
        if timer is not None:
            timer.cancel()
        if self._in_flight[shard] >= self.max_in_flight:
            return
        queue = [p for p in self._queues.pop(shard, []) if not p.done.done()]  # not those whose request gave up
        batch, n = [], 0
        while queue and n < self.max_batch:
            batch.append(queue.pop(0))
            n += len(batch[-1].rows)
        if queue:
            self._queues[shard] = queue
        if batch:
            self._in_flight[shard] += 1
            task = asyncio.get_running_loop().create_task(self._run(shard, batch))
            self._running.add(task)  # the loop keeps only a weak reference to its tasks
            task.add_done_callback(self._running.discard)

    async def _run(self, shard: int, parts: list[_Part]) -> None:
        try:
            await self._answer(shard, parts)
        finally:
            self._in_flight[shard] -= 1
            now = asyncio.get_running_loop().time()
            gap = self.gap_s(shard)
            self._next_at[shard] = now + gap
            if self._queues.get(shard):  # what arrived meanwhile has waited a call's time already: no tick
                self._schedule(shard, now)

    async def _answer(self, shard: int, parts: list[_Part]) -> None:
        record = any(p.record for p in parts)
        # Rows of requests that did not ask to record go without their ids, so the shard logs nothing of them.
        rows = EventRows.concat([p.rows if p.record or not record else p.rows.without_ids() for p in parts])
        left = min(p.deadline for p in parts) - asyncio.get_running_loop().time()
        self.counters["calls"] += 1
        self.counters["events"] += len(rows)
        try:
            if left <= 0:  # queued behind a call that took the time this request had
                raise asyncio.TimeoutError
            result = await asyncio.wait_for(self.call(shard, rows.arrays(record), record), left)
            answers = self._split(result, parts)
            busy = float(getattr(result, "busy", 0.0) or 0.0)
            self._busy[shard] = min(1.0, busy) if busy > 0 else 0.0  # NaN or nonsense: not busy
        except asyncio.TimeoutError:
            self.counters["timeouts"] += 1
            return self._fail(parts, ShardUnavailable(shard, f"no answer within {self.timeout_s:g} s"))
        except Exception as err:  # the actor died, is restarting, or answered nonsense
            self.counters["errors"] += 1
            return self._fail(parts, ShardUnavailable(shard, type(err).__name__))
        for part, answer in zip(parts, answers):
            if not part.done.done():  # a request cancelled meanwhile (client gone) takes no answer
                part.done.set_result(answer)

    @staticmethod
    def _split(result: Any, parts: list[_Part]) -> list[LookupAnswer]:
        n = sum(len(p.rows) for p in parts)
        feats, times, reasons = np.asarray(result.features, dtype=float), np.asarray(result.times), list(result.reasons)
        text = {f: np.asarray(v, dtype=object) for f, v in (getattr(result, "text", None) or {}).items()}
        if len(feats) != n or len(times) != n or len(reasons) != n or any(len(v) != n for v in text.values()):
            raise ValueError(f"lookup answered {len(feats)} rows for {n} events")
        out, start = [], 0
        for p in parts:
            end = start + len(p.rows)
            out.append(LookupAnswer(feats[start:end], list(result.feature_names), times[start:end],
                                    np.full(end - start, float(result.as_of)), reasons[start:end],
                                    {f: v[start:end] for f, v in text.items()}))
            start = end
        return out

    @staticmethod
    def _fail(parts: list[_Part], err: ShardUnavailable) -> None:
        for part in parts:
            if not part.done.done():
                part.done.set_exception(err)

    def stats(self) -> dict[str, int]:
        """Requests, calls, events looked up, full batches, calls held back by a busy shard (spaced), timeouts,
        errors and requests answered unavailable."""
        keys = ("requests", "calls", "events", "full_batches", "spaced", "timeouts", "errors", "unavailable")
        return {k: int(self.counters[k]) for k in keys}
