"""Benchmarks that print ratios against a baseline measured in the same run."""

from __future__ import annotations

import time
from typing import Any, Callable

import pandas as pd
import ray

from streamfit.config import Config, config_from_dict
from streamfit.actors.coordinator import CoordinatorActor
from streamfit.actors.feature_shard import FeatureShard, FeatureShardActor
from streamfit.actors.sources import SyntheticSource
from streamfit.schema import KIND


class ObjectStoreSource:
    """Pre-built batches already in Ray's object store: the sharded path pays no generation cost."""

    def __init__(self, refs: list[Any]) -> None:
        self.refs = refs

    def initial_position(self) -> int:
        return 0

    def read(self, position: int) -> tuple[pd.DataFrame, int]:
        return ray.get(self.refs[position]), position + 1

    def at_end(self, position: int) -> bool:
        return position >= len(self.refs)

    def commit(self, position: int) -> None:
        pass

    def close(self) -> None:
        pass


def ingest_config(entities: int, batch_size: int) -> Config:
    """The default feature set on a stream sized for the benchmark (labels 1,000 events late, no bad rows)."""
    return config_from_dict({
        "stream": {"entities": entities, "batch_size": batch_size, "events_per_second": 1000.0,
                   "label_delay_events": 1000, "bad_row_rate": 0.0, "max_events_per_s": None},
        "checkpoints": {"enabled": False},
    })


def make_batches(cfg: Config, events: int, progress: Callable[[int], None] | None = None) -> list[pd.DataFrame]:
    """The benchmark stream, generated once and shared by both paths."""
    src = SyntheticSource(cfg.stream, cfg.features)
    out, pos, n = [], 0, 0
    while n < events:
        df, pos = src.read(pos)
        out.append(df)
        n += cfg.stream.batch_size
        if progress:
            progress(len(df))
    return out


def run_baseline(cfg: Config, batches: list[pd.DataFrame]) -> tuple[float, FeatureShard]:
    """One in-process FeatureShard over every batch (the single-process vectorised implementation)."""
    shard = FeatureShard(cfg.features, 0)
    lateness = cfg.features.allowed_lateness_s
    max_t = float("-inf")
    started = time.perf_counter()
    for i, df in enumerate(batches, start=1):
        shard.process(i, df, max_t - lateness)
        max_t = max(max_t, float(df["event_time"].max()))
    return time.perf_counter() - started, shard


def run_sharded(cfg: Config, batches: list[pd.DataFrame], num_shards: int) -> tuple[float, list[dict[str, Any]]]:
    """The real CoordinatorActor and FeatureShardActors on Ray, fed from the object store."""
    refs = [ray.put(b) for b in batches]
    shards = [FeatureShardActor.options(num_cpus=0).remote(cfg.features, i, None, num_shards)
              for i in range(num_shards)]
    ray.get([s.stats.remote() for s in shards])
    coord = CoordinatorActor.options(num_cpus=0).remote(cfg, shards, None)
    ray.get(coord.stats.remote())
    ray.get(coord.set_source.remote(ObjectStoreSource(refs)))
    started = time.perf_counter()
    ray.get(coord.run.remote(None))
    elapsed = time.perf_counter() - started
    stats = ray.get([s.stats.remote() for s in shards])
    for a in (coord, *shards):
        ray.kill(a)
    return elapsed, stats


def bench_ingest(num_shards: int, events: int, entities: int, batch_size: int = 20_000,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Events/s of the sharded actors against the single-process baseline on the same events."""
    cfg = ingest_config(entities, batch_size)
    log(f"generating {events:,} events for {entities:,} entities …")
    batches = make_batches(cfg, events)
    n_events = int(sum((b[KIND] == "event").sum() for b in batches))
    log("baseline: one in-process FeatureShard …")
    base_s, base_shard = run_baseline(cfg, batches)
    log(f"sharded: {num_shards} FeatureShard actors on Ray …")
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        shard_s, stats = run_sharded(cfg, batches, num_shards)
    finally:
        if own_ray:
            ray.shutdown()
    sharded_events = sum(s["events"] for s in stats)
    base_events = base_shard.counters["events"]
    if sharded_events != base_events:
        raise RuntimeError(f"sharded path applied {sharded_events} events, baseline {base_events}")
    state = sum(s["state_bytes"] for s in stats)
    return {
        "events": n_events,
        "entities": entities,
        "shards": num_shards,
        "batch_size": batch_size,
        "baseline_events_per_s": n_events / base_s,
        "sharded_events_per_s": n_events / shard_s,
        "ratio": base_s / shard_s,
        "bytes_per_entity": state / max(1, sum(s["entities"] for s in stats)),
        "baseline_bytes_per_entity": base_shard.state_bytes() / max(1, base_shard.events.n_keys()),
        "training_rows": sum(s["training_rows"] for s in stats),
    }
