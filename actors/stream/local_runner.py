"""The whole stream plane in one process: source -> watermark -> partition -> FeatureShard(s) -> training rows.

In the spirit of ``bytewax.testing.run_main``: ``LocalRunner`` drives the same ``Coordinator``
as the Ray actor, with ``FeatureShard`` objects behind in-process ports (``LocalShard``) whose
answers are ready at once, so there is one loop for the cluster, the benchmarks, the quality
replay and the load generator. Every batch is answered before the next is read, and the
training rows it completed are handed to ``on_rows(rows, clock)`` with the stream clock at
that moment (the latest event time read so far).

Example:
    >>> from streamfit.config import FeaturesConfig, StreamConfig
    >>> from streamfit.actors.stream.sources import SyntheticSource
    >>> stream = StreamConfig(batch_size=100, label_delay_events=50, max_events=1000, bad_row_rate=0.0)
    >>> chunks = []
    >>> runner = LocalRunner(FeaturesConfig(), SyntheticSource(stream, FeaturesConfig()), num_shards=2,
    ...                      on_rows=lambda rows, clock: chunks.append(len(rows)))
    >>> stats = runner.run()
    >>> stats["batches"], stats["events"], stats["training_rows"], sum(chunks), len(chunks)
    (10, 1000, 950, 950, 10)
    >>> sum(shard.stats()["events"] for shard in runner.shards)  # every entity on one of the two shards
    1000
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig, ModelConfig
from streamfit.schema import ENTITY, shard_of
from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.coordinator_core import Coordinator, Ready
from streamfit.actors.stream.feature_shard import FeatureShard, ShardResult
from streamfit.actors.stream.lookup import LookupResult
from streamfit.actors.stream.partition import EventTimeGuard
from streamfit.actors.stream.shard_checkpoint import load_shard_checkpoint, rewind_shard, write_shard_checkpoint
from streamfit.actors.stream.sources import Position, Source

RowsCallback = Callable[[pd.DataFrame, float], Any]  # (training rows, stream clock when they completed)


class LocalShard:
    """A FeatureShard in this process behind the coordinator's shard port."""

    def __init__(self, shard: FeatureShard, store: CheckpointStore | None = None) -> None:
        self.shard = shard
        self.store = store

    def process(self, batch_id: int, df: pd.DataFrame, watermark: float, clock: float) -> Ready:
        """Apply the batch now; the answer is ready."""
        result: ShardResult = self.shard.process(batch_id, df, watermark, clock)
        return Ready(result)

    def checkpoint(self, checkpoint_id: int, batch_id: int) -> Ready:
        """Write the snapshot if exactly ``batch_id`` is applied (None otherwise)."""
        if self.store is None or self.shard.last_batch_id != batch_id:
            return Ready(None)
        return Ready(write_shard_checkpoint(self.store, checkpoint_id, self.shard))

    def stats(self) -> Ready:
        """The shard's counters."""
        return Ready(self.shard.stats())

    def rewind(self, batch_id: int) -> Ready:
        """Back to the checkpoint at ``batch_id`` if batches after it were applied (``rewind_shard``)."""
        return Ready(rewind_shard(self.store, self.shard, batch_id))


class _RowsPort:
    """The trainer port of a LocalRunner: calls ``on_rows`` with the rows and the stream clock."""

    def __init__(self, on_rows: RowsCallback, coordinator: Callable[[], Coordinator]) -> None:
        self.on_rows = on_rows
        self.coordinator = coordinator

    def add_rows(self, rows: pd.DataFrame) -> Ready:
        return Ready(self.on_rows(rows, self.coordinator().watermark.clock))


class LocalRunner:
    """Runs a source through ``num_shards`` FeatureShards in this process; training rows go to ``on_rows``.

    With ``checkpoint_uri`` the runner resumes from the last complete checkpoint there and
    writes aligned checkpoints every ``checkpoint_every_s`` and at the end, like the cluster.
    ``event_time`` sets the event-time guard's limits (default: ``StreamConfig``'s); ``model`` the task (labels and
    label history, None = binary).
    Synchronous: call it from code that is not already inside a running event loop.
    """

    def __init__(self, features: FeaturesConfig, source: Source, num_shards: int = 1,
                 on_rows: RowsCallback | None = None, checkpoint_uri: str | None = None,
                 checkpoint_every_s: float = float("inf"), training_features: str = "served",
                 event_time: EventTimeGuard | None = None, model: ModelConfig | None = None) -> None:
        store = CheckpointStore(checkpoint_uri) if checkpoint_uri else None
        self.shards = [FeatureShard(features, i, training_features, model) for i in range(num_shards)]
        for shard in self.shards if store else []:
            load_shard_checkpoint(store, shard, num_shards)
        rows = _RowsPort(on_rows, lambda: self.coordinator) if on_rows is not None else None
        self.coordinator = Coordinator(source, [LocalShard(s, store) for s in self.shards], rows,
                                       lateness_s=features.allowed_lateness_s, max_in_flight=0, store=store,
                                       checkpoint_every_s=checkpoint_every_s, offload=False, replay=False,
                                       feature_names=self.shards[0].feature_names, event_time=event_time)

    @property
    def position(self) -> Position:
        """The source position of the next batch."""
        return self.coordinator.position

    def lookup(self, events: pd.DataFrame, record: bool = False) -> LookupResult:
        """Each event's model row from the shard that owns its entity (``FeatureShard.lookup``), in input order."""
        owner = shard_of(events[ENTITY].to_numpy(dtype=object), len(self.shards))
        parts = [(np.flatnonzero(owner == i), s) for i, s in enumerate(self.shards)]
        answers = [(rows, s.lookup(events.iloc[rows], record)) for rows, s in parts if len(rows)]
        names = self.shards[0].feature_names
        out = LookupResult(np.full((len(events), len(names)), np.nan), list(names), np.full(len(events), np.nan),
                           min((a.as_of for _, a in answers), default=np.nan), [""] * len(events),
                           text={f: np.full(len(events), None, object) for f in self.shards[0].task.cat_cols})
        for rows, a in answers:
            out.features[rows], out.times[rows] = a.features, a.times
            for f, values in a.text.items():
                out.text[f][rows] = values
            for r, why in zip(rows.tolist(), a.reasons):
                out.reasons[r] = why
        return out

    def run(self) -> dict[str, Any]:
        """Until the source ends: drain, checkpoint (when configured), close the source; the coordinator's stats."""
        return asyncio.run(self.coordinator.run())

    def run_until(self, position: Position) -> dict[str, Any]:
        """Read batches until the source position reaches ``position`` (or the source ends); the source stays open."""
        async def steps() -> None:
            while self.coordinator.position < position and not self.coordinator.source.at_end(self.position):
                await self.coordinator.step()

        asyncio.run(steps())
        return self.coordinator.stats()
