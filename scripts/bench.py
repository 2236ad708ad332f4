"""Benchmarks that print ratios against a baseline measured in the same run: serving here; ingest in
``bench_ingest`` (its names are re-exported)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import ray
import xgboost as xgb

from streamfit.config import Config, config_from_dict
from streamfit.actors.stream import SyntheticSource
from streamfit.scripts.bench_ingest import RouterLookups, bench_ingest, ingest_config
from streamfit.scripts.load import event_bodies
from streamfit.scripts.loadgen import CpuMeter, Wrk, WrkResult, niceness, processes

__all__ = ["RouterLookups", "bench_ingest", "bench_serve", "ingest_config"]


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
        # Loopback only, like the demo: the raw-event requests carry event ids (the labelled path), which
        # need the ingest scope; opening it here measures scoring, not the token check.
        "auth": {"open_scopes": ["read", "ingest"]},
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
