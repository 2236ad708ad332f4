"""Shared by the shard tests: a synthetic stream as the coordinator would send it, fed through
a Partitioner to in-process shards, and the re-sharding of a checkpoint into more shards."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.partition import Partitioner, Watermark
from streamfit.actors.stream.sources import SyntheticSource
from streamfit.config import FeaturesConfig, StreamConfig

Batch = tuple[int, pd.DataFrame, float]


def make_batches(n: int, stream: StreamConfig, features: FeaturesConfig) -> list[Batch]:
    """(batch id, frame, watermark) for the first ``n`` batches of a synthetic stream."""
    src = SyntheticSource(stream, features)
    wm = Watermark(features.allowed_lateness_s)
    out, pos = [], 0
    for bid in range(1, n + 1):
        df, pos = src.read(pos)
        out.append((bid, df, wm.observe(df)))
    return out


def feed(shards: list[FeatureShard], batches: list[Batch]) -> pd.DataFrame:
    """Send batches through a Partitioner to the shards (with the stream clock); all training rows."""
    part = Partitioner(len(shards))
    rows, clock = [], float("-inf")
    for bid, df, wm in batches:
        clock = max(clock, float(df["event_time"].max()))  # as the coordinator sends it
        for i, p in enumerate(part.split(df)):
            res = shards[i].process(bid, p, wm, clock)
            assert res.replay_from is None
            rows.append(res.training_rows)
    return pd.concat(rows, ignore_index=True)


def reshard_two_into_three(store_at: Callable[[], CheckpointStore], features: FeaturesConfig,
                           batches: list[Batch], cut: int) -> tuple[list, list, list]:
    """Two shards checkpoint after ``cut`` batches; three restore from that checkpoint. Returns
    (the two, the three moved, three fresh shards fed the same batches), having checked that every
    entity's window and label rows moved unchanged into exactly one new shard."""
    two = [FeatureShard(features, i) for i in range(2)]
    feed(two, batches[:cut])
    store = store_at()
    for i, s in enumerate(two):
        store.write_shard(1, i, s.snapshot())
    store.write_manifest(1, batch_id=cut, position=cut, num_shards=2)
    moved = []
    for i in range(3):  # restarted with 3 shards: each loads its keys from the 2-shard checkpoint
        s = FeatureShard(features, i)
        s.restore(store_at().load_shard_state(i, 3, features))
        assert s.stats()["last_batch_id"] == cut
        moved.append(s)
    fresh = [FeatureShard(features, i) for i in range(3)]
    feed(fresh, batches[:cut])
    for i in range(3):
        for part in ("events", "labels"):
            a, b = getattr(moved[i], part).snapshot(), getattr(fresh[i], part).snapshot()
            for k in ("keys", "times", "values"):
                assert np.array_equal(a[k], b[k]), (i, part, k)
    assert sum(len(s.events) for s in moved) == sum(len(s.events) for s in two) > 0
    return two, moved, fresh


def shard_state(shard: FeatureShard) -> dict:
    """A comparable copy of everything the shard holds (dedup ids as a set: their order is not state)."""
    snap = shard.snapshot()
    out = {"meta": snap["meta"]}
    for part in ("events", "labels", "pending"):
        for k, v in snap[part].items():
            out[f"{part}.{k}"] = np.array(v, copy=True)
    out["dedup"] = np.sort(snap["dedup"]["ids"])
    return out


def assert_same_state(a: dict, b: dict) -> None:
    """Two ``shard_state`` copies are equal, array by array (NaN equal to NaN)."""
    assert a.keys() == b.keys()
    assert a["meta"] == b["meta"]
    for k in a:
        if k != "meta":
            assert a[k].dtype == b[k].dtype, k
            assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
