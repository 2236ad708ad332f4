"""The ``streamfit`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from streamfit.config import load_config
from streamfit.errors import ConfigError

app = typer.Typer(help="Keep XGBoost models fresh on streams with Ray; roll them out blue-green with Ray Serve.",
                  no_args_is_help=True, add_completion=False)
console = Console()


def _config(path: Optional[Path]):
    try:
        return load_config(path)
    except ConfigError as err:
        console.print(f"[bold red]bad config[/]\n{err}")
        raise typer.Exit(2) from None


@app.command()
def demo(
    duration: float = typer.Option(120.0, help="seconds of streaming before the summary"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (default: built-in)"),
    port: Optional[int] = typer.Option(None, help="HTTP port (default from config: 8000; 0 = any free port)"),
    workdir: Path = typer.Option(Path(".streamfit/demo"), help="registry and state of this demo (wiped at start)"),
    summary_json: Optional[Path] = typer.Option(None, "--summary-json", help="also write the summary as JSON"),
    until_flips: int = typer.Option(0, "--until-flips", min=0,
                                    help="keep streaming past --duration until this many traffic flips happened"),
    max_duration: float = typer.Option(600.0, "--max-duration", help="with --until-flips: stop after this long anyway"),
) -> None:
    """The main job on the embedded default: local Ray, synthetic drifting stream, live serving, refits, flips."""
    from streamfit.scripts.demo import demo_config, run_demo

    cfg = _config(config) if config else demo_config()
    if port is not None:
        cfg.serving.port = port
    summary = run_demo(cfg, duration, workdir, summary_json, console, until_flips=until_flips,
                       max_duration_s=max_duration)
    if summary["requests_failed"]:
        raise typer.Exit(1)


@app.command()
def run(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config"),
    duration: Optional[float] = typer.Option(None, help="stop after this many seconds (default: until the source ends)"),
    address: Optional[str] = typer.Option(None, help="Ray address of an existing cluster ('auto', 'ray://…')"),
    serve_app: bool = typer.Option(True, "--serve/--no-serve",
                                   help="deploy the Serve app (--no-serve when serve deploy or KubeRay owns it)"),
    allow_open_scopes: bool = typer.Option(False, "--allow-open-scopes", help="serve ingest/admin scopes listed in "
                                           "auth.open_scopes without a token even on a cluster or non-loopback host"),
) -> None:
    """Run the pipeline from a config file until the source ends, --duration passes, or Ctrl-C."""
    import ray

    from streamfit.scripts.pipeline import Pipeline
    from streamfit.tokens import check_open_scopes

    cfg = _config(config)
    try:
        check_open_scopes(cfg.auth, cfg.serving.host, address, allow=allow_open_scopes or not serve_app)
        pipe = Pipeline.start(cfg, address=address, deploy_serve=serve_app)
    except ConfigError as err:
        console.print(f"[bold red]bad config[/]\n{err}")
        raise typer.Exit(2) from None
    console.print(f"serving on {pipe.url}" if serve_app else "Serve app left to its owner (--no-serve)")
    try:
        final = ray.get(pipe.run_stream(duration))
        console.print(final)
    except KeyboardInterrupt:
        console.print("stopping …")
    finally:
        pipe.stop(shutdown_ray=address is None)


URL_OPTION = typer.Option("http://127.0.0.1:8000", "--url", help="streamfit HTTP API (local or remote)")


def _client(url: str):
    from streamfit.scripts.control import ControlClient

    return ControlClient(url)


def _control(call):
    from streamfit.scripts.control import ControlError

    try:
        return call()
    except ControlError as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from None


@app.command()
def models(url: str = URL_OPTION) -> None:
    """List registered versions as a table (from GET /models)."""
    from rich.table import Table

    body = _control(lambda: _client(url).models())
    aliases = body.get("aliases", {})
    t = Table(title="model versions")
    for col in ("version", "aliases", "trigger", "strategy", "rows", "trees", "holdout accuracy", "parent"):
        t.add_column(col)
    for m in body["versions"]:
        acc = m.get("metrics", {}).get("holdout", {}).get("accuracy")
        names = ",".join(a for a, v in aliases.items() if v == m["version"])
        t.add_row(str(m["version"]), names, str(m.get("trigger", "")), str(m.get("strategy", "")),
                  str(m.get("rows", "")), str(m.get("trees", "")),
                  f"{acc:.3f}" if acc is not None else "", str(m.get("parent") or ""))
    console.print(t)


def parse_duration(text: str) -> float:
    """'30s', '2m', '1h' or plain seconds."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise typer.BadParameter(f"not a duration: {text!r} (e.g. 30s, 2m)") from None


@app.command()
def status(url: str = URL_OPTION) -> None:
    """Slots, versions, weights, rollout step, and per-slot requests, errors, p50/p99, accuracy."""
    from streamfit.scripts.control import ControlError
    from streamfit.scripts.views import quality_table, replica_lines, traffic_table

    traffic = _control(lambda: _client(url).traffic())
    console.print(traffic_table(traffic))
    for line in replica_lines(traffic):
        console.print(line)
    try:
        mon = _client(url).monitor()
    except ControlError:
        return
    console.print(quality_table(mon))


traffic_app = typer.Typer(help="Set the traffic split by hand (overrides a running rollout).", no_args_is_help=True)
app.add_typer(traffic_app, name="traffic")


@traffic_app.command("set")
def traffic_set(
    green: Optional[int] = typer.Option(None, min=0, max=100, help="percent to green (blue gets the rest)"),
    blue: Optional[int] = typer.Option(None, min=0, max=100, help="percent to blue (green gets the rest)"),
    shadow: Optional[float] = typer.Option(None, min=0, max=1, help="share of requests copied to the idle slot"),
    url: str = URL_OPTION,
) -> None:
    """Set the split, e.g. `streamfit traffic set --green 25`."""
    if green is None and blue is None and shadow is None:
        raise typer.BadParameter("give --green, --blue or --shadow")
    from streamfit.scripts.views import traffic_table

    body = _control(lambda: _client(url).set_traffic(blue=blue, green=green, shadow_share=shadow))
    console.print(traffic_table(body))


rollout_app = typer.Typer(help="Canary rollouts: start, promote (approve), abort.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")


@rollout_app.command("start")
def rollout_start(
    version: Optional[int] = typer.Option(None, help="version to roll out (default: the newest registered)"),
    steps: Optional[str] = typer.Option(None, help="canary weights, e.g. 5,25,50,100"),
    bake: Optional[str] = typer.Option(None, help="bake time per step, e.g. 30s"),
    reason: str = typer.Option("", help="recorded in the audit log"),
    url: str = URL_OPTION,
) -> None:
    """Load a version into the idle slot, verify it, and step its traffic up with analysis at each step."""
    parsed = None
    if steps:
        try:
            parsed = [int(x) for x in steps.split(",")]
        except ValueError:
            raise typer.BadParameter(f"--steps: comma-separated percentages, not {steps!r}") from None
    r = _control(lambda: _client(url).rollout(version, parsed, parse_duration(bake) if bake else None, reason=reason))
    console.print(f"rollout of v{r.version} into {r.slot} started: steps {r.steps}, bake {r.bake_s:.0f}s")


@rollout_app.command("promote")
def rollout_promote(url: str = URL_OPTION) -> None:
    """Approve a paused step, or skip the remaining steps and promote now."""
    r = _control(lambda: _client(url).promote())
    console.print(f"v{r.version}: promote requested ({r.phase})")


@rollout_app.command("abort")
def rollout_abort(reason: str = typer.Option("", help="recorded in the audit log"), url: str = URL_OPTION) -> None:
    """Stop the rollout: all traffic back to the live version in one step."""
    r = _control(lambda: _client(url).abort(reason))
    console.print(f"v{r.version}: {r.phase} — {r.outcome}")


@app.command()
def rollback(reason: str = typer.Option("", help="recorded in the audit log"), url: str = URL_OPTION) -> None:
    """All traffic back to the previous version (loaded first if it is not)."""
    from streamfit.scripts.views import traffic_table

    body = _control(lambda: _client(url).rollback(reason))
    console.print(traffic_table(body))


@app.command()
def retrain(url: str = URL_OPTION, reason: str = typer.Option("manual", help="recorded with the refit")) -> None:
    """Ask for a refit now (POST /retrain; needs STREAMFIT_ADMIN_TOKEN). The validation gate still applies."""
    out = _control(lambda: _client(url).retrain(reason))
    if out.version is not None:
        console.print(f"registered v{out.version} ({out.attempt.reason if out.attempt else ''}); "
                      "the rollout controller deploys it")
    else:
        console.print(f"no new version: {(out.attempt.why if out.attempt else None) or 'nothing to train on yet'}")


bench_app = typer.Typer(help="Benchmarks: ratios against a baseline measured in the same run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("ingest")
def bench_ingest_cmd(
    shards: str = typer.Option("2", help="FeatureShard actors; a list (1,2,4) measures each: a scaling table"),
    events: int = typer.Option(2_000_000, help="events in the stream (labels come on top)"),
    entities: int = typer.Option(100_000, help="distinct entity keys"),
    batch_size: int = typer.Option(20_000, help="events per source batch"),
    events_per_s: float = typer.Option(250.0, "--events-per-s", help="pace of event time (default: 2M events = 2.2 h)"),
    lookup_rps: float = typer.Option(0.0, "--lookup-rps", min=0,
                                     help="also run the shards with this many lookups/s hitting them; report the ratio"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Events/s through the sharded actors at steady state (first and last tenth of the stream) against one
    in-process shard and the offline vectorised pass, features checked equal, memory per active entity;
    with --lookup-rps, ingest while lookups hit the shard actors, as a ratio to the run without."""
    import json

    from streamfit.scripts.bench_ingest import bench_ingest, ingest_tables

    log = (lambda _msg: None) if as_json else (lambda msg: console.print(f"[dim]{msg}[/]"))
    counts = [int(n) for n in shards.split(",") if n.strip()]
    res = bench_ingest(counts, events, entities, batch_size, lookup_rps, events_per_s, log=log)
    if as_json:
        print(json.dumps(res))
        return
    for line in ingest_tables(res):
        console.print(line)


@bench_app.command("quality")
def bench_quality_cmd(
    dataset: str = typer.Option("synthetic", "--dataset", help="built-in stream ('synthetic': drifting; 'persistent': "
                                "drifting with labels that persist; 'friedman': regression; 'rbf': multiclass; "
                                "'agrawal': binary with categorical fields), 'all' (each built-in stream), or PATH.csv"),
    target: Optional[str] = typer.Option(None, "--target", help="CSV: the label column (its task is inferred: two values "
                                         "binary, a few whole numbers or texts multiclass, other numbers regression)"),
    task: Optional[str] = typer.Option(None, "--task", help="CSV: the target's task (binary, multiclass, regression) "
                                       "instead of the inferred one"),
    entity: Optional[str] = typer.Option(None, "--entity", help="CSV: entity key column (default: one entity)"),
    time_col: Optional[str] = typer.Option(None, "--time", help="CSV: event-time column (default: row number)"),
    rows: int = typer.Option(50_000, help="built-in streams: labelled rows in the stream"),
    seed: int = typer.Option(7, help="built-in streams and River ARF seed"),
    warmup: int = typer.Option(1000, help="labelled rows before the first fit; rows before it goes live are not scored"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config: its trainer section is 'default'"),
    methods: Optional[str] = typer.Option(None, "--methods", help="comma-separated subset of static, periodic, "
                                          "incremental, drift, default, river_arf (default: all; baselines always run)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Prequential quality of refit policies against a never-updated model, River's ARF and the trivial
    baselines (no_change; majority, or the running mean for regression), same stream, same order; each
    task's metrics (accuracy, log loss; RMSE, MAE) and CPU seconds per method."""
    import json

    from streamfit.scripts.quality import METHODS, bench_quality, print_report

    trainer = _config(config).trainer if config is not None else None
    log = (lambda _msg: None) if as_json else (lambda msg: console.print(f"[dim]{msg}[/]"))
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else list(METHODS)
    try:
        res = bench_quality(dataset, target, entity, time_col, rows=rows, seed=seed, warmup=warmup,
                            trainer=trainer, methods=chosen, log=log, task=task)
    except ConfigError as err:
        console.print(f"[bold red]bench quality:[/] {err}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(res))
        return
    print_report(res, console)


@bench_app.command("serve")
def bench_serve_cmd(
    duration: float = typer.Option(8.0, help="seconds per measurement"),
    swaps: int = typer.Option(10, help="blue-green swaps under load"),
    port: int = typer.Option(8000, help="the Router's HTTP port (0 = any free port)"),
    isolated: bool = typer.Option(False, "--isolated", help="slots as separate Serve deployments"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """The same booster behind bare FastAPI + uvicorn and behind the Router (concurrency 1 and 32, wrk),
    precomputed rows and raw events; then swaps under each load."""
    import json

    from rich.table import Table

    from streamfit.scripts.bench import bench_serve

    log = (lambda _msg: None) if as_json else (lambda msg: console.print(f"[dim]{msg}[/]"))
    res = bench_serve(duration, (1, 32), swaps, port, isolated, log=log)
    if as_json:
        print(json.dumps(res))
        return
    t = Table(title="serving: same booster, same load (wrk, its own process, 127.0.0.1)")
    for col in ("server", "body", "concurrency", "requests/s", "p50 ms", "p99 ms", "failed"):
        t.add_column(col, justify="right")
    for name, label, body in (("bare", "bare FastAPI", "features"), ("router", "streamfit Router", "features"),
                              ("raw", "streamfit Router", "raw event")):
        for c in (1, 32):
            r = res[f"{name}_c{c}"]
            t.add_row(label, body, str(c), f"{r['rps']:,.0f}", f"{r['p50_ms'] or 0:.2f}", f"{r['p99_ms'] or 0:.2f}",
                      str(r["failed"]))
    console.print(t)
    console.print(f"[dim]{res['how']}; niceness measured: {res['niceness']}[/]")
    for name in ("bare", "router", "raw"):
        cpu = res[f"{name}_c32"]["cpu_ms_per_request"]
        console.print(f"[dim]CPU ms per request, {name} at concurrency 32: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])) + "[/]")
    console.print(f"throughput ratio at concurrency 32: router / bare [bold]{res['rps_ratio']:.2f}x[/], "
                  f"raw events / precomputed rows [bold]{res['raw_rps_ratio']:.2f}x[/]")
    for prefix, what in (("", "precomputed rows"), ("raw_", "raw events")):
        console.print(f"{res['swaps']} swaps under {what}: {res[prefix + 'swap_failed_requests']} failed of "
                      f"{res[prefix + 'swap_requests']:,} requests; p99 steady {res[prefix + 'steady_p99_ms'] or 0:.1f} ms, "
                      f"over the run with swaps {res[prefix + 'swap_p99_ms'] or 0:.1f} ms")


@bench_app.command("freshness")
def bench_freshness_cmd(
    changes: int = typer.Option(3, min=1, help="concept changes in the stream (it ends one concept after the last)"),
    drift_every: int = typer.Option(40_000, "--drift-every", min=1000, help="events per concept"),
    events_per_s: float = typer.Option(1000.0, "--events-per-s", help="wall-clock pace of the stream"),
    request_rate: float = typer.Option(50.0, "--request-rate", help="requests/s: the stream's events, raw"),
    seed: int = typer.Option(7, help="synthetic stream seed"),
    max_duration: float = typer.Option(600.0, "--max-duration", help="stop the live run after this long anyway"),
    workdir: Path = typer.Option(Path(".streamfit/bench-freshness"), help="registry and state (wiped at start)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (progress goes to stderr)"),
) -> None:
    """What requests were served against what the same policy achieves offline: the live system (Ray, Serve,
    canary rollouts, the stream's events as requests) and the prequential replay of the same stream."""
    import json

    from rich.table import Table

    from streamfit.scripts.freshness import bench_freshness

    res = bench_freshness(changes, drift_every, events_per_s, request_rate, seed, max_duration, workdir,
                          Console(stderr=True) if as_json else console)
    if as_json:
        print(json.dumps(res))
        return

    def pct(x: Optional[float]) -> str:
        return "–" if x is None else f"{100 * x:.1f} %"

    t = Table(title=f"freshness: {res['events']:,} events, {res['concept_changes']} concept changes, "
                    f"{res['requests']:,} requests")
    t.add_column("figure", style="bold")
    t.add_column("value", justify="right")
    t.add_row("served accuracy (request-weighted)", pct(res["served_accuracy"]))
    t.add_row("offline accuracy (same requests, replay)", pct(res["offline_accuracy"]))
    t.add_row("ratio served / offline", "–" if res["ratio"] is None else f"{res['ratio']:.3f}")
    t.add_row("stale share", pct(res["stale_share"]))
    for i, c in enumerate(res["changes"], 1):
        trained = (f" (v{c['first_fresh_version']} registered after {c['registered_after_s']:.0f} s)"
                   if c.get("first_fresh_version") is not None else "")
        t.add_row(f"change {i}: seconds to 100 %",
                  f"{c['seconds']:.1f}" + ("" if c["reached"] else " (not reached)") + trained)
    t.add_row("seconds to 100 %: p50 / max", f"{res['p50_s']} / {res['max_s']}")
    t.add_row("versions trained / rollouts", f"{res['versions_trained']} / {res['rollouts']}")
    console.print(t)
    console.print(f"[dim]compared: {res['requests_compared']:,} labelled requests whose events came after the "
                  f"replay's first model; load average {res['load_average']}; live {res['live_seconds']:.0f} s, "
                  f"total {res['wall_seconds']:.0f} s[/]")


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
