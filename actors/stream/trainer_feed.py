"""Training rows on their way to the trainer: one call in flight, a bounded queue behind it, drops counted.

The coordinator must never wait on the trainer: a refit can take minutes, and a trainer that
crashed or hangs would otherwise stop ingestion. ``TrainerFeed.offer`` sends a batch at once
when no call is in flight, else queues it. A trainer that is merely slower than an unpaced replay
loses nothing: past ``max_queued`` batches the oldest two are merged, so the next call hands over
more rows at once. Only past ``max_queued_rows`` (far more than a training window holds) is the
OLDEST batch dropped (the trainer prefers recent rows), counted in ``training_batches_dropped`` /
``training_rows_dropped`` and logged — never silent. A call that fails is counted in
``trainer_errors`` (its rows in ``training_rows_failed``); the next queued batch goes as soon as a call ends. ``flush`` hands over what
is queued within a time limit; what the trainer does not take by then is counted as dropped.
Answers that are ready at once (``Ready``, an in-process port) never occupy the slot.

Example:
    >>> import asyncio, collections
    >>> from streamfit.actors.stream.coordinator_core import Ready
    >>> class Port:
    ...     def add_rows(self, rows):
    ...         return Ready(len(rows))
    >>> counters = collections.Counter()
    >>> feed = TrainerFeed(Port(), counters, max_queued=2)
    >>> feed.offer([1, 2, 3]); asyncio.run(feed.flush(1.0)); counters["training_rows"], feed.queued
    (3, 0)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from typing import Any, Awaitable, Sized

log = logging.getLogger(__name__)


class TrainerFeed:
    """Training-row batches to a trainer port without ever blocking the caller on the trainer."""

    def __init__(self, port: Any, counters: Counter[str], max_queued: int = 8, max_queued_rows: int = 200_000) -> None:
        self.port, self.counters, self.max_queued = port, counters, max(1, max_queued)
        self.max_queued_rows = max_queued_rows
        self.queue: deque[Sized] = deque()
        self.call: asyncio.Future | None = None

    @property
    def queued(self) -> int:
        """Batches waiting behind the call in flight."""
        return len(self.queue)

    def offer(self, batch: Sized) -> None:
        """Send ``batch`` now if no call is in flight, else queue it (dropping the oldest when full)."""
        self.counters["training_rows"] += len(batch)
        if self.call is None:
            self._send(batch)
            return
        self.queue.append(batch)
        while len(self.queue) > self.max_queued:
            first = self.queue.popleft()
            self.queue[0] = _merged(first, self.queue[0])
        while len(self.queue) > 1 and sum(len(b) for b in self.queue) > self.max_queued_rows:
            self._drop(self.queue.popleft(), f"the trainer is busy and over {self.max_queued_rows} rows wait")

    def _drop(self, batch: Sized, why: str) -> None:
        self.counters["training_batches_dropped"] += 1
        self.counters["training_rows_dropped"] += len(batch)
        log.warning("%d training rows dropped: %s (%d dropped so far)", len(batch), why,
                    self.counters["training_rows_dropped"])

    def _send(self, batch: Sized) -> None:
        from streamfit.actors.stream.coordinator_core import Ready  # the coordinator imports this module

        try:
            answer = self.port.add_rows(batch)
        except Exception:  # an in-process trainer that raised: counted, the stream goes on
            self._failed(batch)
            return
        if isinstance(answer, Ready):
            return  # taken already: the slot stays free
        self.call = asyncio.ensure_future(self._await(answer, batch))
        self.call.add_done_callback(self._next)

    async def _await(self, answer: Awaitable[Any], batch: Sized) -> None:
        try:
            await answer
        except Exception:  # a crashed or restarting trainer: counted, the stream goes on
            self._failed(batch)

    def _failed(self, batch: Sized) -> None:
        self.counters["trainer_errors"] += 1
        self.counters["training_rows_failed"] += len(batch)
        log.exception("the trainer failed to take %d training rows", len(batch))

    def _next(self, done: asyncio.Future) -> None:
        if self.call is done:
            self.call = None
            if self.queue:
                self._send(self.queue.popleft())

    async def flush(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s`` in all) until every queued batch is handed over; the rest is dropped, counted."""
        deadline = time.monotonic() + timeout_s
        while self.call is not None:
            call = self.call
            try:
                await asyncio.wait_for(asyncio.shield(call), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                self.counters["trainer_timeouts"] += 1
                while self.queue:
                    self._drop(self.queue.popleft(), f"the trainer did not answer within {timeout_s:.0f}s")
                return
            if self.call is call:  # its callback has not run yet
                self._next(call)


def _merged(a: Any, b: Any) -> Any:
    """Two queued batches as one (training-row frames, or plain sequences), oldest rows first."""
    if hasattr(a, "iloc"):
        import pandas as pd

        return pd.concat([a, b], ignore_index=True)
    return list(a) + list(b)
