"""Benchmarks that print ratios against a baseline measured in the same run."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pandas as pd
import ray
import xgboost as xgb

from streamfit.config import Config, config_from_dict
from streamfit.actors.stream import (CoordinatorActor, FeatureShard, FeatureShardActor, FramesSource, LocalRunner,
                                     SyntheticSource)
from streamfit.schema import EVENT_ID, EVENT_TIME, KIND
from streamfit.scripts.load import event_bodies
from streamfit.scripts.loadgen import CpuMeter, PacedCalls, Wrk, WrkResult, niceness, processes


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
    runner = LocalRunner(cfg.features, FramesSource(batches))
    started = time.perf_counter()
    runner.run()
    return time.perf_counter() - started, runner.shards[0]


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
                                     timeout_s=s.lookup_timeout_s)
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


def run_sharded(cfg: Config, batches: list[pd.DataFrame], num_shards: int,
                lookup_rps: float = 0.0) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    """The real CoordinatorActor and FeatureShardActors on Ray, fed from the object store; with ``lookup_rps``,
    that many lookups a second hit the shards meanwhile, paced from a thread of this process and grouped
    into ``FeatureShardActor.lookup`` calls as a Router replica groups them."""
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
    started = time.perf_counter()
    run = coord.run.remote(None)
    if pacer is not None:
        pacer.start()
    ray.get(run)
    elapsed = time.perf_counter() - started
    figures = {**pacer.stop(), **lookups.close()} if pacer and lookups else {}
    figures["cpu_seconds"] = meter.seconds()
    stats = ray.get([s.stats.remote() for s in shards])
    for a in (coord, *shards):
        ray.kill(a)
    return elapsed, stats, figures


def bench_ingest(num_shards: int, events: int, entities: int, batch_size: int = 20_000, lookup_rps: float = 0.0,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Events/s of the sharded actors against the single-process baseline on the same events; with
    ``lookup_rps``, the sharded run again while that many lookups a second hit the shards."""
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
        shard_s, stats, plain = run_sharded(cfg, batches, num_shards)
        if lookup_rps > 0:
            log(f"sharded again, with {lookup_rps:g} lookups/s on the shard actors …")
            lookup_s, _, lookups = run_sharded(cfg, batches, num_shards, lookup_rps)
    finally:
        if own_ray:
            ray.shutdown()
    sharded_events = sum(s["events"] for s in stats)
    base_events = base_shard.counters["events"]
    if sharded_events != base_events:
        raise RuntimeError(f"sharded path applied {sharded_events} events, baseline {base_events}")
    state = sum(s["state_bytes"] for s in stats)
    with_lookups = {} if lookup_rps <= 0 else {
        "lookup_rps_asked": lookup_rps, "lookups": lookups, "sharded_with_lookups_events_per_s": n_events / lookup_s,
        "lookup_ratio": shard_s / lookup_s}
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
        "sharded_cpu_seconds": plain["cpu_seconds"],
        **with_lookups,
    }


# -- serving -----------------------------------------------------------------------------

RAY_WORKER_NICENESS = 15  # Ray starts its workers, the Serve proxy and replicas included, at this niceness
SERVE_PROCESSES = ("ServeReplica", "ProxyActor", "haproxy")  # the Router's HTTP path on Ray Serve
SHARD_PROCESSES = ("FeatureShardActor",)
BENCH_EVENTS = 20_000  # the bounded stream ingested before the Router is measured


def how_measured(events: int, entities: int) -> str:
    """One line saying how both sides run, printed with the figures."""
    return (f"wrk in its own process (2 threads, niceness {os.nice(0)}) against 127.0.0.1; the bare FastAPI + "
            f"uvicorn server at niceness {RAY_WORKER_NICENESS}, the one Ray gives its workers (Serve's proxy and "
            f"replicas), so neither side is favoured; the Router after a bounded stream of {events:,} events "
            f"({entities:,} entities) was ingested: shards idle, holding the live state raw events are scored with")


def _wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout_s:.0f}s")


def _answers(url: str, body: dict[str, Any]) -> None:
    r = httpx.post(url, json=body, timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"{url} answered {r.status_code} to {str(body)[:200]}: {r.text[:500]}")


def _boosters(names: list[str], n: int, schema_hash: str) -> list[tuple[xgb.Booster, dict[str, Any]]]:
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(4000, len(names)))
        y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.3, 4000) > 0).astype(float)
        bst = xgb.train({"objective": "binary:logistic", "max_depth": 5, "nthread": 1},
                        xgb.DMatrix(x, label=y, feature_names=names), 60)
        out.append((bst, {"features": names, "trigger": "bench", "schema_hash": schema_hash,
                          "verify": {"x": x[:16].tolist(), "p": bst.inplace_predict(x[:16]).tolist()}}))
    return out


def serve_config(work: Path, port: int, isolated: bool) -> Config:
    """A light pipeline: a bounded stream (no bad rows) and no automatic refits (the bench swaps versions itself)."""
    return config_from_dict({
        "registry": {"uri": str(work / "registry")}, "checkpoints": {"uri": str(work / "ckpt")},
        "serving": {"port": port, "isolated_slots": isolated},
        "stream": {"entities": 2000, "max_events": BENCH_EVENTS, "max_events_per_s": None, "bad_row_rate": 0.0},
        "trainer": {"refit_every_rows": None, "drift_detector": None},
        "monitor": {"alarm_triggers_refit": False},
    })


def raw_bodies(cfg: Config, n: int = 200) -> list[dict[str, Any]]:
    """The bounded stream's last ``n`` events as a client sends them to be scored."""
    df, _ = SyntheticSource(cfg.stream, cfg.features).read(-(-cfg.stream.max_events // cfg.stream.batch_size) - 1)
    return [{"event": e} for e in event_bodies(df, [f.name for f in cfg.features.fields])[-n:]]


def _swaps_under_load(wrk: Wrk, url: str, swap_to: Callable[[int], None], targets: list[int],
                      concurrency: int) -> tuple[WrkResult, list[float]]:
    """Blue-green swaps to each of ``targets`` while wrk runs (stopped once the last swap is done)."""
    run = wrk.start(url, concurrency, 3600)
    seconds = []
    try:
        time.sleep(1.0)
        for v in targets:
            t0 = time.time()
            swap_to(v)
            seconds.append(round(time.time() - t0, 3))
            time.sleep(1.0)
    except BaseException:
        run.proc.kill()
        raise
    return run.stop(), seconds


def _measured(result: WrkResult, meter: CpuMeter) -> dict[str, Any]:
    return {**result.figures(), "cpu_ms_per_request": meter.per_request(result.requests)}


def _swap_figures(prefix: str, steady: WrkResult, swapped: WrkResult, seconds: list[float]) -> dict[str, Any]:
    return {f"{prefix}swap_failed_requests": swapped.failed, f"{prefix}swap_requests": swapped.requests,
            f"{prefix}swap_seconds": seconds, f"{prefix}steady_p99_ms": steady.p99_ms,
            f"{prefix}swap_p99_ms": swapped.p99_ms,
            f"{prefix}swap_errors": {"non_2xx": swapped.non_2xx, **swapped.socket_errors}}


def bench_serve(duration_s: float = 8.0, concurrencies: tuple[int, ...] = (1, 32), swaps: int = 10,
                port: int = 8000, isolated: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The same booster behind a bare FastAPI server and behind the streamfit Router under the same wrk load
    (precomputed rows; then raw events the Router joins with the shards' features); then blue-green swaps
    under precomputed and under raw-event load, counting failed requests."""
    from streamfit.registry import Registry
    from streamfit.scripts.pipeline import Pipeline, free_port

    work = Path(tempfile.mkdtemp(prefix="streamfit-bench-"))
    cfg = serve_config(work, port, isolated)
    names = cfg.features.feature_names()
    models = _boosters(names, 3, cfg.features.schema_hash())
    model_file = work / "model.ubj"
    models[0][0].save_model(str(model_file))
    rng = np.random.default_rng(9)
    pre = Wrk([{"features": dict(zip(names, map(float, rng.normal(size=len(names)))))} for _ in range(200)],
              work, "precomputed")
    raw = Wrk(raw_bodies(cfg), work, "raw")
    out: dict[str, Any] = {"duration_s": duration_s, "isolated_slots": isolated,
                           "how": how_measured(cfg.stream.max_events, cfg.stream.entities)}

    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "streamfit.scripts.bare_server", str(model_file), "--port",
                             str(bare_port), "--features", ",".join(names)], stderr=subprocess.PIPE,
                            preexec_fn=lambda: os.nice(RAY_WORKER_NICENESS))
    try:
        _wait_http(f"http://127.0.0.1:{bare_port}/healthz")
        out["niceness"] = {"bare_server": niceness(bare.pid), "load_generator": os.nice(0)}
        for c in concurrencies:
            log(f"bare FastAPI + uvicorn (niceness {out['niceness']['bare_server']}), concurrency {c} …")
            meter = CpuMeter(("streamfit.scripts.bare_server",)).start()
            out[f"bare_c{c}"] = _measured(pre.run(f"http://127.0.0.1:{bare_port}/predict", c, duration_s), meter)
    finally:
        bare.terminate()
        bare.wait(timeout=30)

    log(f"starting Ray and the streamfit Router; ingesting {cfg.stream.max_events:,} events …")
    pipe = Pipeline.start(cfg)
    try:
        ray.get(pipe.run_stream(None))
        registry = Registry(cfg.registry.uri)
        versions = [registry.register(b, m) for b, m in models]

        def swap_to(v: int) -> None:
            ray.get(pipe.controller.start_rollout.remote(version=v, mode="flip", actor="bench"))
            deadline = time.time() + 60
            while True:
                r = ray.get(pipe.controller.status.remote())["rollout"]
                if r["version"] == v and r["phase"] == "promoted":
                    return
                if r["phase"] not in ("loading", "baking") or time.time() > deadline:
                    raise RuntimeError(f"swap to v{v} failed: {r['phase']} {r.get('outcome')}")
                time.sleep(0.25)

        swap_to(versions[0])
        url = f"{pipe.url}/predict"
        _wait_http(f"{pipe.url}/healthz")
        _answers(url, {"features": dict(zip(names, [0.0] * len(names)))})
        _answers(url, raw_bodies(cfg, 1)[0])
        out["niceness"]["router"] = {k: niceness(pid) for k, pid in processes(SERVE_PROCESSES).items()}
        slots = "isolated slots" if isolated else "slots in the Router"
        for mode, wrk, what in (("router", pre, "precomputed rows"), ("raw", raw, "raw events")):
            for c in concurrencies:
                log(f"streamfit Router ({slots}), {what}, concurrency {c} …")
                meter = CpuMeter(SERVE_PROCESSES + SHARD_PROCESSES).start()
                out[f"{mode}_c{c}"] = _measured(wrk.run(url, c, duration_s), meter)
        steady_c = 8
        log(f"steady load, concurrency {steady_c}, precomputed rows and raw events …")
        steady, raw_steady = pre.run(url, steady_c, duration_s), raw.run(url, steady_c, duration_s)
        targets = [versions[(i + 1) % len(versions)] for i in range(2 * swaps)]  # each into the idle slot
        log(f"{swaps} blue-green swaps under precomputed-row load, then {swaps} under raw-event load …")
        swapped, seconds = _swaps_under_load(pre, url, swap_to, targets[:swaps], steady_c)
        raw_swapped, raw_seconds = _swaps_under_load(raw, url, swap_to, targets[swaps:], steady_c)
    finally:
        pipe.stop()
    c_hi = max(concurrencies)
    router, bare_hi, raw_hi = out[f"router_c{c_hi}"], out[f"bare_c{c_hi}"], out[f"raw_c{c_hi}"]
    out.update({
        "bare_p50_ms": bare_hi["p50_ms"], "router_p50_ms": router["p50_ms"],
        "bare_rps": bare_hi["rps"], "router_rps": router["rps"], "rps_ratio": router["rps"] / bare_hi["rps"],
        "raw_rps": raw_hi["rps"], "raw_p50_ms": raw_hi["p50_ms"], "raw_p99_ms": raw_hi["p99_ms"],
        "raw_rps_ratio": raw_hi["rps"] / router["rps"], "swaps": len(seconds),
        **_swap_figures("", steady, swapped, seconds), **_swap_figures("raw_", raw_steady, raw_swapped, raw_seconds),
    })
    shutil.rmtree(work, ignore_errors=True)
    return out
