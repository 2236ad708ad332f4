"""``streamfit bench ingest``: the shard actors at steady state against one in-process shard and against
the offline vectorised pass (``ingest_offline``) over the same stream, with memory per active entity.

The stream spans ``SPAN_WINDOWS`` times the largest window in event time, so the windows fill,
rows leave them and idle entities expire: the last tenth of the batches runs at steady state.
Throughput by position comes from when the coordinator reads each batch (it reads batch
``i + depth + 1`` once batch ``i`` is answered); memory is sampled on the shard actors during the run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np
import pandas as pd
import ray

from streamfit.config import Config, config_from_dict
from streamfit.actors.stream import (CoordinatorActor, FeatureShard, FeatureShardActor, FramesSource, LocalRunner,
                                     SyntheticSource)
from streamfit.schema import EVENT_ID, EVENT_TIME, KIND
from streamfit.scripts.ingest_offline import compare, decile_rates, done_times, offline_features
from streamfit.scripts.load import event_bodies
from streamfit.scripts.loadgen import CpuMeter, PacedCalls

SPAN_WINDOWS = 2.2  # event time of the default stream, in largest windows (2M events at 250/s: 2.2 h)
DEFAULT_EVENTS, DEFAULT_PACE = 2_000_000, 250.0
MEMORY_EVERY_S = 1.0


class ObjectStoreSource:
    """Pre-built batches already in Ray's object store: the sharded path pays no generation cost."""

    def __init__(self, refs: list[Any]) -> None:
        self.refs = refs
        self.reads: list[float] = []  # wall time of each read: a batch is read once an older one is answered

    def initial_position(self) -> int:
        return 0

    def read(self, position: int) -> tuple[pd.DataFrame, int]:
        self.reads.append(time.time())
        return ray.get(self.refs[position]), position + 1

    def at_end(self, position: int) -> bool:
        return position >= len(self.refs)

    def commit(self, position: int) -> None:
        pass

    def close(self) -> None:
        pass


def ingest_config(entities: int, batch_size: int, events_per_second: float = 1000.0) -> Config:
    """The default feature set on a stream sized for the benchmark (labels 1,000 events late, no bad rows);
    ``events_per_second`` is the pace of event time."""
    return config_from_dict({
        "stream": {"entities": entities, "batch_size": batch_size, "events_per_second": events_per_second,
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


class TimedFrames(FramesSource):
    """FramesSource that notes when each batch is read (in process, the one before it is answered by then)."""

    def __init__(self, frames: list[pd.DataFrame]) -> None:
        super().__init__(frames)
        self.reads: list[float] = []

    def read(self, position: int) -> tuple[pd.DataFrame, int]:
        self.reads.append(time.time())
        return super().read(position)


def run_baseline(cfg: Config, batches: list[pd.DataFrame]) -> tuple[float, FeatureShard, pd.DataFrame, dict[str, float]]:
    """One in-process FeatureShard over every batch (the single-process vectorised implementation); its rows
    and throughput by decile of the stream."""
    rows: list[pd.DataFrame] = []
    source = TimedFrames(batches)
    runner = LocalRunner(cfg.features, source, on_rows=lambda r, _clock: rows.append(r))
    started = time.perf_counter()
    runner.run()
    elapsed, end = time.perf_counter() - started, time.time()
    reads, events = np.array(source.reads), np.array([int((b[KIND] == "event").sum()) for b in batches])
    deciles = decile_rates(events, done_times(reads, end, 0), reads[0])
    return elapsed, runner.shards[0], pd.concat(rows, ignore_index=True), deciles


class RouterLookups:
    """Lookups sent to the shard actors as a Router replica sends them: through its ``LookupBatcher`` (one call
    per shard under way, the events that arrive meanwhile go together), on an event loop in its own thread.
    ``send(i)`` looks up event ``i`` (modulo) at the shards' "now" and returns a concurrent Future."""

    def __init__(self, cfg: Config, shards: list[Any], batch: pd.DataFrame, n: int = 1000) -> None:
        from streamfit.serve.lookup import EventRows, LookupBatcher

        async def call(shard: int, frame: pd.DataFrame, record: bool) -> Any:
            return await shards[shard].lookup.remote(frame, record)

        s = cfg.serving
        self.batcher = LookupBatcher(call, len(shards), wait_s=s.lookup_wait_ms / 1000, max_batch=s.lookup_max_batch,
                                     timeout_s=s.lookup_timeout_s, max_gap_s=s.lookup_max_gap_ms / 1000)
        fields = [f.name for f in cfg.features.fields]
        self.rows = [EventRows.of([{k: v for k, v in e.items() if k not in (EVENT_TIME, EVENT_ID)}], fields)
                     for e in event_bodies(batch.head(n), fields)]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="streamfit-lookups", daemon=True)
        self.thread.start()

    def send(self, i: int) -> Future:
        """Look up one event; the Future fails as the Router's request would (a shard slow or down)."""
        return asyncio.run_coroutine_threadsafe(self.batcher.lookup(self.rows[i % len(self.rows)]), self.loop)

    def close(self) -> dict[str, int]:
        """Stop the loop; the batcher's figures (calls, events per call, timeouts)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        return self.batcher.stats()


def shard_memory(actor: Any) -> tuple[int, int]:
    """Run on a FeatureShardActor (``__ray_call__``): bytes its state holds (window and label runs as allocated,
    pending rows, dedup ids) and its active entities (those with rows in the event store)."""
    s = actor.shard
    held = s.events.allocated_bytes + s.labels.allocated_bytes + s.pending.nbytes + 8 * s.dedup.size
    return int(held), int(s.events.n_keys())


def source_reads(actor: Any) -> list[float]:
    """Run on the CoordinatorActor (``__ray_call__``): when its ObjectStoreSource read each batch."""
    return list(actor.core.source.reads)


class MemorySampler:
    """Sums ``shard_memory`` over the shards every ``every_s`` seconds in a thread (between their batches)."""

    def __init__(self, shards: list[Any], every_s: float = MEMORY_EVERY_S) -> None:
        self.shards, self.every_s = shards, every_s
        self.samples: list[tuple[int, int]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="streamfit-memory", daemon=True)

    def sample(self) -> tuple[int, int]:
        """One sample now: (bytes, active entities) over all shards."""
        got = ray.get([s.__ray_call__.remote(shard_memory) for s in self.shards])
        out = (sum(b for b, _ in got), sum(e for _, e in got))
        self.samples.append(out)
        return out

    def _loop(self) -> None:
        while not self.done.wait(self.every_s):
            self.sample()

    def figures(self) -> dict[str, Any]:
        """Stop; bytes per active entity now (the end of the stream) and the peak over the samples."""
        self.done.set()
        self.thread.join(timeout=60)
        held, entities = self.sample()
        per = [b / max(e, 1) for b, e in self.samples]
        return {"bytes_per_entity": held / max(entities, 1), "peak_bytes_per_entity": max(per),
                "state_bytes_held": held, "active_entities": entities,
                "peak_state_bytes_held": max(b for b, _ in self.samples)}


def run_sharded(cfg: Config, batches: list[pd.DataFrame], num_shards: int,
                lookup_rps: float = 0.0) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    """The real CoordinatorActor and FeatureShardActors on Ray, fed from the object store; with ``lookup_rps``,
    that many lookups a second hit the shards meanwhile, paced from a thread of this process and grouped
    into ``FeatureShardActor.lookup`` calls as a Router replica groups them. Figures: throughput by decile
    of the stream, memory per active entity (end and peak), CPU seconds."""
    refs = [ray.put(b) for b in batches]
    shards = [FeatureShardActor.options(num_cpus=0).remote(cfg.features, i, None, num_shards)
              for i in range(num_shards)]
    ray.get([s.stats.remote() for s in shards])
    coord = CoordinatorActor.options(num_cpus=0).remote(cfg, shards, None)
    ray.get(coord.stats.remote())
    ray.get(coord.set_source.remote(ObjectStoreSource(refs)))
    lookups = RouterLookups(cfg, shards, batches[0]) if lookup_rps > 0 else None
    pacer = PacedCalls(lookups.send, lookup_rps) if lookups else None
    meter = CpuMeter(("FeatureShardActor", "CoordinatorActor")).start()
    memory = MemorySampler(shards)
    started = time.perf_counter()
    run = coord.run.remote(None)
    memory.thread.start()
    if pacer is not None:
        pacer.start()
    ray.get(run)
    elapsed, end = time.perf_counter() - started, time.time()
    figures = {**pacer.stop(), **lookups.close()} if pacer and lookups else {}
    figures["cpu_seconds"] = meter.seconds()
    figures.update(memory.figures())
    reads = np.array(ray.get(coord.__ray_call__.remote(source_reads)))
    events = np.array([int((b[KIND] == "event").sum()) for b in batches])
    figures.update(decile_rates(events, done_times(reads, end, cfg.shards.max_in_flight), reads[0]))
    stats = ray.get([s.stats.remote() for s in shards])
    for a in (coord, *shards):
        ray.kill(a)
    return elapsed, stats, figures


def _offline(cfg: Config, batches: list[pd.DataFrame], rows: pd.DataFrame) -> tuple[float, dict[str, Any]]:
    """Seconds of the offline pass over the stream, and its comparison with the streaming rows (raises if unequal)."""
    started = time.perf_counter()
    offline = offline_features(batches, cfg.features)
    seconds = time.perf_counter() - started
    f = cfg.features
    horizon = max(max(f.windows_s), max(f.label_history.windows_s, default=0.0), f.label_timeout_s)
    slack = f.allowed_lateness_s + 3 * cfg.stream.batch_size / cfg.stream.events_per_second
    return seconds, compare(rows, offline, f.feature_names(), horizon, slack)


def bench_ingest(shard_counts: list[int], events: int = DEFAULT_EVENTS, entities: int = 100_000,
                 batch_size: int = 20_000, lookup_rps: float = 0.0, events_per_second: float = DEFAULT_PACE,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Events/s of the sharded actors (for each of ``shard_counts``; the top-level figures are the first's)
    against the single-process shard and the offline vectorised pass on the same events, with the
    streaming features checked equal to the offline ones; with ``lookup_rps``, the first sharded run
    again while that many lookups a second hit the shards."""
    cfg = ingest_config(entities, batch_size, events_per_second)
    if events < 10 * (cfg.shards.max_in_flight + 1) * batch_size:  # the last tenth is timed from its reads
        raise ValueError(f"decile figures need {10 * (cfg.shards.max_in_flight + 1)} batches or more: "
                         f"more --events or a smaller --batch-size")
    log(f"generating {events:,} events for {entities:,} entities at {events_per_second:g} events/s of event time …")
    batches = make_batches(cfg, events)
    n_events = int(sum((b[KIND] == "event").sum() for b in batches))
    span_s = float(batches[-1][EVENT_TIME].max() - batches[0][EVENT_TIME].min())
    log("baseline: one in-process FeatureShard …")
    base_s, base_shard, rows, base_deciles = run_baseline(cfg, batches)
    log("offline: the same features in one vectorised pandas pass, compared with the streaming rows …")
    offline_s, equal = _offline(cfg, batches, rows)
    log(f"  {equal['rows_compared']:,} rows equal (max abs difference {equal['max_abs_diff']:.2e})")
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runs = []
        for n in shard_counts:
            log(f"sharded: {n} FeatureShard actors on Ray …")
            runs.append((n, *run_sharded(cfg, batches, n)))
        if lookup_rps > 0:
            log(f"sharded again, with {lookup_rps:g} lookups/s on the shard actors …")
            lookup_s, _, lookups = run_sharded(cfg, batches, shard_counts[0], lookup_rps)
    finally:
        if own_ray:
            ray.shutdown()
    base_events = base_shard.counters["events"]
    for n, _, stats, _ in runs:
        if sum(s["events"] for s in stats) != base_events:
            raise RuntimeError(f"{n} shards applied {sum(s['events'] for s in stats)} events, baseline {base_events}")
    num_shards, shard_s, stats, plain = runs[0]
    with_lookups = {} if lookup_rps <= 0 else {
        "lookup_rps_asked": lookup_rps, "lookups": lookups,
        "sharded_with_lookups_events_per_s": n_events / lookup_s, "lookup_ratio": shard_s / lookup_s}
    offline_rate = n_events / offline_s
    return {
        "events": n_events, "entities": entities, "shards": num_shards, "batch_size": batch_size,
        "event_time_span_s": span_s, "events_per_second_event_time": events_per_second,
        "baseline_events_per_s": n_events / base_s,
        "baseline_steady_state_ratio": base_deciles["steady_state_ratio"],
        "sharded_events_per_s": n_events / shard_s,
        "ratio": base_s / shard_s,
        "first_decile_events_per_s": plain["first_decile_events_per_s"],
        "last_decile_events_per_s": plain["last_decile_events_per_s"],
        "steady_state_ratio": plain["steady_state_ratio"],
        "offline_events_per_s": offline_rate, "ratio_vs_offline": n_events / shard_s / offline_rate,
        "equality": equal,
        "bytes_per_entity": plain["bytes_per_entity"], "peak_bytes_per_entity": plain["peak_bytes_per_entity"],
        "active_entities": plain["active_entities"],
        "visible_bytes_per_entity": sum(s["state_bytes"] for s in stats) / max(1, sum(s["entities"] for s in stats)),
        "baseline_bytes_per_entity": base_shard.state_bytes() / max(1, base_shard.events.n_keys()),
        "training_rows": sum(s["training_rows"] for s in stats),
        "sharded_cpu_seconds": plain["cpu_seconds"],
        "scaling": [{"shards": n, "events_per_s": n_events / s, "steady_state_ratio": f["steady_state_ratio"],
                     "first_decile_events_per_s": f["first_decile_events_per_s"], "last_decile_events_per_s": f["last_decile_events_per_s"],
                     "bytes_per_entity": f["bytes_per_entity"]} for n, s, _, f in runs],
        **with_lookups,
    }


def ingest_tables(res: dict[str, Any]) -> list[Any]:
    """``bench_ingest``'s figures as rich tables and lines, for the terminal."""
    from rich.table import Table

    t = Table(title=f"ingest: {res['events']:,} events over {res['event_time_span_s'] / 3600:.1f} h of event time, "
                    f"{res['entities']:,} entities")
    for col in ("path", "events/s", "first 10%", "last 10%", "last/first", "B/entity"):
        t.add_column(col, justify="left" if col == "path" else "right")
    t.add_row("offline pass (pandas)", f"{res['offline_events_per_s']:,.0f}", "", "", "", "")
    t.add_row("1 FeatureShard, no Ray", f"{res['baseline_events_per_s']:,.0f}", "", "",
              f"{res['baseline_steady_state_ratio']:.2f}", "")
    for s in res["scaling"]:
        t.add_row(f"{s['shards']} shard actors", f"{s['events_per_s']:,.0f}", f"{s['first_decile_events_per_s']:,.0f}",
                  f"{s['last_decile_events_per_s']:,.0f}", f"{s['steady_state_ratio']:.2f}", f"{s['bytes_per_entity']:,.0f}")
    eq = res["equality"]
    out: list[Any] = [t, f"{res['shards']} shards: first tenth {res['first_decile_events_per_s']:,.0f} events/s, "
                         f"steady_state_ratio [bold]{res['steady_state_ratio']:.2f}[/], ratio_vs_offline "
                         f"[bold]{res['ratio_vs_offline']:.2f}[/], ratio vs one process {res['ratio']:.2f}x, "
                         f"{res['bytes_per_entity']:,.0f} bytes per active entity (peak {res['peak_bytes_per_entity']:,.0f})",
                      f"streaming = offline on {eq['rows_compared']:,} rows: max abs difference {eq['max_abs_diff']:.1e}"]
    if "lookups" in res:
        lk = res["lookups"]
        out.append(f"with {res['lookup_rps_asked']:g} lookups/s asked ({lk['rps']:,.0f}/s answered, p50 "
                   f"{lk['p50_ms'] or 0:.1f} ms, p99 {lk['p99_ms'] or 0:.1f} ms, {lk['failed']} failed, {lk['skipped']} "
                   f"skipped): {res['sharded_with_lookups_events_per_s']:,.0f} events/s, ratio to the run without "
                   f"lookups [bold]{res['lookup_ratio']:.2f}x[/]")
    return out
