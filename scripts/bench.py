"""Benchmarks that print ratios against a baseline measured in the same run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
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
    runner = LocalRunner(cfg.features, FramesSource(batches))
    started = time.perf_counter()
    runner.run()
    return time.perf_counter() - started, runner.shards[0]


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


# -- serving -----------------------------------------------------------------------------

def _loadgen(url: str, bodies_file: str, concurrency: int, duration_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamfit.scripts.loadgen", url, "--concurrency",
                             str(concurrency), "--duration", str(duration_s), "--body", bodies_file],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {err[-2000:]}")
    return json.loads(out)


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


def _boosters(names: list[str], n: int) -> list[tuple[xgb.Booster, dict[str, Any]]]:
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(4000, len(names)))
        y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.3, 4000) > 0).astype(float)
        bst = xgb.train({"objective": "binary:logistic", "max_depth": 5, "nthread": 1},
                        xgb.DMatrix(x, label=y, feature_names=names), 60)
        out.append((bst, {"features": names, "trigger": "bench",
                          "verify": {"x": x[:16].tolist(), "p": bst.inplace_predict(x[:16]).tolist()}}))
    return out


def bench_serve(duration_s: float = 8.0, concurrencies: tuple[int, ...] = (1, 32), swaps: int = 10,
                port: int = 8000, isolated: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The same booster behind a bare FastAPI server and behind the streamfit Router, under the same load
    from a separate process; then blue-green swaps under steady load, counting failed requests."""
    from streamfit.registry import Registry
    from streamfit.scripts.pipeline import Pipeline, free_port

    work = Path(tempfile.mkdtemp(prefix="streamfit-bench-"))
    cfg = config_from_dict({"registry": {"uri": str(work / "registry")}, "checkpoints": {"uri": str(work / "ckpt")},
                            "serving": {"port": port, "isolated_slots": isolated}})
    names = cfg.features.feature_names()
    models = _boosters(names, 3)
    model_file = work / "model.ubj"
    models[0][0].save_model(str(model_file))
    rng = np.random.default_rng(9)
    bodies_file = work / "bodies.json"
    bodies_file.write_text(json.dumps([{"features": dict(zip(names, map(float, rng.normal(size=len(names)))))}
                                       for _ in range(200)]))
    out: dict[str, Any] = {"duration_s": duration_s, "isolated_slots": isolated}

    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "streamfit.scripts.bare_server", str(model_file), "--port",
                             str(bare_port), "--features", ",".join(names)], stderr=subprocess.PIPE)
    try:
        _wait_http(f"http://127.0.0.1:{bare_port}/healthz")
        for c in concurrencies:
            log(f"bare FastAPI + uvicorn, concurrency {c} …")
            r = _finish(_loadgen(f"http://127.0.0.1:{bare_port}/predict", str(bodies_file), c, duration_s))
            out[f"bare_c{c}"] = {k: r[k] for k in ("requests", "failed", "rps", "p50_ms", "p99_ms")}
    finally:
        bare.terminate()
        bare.wait(timeout=30)

    log("starting Ray and the streamfit Router …")
    pipe = Pipeline.start(cfg)
    try:
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
        for c in concurrencies:
            log(f"streamfit Router ({'isolated slots' if isolated else 'slots in the Router'}), concurrency {c} …")
            r = _finish(_loadgen(url, str(bodies_file), c, duration_s))
            out[f"router_c{c}"] = {k: r[k] for k in ("requests", "failed", "rps", "p50_ms", "p99_ms")}
        steady_c = 8
        log(f"steady load, concurrency {steady_c} …")
        steady = _finish(_loadgen(url, str(bodies_file), steady_c, duration_s))
        log(f"{swaps} blue-green swaps under the same load …")
        proc = _loadgen(url, str(bodies_file), steady_c, 2.0 + swaps * 2.5)
        time.sleep(1.0)
        intervals = []
        for i in range(swaps):
            v = versions[(i + 1) % len(versions)]  # every swap loads a version into the idle slot
            t0 = time.time()
            swap_to(v)
            intervals.append((t0, time.time()))
            time.sleep(1.0)
        swapped = _finish(proc)
    finally:
        pipe.stop()
    overlapping = [(e - s) * 1000 for s, e, ok in swapped["records"]
                   if ok and any(s <= b and e >= a for a, b in intervals)]
    c_hi = max(concurrencies)
    out.update({
        "bare_p50_ms": out[f"bare_c{c_hi}"]["p50_ms"], "router_p50_ms": out[f"router_c{c_hi}"]["p50_ms"],
        "bare_rps": out[f"bare_c{c_hi}"]["rps"], "router_rps": out[f"router_c{c_hi}"]["rps"],
        "rps_ratio": out[f"router_c{c_hi}"]["rps"] / out[f"bare_c{c_hi}"]["rps"],
        "swaps": len(intervals), "swap_failed_requests": swapped["failed"],
        "swap_requests": swapped["requests"], "swap_seconds": [round(b - a, 3) for a, b in intervals],
        "steady_p99_ms": steady["p99_ms"],
        "swap_p99_ms": float(np.percentile(overlapping, 99)) if overlapping else None,
        "swap_overlapping_requests": len(overlapping),
        "swap_errors": swapped["errors"],
    })
    shutil.rmtree(work, ignore_errors=True)
    return out
