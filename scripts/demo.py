"""The demo job: the whole pipeline on a local Ray with live serving, a light request load and a summary."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import ray
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamfit.config import Config
from streamfit.freshness import full_version
from streamfit.scripts.load import Answer, RequestLoop, StreamEvents
from streamfit.scripts.pipeline import Pipeline, wait_until
from streamfit.scripts.views import traffic_table
from streamfit.status import Accuracy, PlaneStats, Skew


# The freshness figures the demo's summary shows beside its own (all of them are under "freshness").
DEMO_FRESHNESS = ("served_accuracy", "offline_accuracy", "accuracy_gap", "stale_share", "p50_s", "max_s")


def progress_table(stats: PlaneStats, load: dict[str, Any], title: str) -> Table:
    """The stream, training, quality and request figures of the live view (the traffic has its own table)."""
    coord, trainer, traffic = stats.coordinator, stats.trainer, stats.traffic
    t = Table(title=title, show_header=False)
    t.add_column(style="bold cyan")
    t.add_column()
    t.add_row("events ingested", f"{coord.events or 0:,}")
    reasons = coord.top_reasons(3)
    t.add_row("rows rejected", f"{coord.rejected or 0:,}  " + (f"({reasons})" if reasons else ""))
    t.add_row("rows accepted per shard", " / ".join(f"{n:,}" for n in coord.per_shard_accepted))
    t.add_row("training rows", f"{coord.training_rows:,}")
    t.add_row("versions trained", str(len(trainer.refits)))
    if trainer.refits:
        last = trainer.refits[-1]
        holdout = ""
        if last.candidate is not None:  # the task's headline score: accuracy, or RMSE for a regression version
            name, value = ("accuracy", last.candidate.accuracy) if last.candidate.accuracy is not None \
                else ("rmse", last.candidate.rmse)
            holdout = f", holdout {name} {value:.3f}" if value is not None else ""
        t.add_row("last refit", f"v{last.version} ({last.reason}){holdout}")
    outcomes = traffic.outcomes()
    if outcomes:
        t.add_row("rollouts", ", ".join(f"{k}: {v}" for k, v in outcomes.items()))
    if coord.null_rate:
        t.add_row("null rate", coord.nulls())
    if stats.drift.psi:
        t.add_row("drift (PSI vs live)", stats.drift.top_psi(3)
                  + (f"  [bold red]alarm: {stats.drift.alarm}[/]" if stats.drift.alarm else ""))
    if stats.live_accuracy:
        recent = sorted(stats.live_accuracy.items(), key=lambda kv: int(kv[0]))[-4:]
        t.add_row("live accuracy", "  ".join(f"v{v}: {a.text()}" for v, a in recent))
    t.add_row("requests served (raw events) / failed",
              f"{load.get('served', 0):,} ({load.get('raw_served', 0):,}) / {load.get('failed', 0)}")
    t.add_row("skew (served vs point-in-time)", (coord.skew or Skew()).text())
    t.add_row("freshness (monitor, drift refits as changes)", stats.freshness.text())
    return t


def live_view(stats: PlaneStats, load: dict[str, Any], title: str) -> Group:
    """The demo's live view: every plane's figures above the traffic table `streamfit status` shows."""
    return Group(progress_table(stats, load, title), traffic_table(stats.traffic))


def summarize(stats: PlaneStats, load: dict[str, Any]) -> dict[str, Any]:
    """The demo's final figures."""
    coord, traffic, trainer = stats.coordinator, stats.traffic, stats.trainer
    outcomes = traffic.outcomes()
    return {
        "events_ingested": int(coord.events or 0),
        "rows_rejected": int(coord.rejected or 0),
        "rejected_by_reason": dict(coord.reasons),
        "versions_trained": len(trainer.refits),
        "traffic_flips": traffic.flips,
        "live_version": traffic.live_version,
        "requests_served": int(load.get("served", 0)),
        "requests_served_raw": int(load.get("raw_served", 0)),
        "requests_failed": int(load.get("failed", 0)),
        "skew": skew_figures(coord.skew or Skew()),
        "rollouts_promoted": outcomes.get("promoted", 0),
        "rollouts_rolled_back": outcomes.get("rolled_back", 0),
        "rollouts_superseded": outcomes.get("superseded", 0),
        "refit_reasons": trainer.refit_reasons(),
        "gate_rejections": len(trainer.rejected),
        "live_accuracy_by_version": {v: a.model_dump(mode="json") for v, a in stats.live_accuracy.items()},
        "refits": [r.model_dump(mode="json", include={"version", "reason", "strategy", "rows", "event_time"})
                   for r in trainer.refits],
    }


def skew_figures(skew: Skew) -> dict[str, Any]:
    """The skew line's figures: rows compared, share differing, the worst feature and its largest gap.

    Example:
        >>> f = skew_figures(Skew(compared_rows=200, rows_differing=4,
        ...                       features={"count_5m": {"differing": 4, "share": 0.02, "max_abs_diff": 1.0}}))
        >>> f["share_differing"], f["worst_feature"], f["worst_max_abs_diff"]
        (0.02, 'count_5m', 1.0)
    """
    name, worst = skew.worst() or (None, None)
    return {"compared_rows": skew.compared_rows, "rows_differing": skew.rows_differing,
            "share_differing": skew.share, "worst_feature": name,
            "worst_share": worst.share if worst else None, "worst_max_abs_diff": worst.max_abs_diff if worst else None,
            "text": skew.text()}


def summary_table(summary: dict[str, Any]) -> Table:
    """The summary as a two-column table."""
    t = Table(title="streamfit demo — summary")
    t.add_column("figure", style="bold")
    t.add_column("value", justify="right")
    for key in ("events_ingested", "rows_rejected", "versions_trained", "traffic_flips", "rollouts_promoted",
                "rollouts_rolled_back", "rollouts_superseded", "gate_rejections", "live_version",
                "requests_served", "requests_served_raw", "requests_failed"):
        t.add_row(key, f"{summary[key]:,}" if isinstance(summary[key], int) else str(summary[key]))
    t.add_row("skew (served vs point-in-time)", summary["skew"]["text"])
    if "freshness" in summary:
        t.add_row("served accuracy (request-weighted)", _pct(summary["served_accuracy"]))
        t.add_row("offline accuracy (same requests, replay)", _pct(summary["offline_accuracy"]))
        t.add_row("served − offline", _pct(summary["accuracy_gap"], sign=True))
        t.add_row("stale share", _pct(summary["stale_share"]))
        t.add_row("seconds to 100 % after a change", freshness_seconds(summary["freshness"]))
    t.add_row("refit reasons", ", ".join(f"{k}: {v}" for k, v in summary["refit_reasons"].items()))
    for v, a in sorted(summary["live_accuracy_by_version"].items(), key=lambda kv: int(kv[0])):
        t.add_row(f"live quality v{v}", Accuracy.model_validate(a).named())  # accuracy, or RMSE/MAE (regression)
    return t


def _pct(x: float | None, sign: bool = False) -> str:
    return "–" if x is None else (f"{100 * x:+.1f} points" if sign else f"{100 * x:.1f} %")


def freshness_seconds(f: dict[str, Any]) -> str:
    """``p50 21 s, max 48 s over 4 changes (1 not reached)``."""
    if not f.get("changes"):
        return "no concept change"
    missed = sum(not c["reached"] for c in f["changes"])
    return (f"p50 {f['p50_s']:.0f} s, max {f['max_s']:.0f} s over {len(f['changes'])} changes"
            + (f" ({missed} not reached)" if missed else ""))


class Schedule:
    """When the demo's stream stops: after ``duration_s``, or — with ``until_flips`` — once that many
    traffic flips happened and ``duration_s`` passed, and at the latest after ``max_duration_s``.

    Example:
        >>> s = Schedule(30, until_flips=1, max_duration_s=300)
        >>> s.bound_s, s.done(40, flips=0), s.done(40, flips=1), s.done(20, flips=1)
        (300, False, True, False)
    """

    def __init__(self, duration_s: float, until_flips: int = 0, max_duration_s: float | None = None) -> None:
        self.duration_s, self.until_flips = duration_s, until_flips
        self.bound_s = max(max_duration_s or 0.0, duration_s) if until_flips else duration_s

    def done(self, elapsed_s: float, flips: int) -> bool:
        """Stop the stream now (the bound itself is left to the coordinator's run)?"""
        return bool(self.until_flips) and elapsed_s >= self.duration_s and flips >= self.until_flips

    def title(self, elapsed_s: float, name: str = "streamfit demo") -> str:
        """The live view's title: time so far and the goal."""
        if not self.until_flips:
            return f"{name} — {elapsed_s:5.0f}s / {self.duration_s:.0f}s"
        flips = f"{self.until_flips} flip{'s' if self.until_flips > 1 else ''}"
        return f"{name} — {elapsed_s:5.0f}s · until {flips} after {self.duration_s:.0f}s, max {self.bound_s:.0f}s"


@dataclass
class LiveRecord:
    """What one live run leaves for its figures: the planes' final stats, the request load's counts and
    answers, each look at the planes during the run: (wall time, source position, version at 100 %), and when
    the stream ended (the load goes on until the last flip, on events the stream never had)."""

    stats: PlaneStats
    load: dict[str, Any]
    answers: list[Answer]
    ticks: list[tuple[float, Any, Optional[int]]]
    registry_uri: str
    stream_end: float


def run_live(cfg: Config, schedule: Schedule, workdir: Path, console: Console, request_rate: float = 50.0,
             record: bool = False, title: str = "streamfit demo") -> LiveRecord:
    """The pipeline on a local Ray with live serving and the stream's events as request load, until the schedule
    (or a bounded stream) ends: the loop of ``streamfit demo`` and ``bench freshness``."""
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
    events = StreamEvents(cfg)  # the stream's own raw events, scored just before the stream has them
    ticks: list[tuple[float, Any, Optional[int]]] = []
    started = time.time()
    try:
        run_ref = pipe.run_stream(schedule.bound_s)
        stopping = False
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while True:
                elapsed = time.time() - started
                stats = PlaneStats.model_validate(pipe.stats())
                ticks.append((time.time(), stats.coordinator.position, full_version(stats.traffic.slots,
                                                                                    stats.traffic.weights)))
                events.advance_to(int(stats.coordinator.position))
                if load is None and stats.traffic.live_version is not None:
                    # Requests start once a first version is live: before that there is nothing to serve.
                    load = RequestLoop(pipe.url, events, rate=request_rate, record=record).start()
                live.update(live_view(stats, load.summary() if load else {}, schedule.title(elapsed, title)))
                if not stopping and schedule.done(elapsed, stats.traffic.flips):
                    pipe.coordinator.stop.remote()  # the run drains, checkpoints and returns
                    stopping = True
                done, _ = ray.wait([run_ref], timeout=1.0)
                if done:
                    break
        if not console.is_terminal:  # Live leaves its last line open when writing to a file or pipe
            console.line()
        ray.get(run_ref)
        stream_end = time.time()
        # Let the last registered version finish its flip before the figures are taken.
        wait_until(lambda: not _deploy_pending(pipe), timeout_s=cfg.serving.flip_timeout_s)
        load_summary = load.stop() if load else {}
        final = PlaneStats.model_validate(pipe.stats())
        ticks.append((time.time(), final.coordinator.position, full_version(final.traffic.slots, final.traffic.weights)))
    finally:
        if load is not None:
            load.stop()
        pipe.stop()
    return LiveRecord(final, load_summary, list(load.answers) if load else [], ticks, cfg.registry.uri, stream_end)


def run_demo(cfg: Config, duration_s: float, workdir: Path, summary_json: Path | None,
             console: Console | None = None, request_rate: float = 50.0, until_flips: int = 0,
             max_duration_s: float | None = None, offline: bool = True) -> dict[str, Any]:
    """Run the pipeline with live serving and a request load for ``duration_s`` seconds (with ``until_flips``:
    until that many traffic flips too, at most ``max_duration_s``); return the summary. On the synthetic stream
    the summary also scores the answers against the stream's labels and, with ``offline``, against a replay
    of the same policy on the same events (``streamfit bench freshness`` reports the same figures)."""
    console = console or Console()
    schedule = Schedule(duration_s, until_flips, max_duration_s)
    # The freshness figures replay the binary synthetic stream offline; another task's demo shows the rest.
    synthetic = cfg.stream.source == "synthetic" and cfg.model.task == "binary" and not cfg.features.categorical_fields()
    rec = run_live(cfg, schedule, workdir, console, request_rate, record=synthetic)
    summary = summarize(rec.stats, rec.load)
    if synthetic:
        from streamfit.scripts.freshness import measure_freshness

        console.print("[dim]scoring the answers; offline replay of the same policy on the same events …[/]")
        fresh = measure_freshness(cfg, rec, offline=offline)
        summary["freshness"] = fresh
        summary.update({k: fresh[k] for k in DEMO_FRESHNESS})
    console.print(summary_table(summary))
    if until_flips and summary["traffic_flips"] < until_flips:
        console.print(f"[bold yellow]only {summary['traffic_flips']} of {until_flips} traffic flip(s) "
                      f"within {schedule.bound_s:.0f}s[/]")
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=2))
        console.print(f"summary written to {summary_json}")
    return summary


def _deploy_pending(pipe: Pipeline) -> bool:
    rollout = PlaneStats.model_validate(pipe.stats()).traffic.rollout
    return rollout is not None and rollout.active


def demo_config() -> Config:
    """The embedded default, paced for a two-minute demo: a refit every ~20 s of stream (and on
    drift alarms), and short canary steps."""
    cfg = Config()
    cfg.trainer.refit_every_rows = 20_000
    cfg.trainer.min_rows_between = 6_000  # one refit every few seconds of stream at most
    cfg.rollout.bake_s = 5.0
    cfg.rollout.min_requests = 10
    cfg.rollout.min_labels = 10  # the demo's requests are the stream's events: their labels follow quickly
    # The embedded demo serves on loopback only, and its request load sends event ids so answers are judged:
    # it opens the ingest scope explicitly, as a user's config would have to (admin stays behind its token).
    cfg.auth.open_scopes = ["read", "ingest"]
    return cfg
