"""The demo job: the whole pipeline on a local Ray with live serving, a light request load and a summary."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamfit.config import Config
from streamfit.scripts.load import RequestLoop, StreamRows
from streamfit.scripts.pipeline import Pipeline, wait_until


def progress_table(stats: dict[str, Any], load: dict[str, Any], elapsed: float, duration: float) -> Table:
    """One live view of every plane."""
    coord, traffic, trainer = stats["coordinator"], stats["traffic"], stats["trainer"]
    live = traffic["live_slot"]
    t = Table(title=f"streamfit demo — {elapsed:5.0f}s / {duration:.0f}s", show_header=False)
    t.add_column(style="bold cyan")
    t.add_column()
    t.add_row("events ingested", f"{coord.get('events', 0):,}")
    t.add_row("rows rejected", f"{coord.get('rejected', 0):,}  {_top_reasons(coord.get('reasons', {}))}")
    t.add_row("rows accepted per shard", " / ".join(f"{n:,}" for n in coord.get("per_shard_accepted", [])))
    t.add_row("training rows", f"{coord.get('training_rows', 0):,}")
    t.add_row("versions trained", str(len(trainer["refits"])))
    last = trainer["refits"][-1] if trainer["refits"] else None
    if last:
        t.add_row("last refit", f"v{last['version']} ({last['reason']}), holdout accuracy {last['candidate']['accuracy']:.3f}")
    t.add_row("live", f"{live} = v{traffic['slots'][live]}" if traffic["slots"][live] else "(no model yet)")
    t.add_row("slots", f"blue v{traffic['slots']['blue']} {traffic['weights']['blue']}%  ·  "
                       f"green v{traffic['slots']['green']} {traffic['weights']['green']}%")
    t.add_row("traffic flips", str(traffic["flips"]))
    r = traffic.get("rollout")
    if r:
        step = f"step {min(r['step'] + 1, len(r['steps']))}/{len(r['steps'])} ({r['steps'][min(r['step'], len(r['steps']) - 1)]}%)"
        t.add_row("rollout", f"v{r['version']} → {r['slot']}: {r['phase']} {step if r['phase'] == 'baking' else ''} "
                             f"{r.get('outcome') or ''}")
    outcomes = Counter(h["phase"] for h in traffic.get("history", []))
    if outcomes:
        t.add_row("rollouts", ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    nulls = coord.get("null_rate") or {}
    if nulls:
        t.add_row("null rate", ", ".join(f"{k} {v:.1%}" for k, v in nulls.items()))
    drift = stats.get("drift") or {}
    if drift.get("psi"):
        fields = [k for k in ("x0", "x1", "x2") if k in drift["psi"]] or list(drift["psi"])[:3]
        t.add_row("drift (PSI vs live)", ", ".join(f"{k} {drift['psi'][k]:.2f}" for k in fields)
                  + (f"  [bold red]alarm: {drift['alarm']}[/]" if drift.get("alarm") else ""))
    acc = stats.get("live_accuracy") or {}
    if acc:
        t.add_row("live accuracy", "  ".join(f"v{v}: {a['accuracy']:.3f} (n={a['labelled']})"
                                              for v, a in sorted(acc.items(), key=lambda kv: int(kv[0]))[-4:]))
    t.add_row("requests served / failed", f"{load.get('served', 0):,} / {load.get('failed', 0)}")
    return t


def _top_reasons(reasons: dict[str, int]) -> str:
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
    return "(" + ", ".join(f"{k}: {v}" for k, v in top) + ")" if top else ""


def summarize(stats: dict[str, Any], load: dict[str, Any]) -> dict[str, Any]:
    """The demo's final figures."""
    coord, traffic, trainer = stats["coordinator"], stats["traffic"], stats["trainer"]
    outcomes = Counter(h["phase"] for h in traffic.get("history", []))
    return {
        "events_ingested": int(coord.get("events", 0)),
        "rows_rejected": int(coord.get("rejected", 0)),
        "rejected_by_reason": coord.get("reasons", {}),
        "versions_trained": len(trainer["refits"]),
        "traffic_flips": int(traffic["flips"]),
        "live_version": traffic["slots"][traffic["live_slot"]],
        "requests_served": int(load.get("served", 0)),
        "requests_failed": int(load.get("failed", 0)),
        "rollouts_promoted": outcomes.get("promoted", 0),
        "rollouts_rolled_back": outcomes.get("rolled_back", 0),
        "rollouts_superseded": outcomes.get("superseded", 0),
        "refit_reasons": dict(Counter(r["reason"] for r in trainer["refits"])),
        "gate_rejections": len(trainer.get("rejected", [])),
        "live_accuracy_by_version": {str(v): a for v, a in (stats.get("live_accuracy") or {}).items()},
        "refits": [{k: r.get(k) for k in ("version", "reason", "strategy", "rows", "event_time")}
                   for r in trainer["refits"]],
    }


def summary_table(summary: dict[str, Any]) -> Table:
    """The summary as a two-column table."""
    t = Table(title="streamfit demo — summary")
    t.add_column("figure", style="bold")
    t.add_column("value", justify="right")
    for key in ("events_ingested", "rows_rejected", "versions_trained", "traffic_flips", "rollouts_promoted",
                "rollouts_rolled_back", "rollouts_superseded", "gate_rejections", "live_version",
                "requests_served", "requests_failed"):
        t.add_row(key, f"{summary[key]:,}" if isinstance(summary[key], int) else str(summary[key]))
    t.add_row("refit reasons", ", ".join(f"{k}: {v}" for k, v in summary["refit_reasons"].items()))
    for v, a in sorted(summary["live_accuracy_by_version"].items(), key=lambda kv: int(kv[0])):
        t.add_row(f"live accuracy v{v}", f"{a['accuracy']:.3f} (n={a['labelled']})")
    return t


def run_demo(cfg: Config, duration_s: float, workdir: Path, summary_json: Path | None,
             console: Console | None = None, request_rate: float = 50.0) -> dict[str, Any]:
    """Run the pipeline for ``duration_s`` seconds with live serving and a request load; return the summary."""
    console = console or Console()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    cfg = cfg.model_copy(deep=True)
    cfg.registry.uri = str((workdir / "registry").resolve())
    cfg.checkpoints.uri = str((workdir / "checkpoints").resolve())
    console.print(f"[bold]Starting Ray and the streamfit planes[/] (registry: {cfg.registry.uri}) …")
    pipe = Pipeline.start(cfg)
    console.print(f"Serving on [link]{pipe.url}[/link]  ·  POST /predict  ·  GET /models  ·  GET /traffic")
    load: RequestLoop | None = None
    rows = StreamRows(cfg)  # the stream's own events, so labels arriving later score each version
    started = time.time()
    try:
        run_ref = pipe.run_stream(duration_s)
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while True:
                elapsed = time.time() - started
                stats = pipe.stats()
                rows.advance_to(int(stats["coordinator"]["position"]))
                live_slot = stats["traffic"]["live_slot"]
                if load is None and stats["traffic"]["slots"][live_slot] is not None:
                    # Requests start once a first version is live: before that there is nothing to serve.
                    load = RequestLoop(pipe.url, rows, rate=request_rate).start()
                live.update(progress_table(stats, load.summary() if load else {}, elapsed, duration_s))
                done, _ = ray.wait([run_ref], timeout=1.0)
                if done:
                    break
        ray.get(run_ref)
        # Let the last registered version finish its flip before the figures are taken.
        wait_until(lambda: not _deploy_pending(pipe), timeout_s=cfg.serving.flip_timeout_s)
        load_summary = load.stop() if load else {}
        summary = summarize(pipe.stats(), load_summary)
    finally:
        if load is not None:
            load.stop()
        pipe.stop()
    console.print(summary_table(summary))
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=2))
        console.print(f"summary written to {summary_json}")
    return summary


def _deploy_pending(pipe: Pipeline) -> bool:
    stats = pipe.stats()
    rollout = stats["traffic"].get("rollout")
    return bool(rollout and rollout["phase"] in ("loading", "baking", "paused"))


def demo_config() -> Config:
    """The embedded default, paced for a two-minute demo: a refit every ~20 s of stream (and on
    drift alarms), and short canary steps."""
    cfg = Config()
    cfg.trainer.refit_every_rows = 20_000
    cfg.trainer.min_rows_between = 6_000  # one refit every few seconds of stream at most
    cfg.rollout.bake_s = 5.0
    cfg.rollout.min_requests = 10
    cfg.rollout.min_labels = 10  # the demo's requests are the stream's events: their labels follow quickly
    return cfg
