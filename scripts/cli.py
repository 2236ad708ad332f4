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
) -> None:
    """The main job on the embedded default: local Ray, synthetic drifting stream, live serving, refits, flips."""
    from streamfit.scripts.demo import demo_config, run_demo

    cfg = _config(config) if config else demo_config()
    if port is not None:
        cfg.serving.port = port
    summary = run_demo(cfg, duration, workdir, summary_json, console)
    if summary["requests_failed"]:
        raise typer.Exit(1)


@app.command()
def run(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config"),
    duration: Optional[float] = typer.Option(None, help="stop after this many seconds (default: until the source ends)"),
    address: Optional[str] = typer.Option(None, help="Ray address of an existing cluster ('auto', 'ray://…')"),
) -> None:
    """Run the pipeline from a config file until the source ends, --duration passes, or Ctrl-C."""
    import ray

    from streamfit.scripts.pipeline import Pipeline

    cfg = _config(config)
    pipe = Pipeline.start(cfg, address=address)
    console.print(f"serving on {pipe.url}")
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


@app.command()
def status(url: str = URL_OPTION) -> None:
    """Slots, versions, weights and replicas (from GET /traffic)."""
    from rich.table import Table

    body = _control(lambda: _client(url).traffic())
    t = Table(title=f"traffic (revision {body['revision']}, flips {body['flips']})")
    for col in ("slot", "version", "weight %", "live"):
        t.add_column(col)
    for slot in ("blue", "green"):
        t.add_row(slot, str(body["slots"][slot]), str(body["weights"][slot]), "●" if body["live_slot"] == slot else "")
    console.print(t)
    for rid, held in body.get("replicas", {}).items():
        console.print(f"replica {rid}: holds blue v{held.get('blue')} green v{held.get('green')}")


@app.command()
def retrain(url: str = URL_OPTION, reason: str = typer.Option("manual", help="recorded with the refit")) -> None:
    """Ask for a refit now (POST /retrain; needs STREAMFIT_ADMIN_TOKEN). The validation gate still applies."""
    body = _control(lambda: _client(url).retrain(reason))
    attempt = body.get("attempt") or {}
    if body.get("version") is not None:
        console.print(f"registered v{body['version']} ({attempt.get('reason')}); the rollout controller deploys it")
    else:
        console.print(f"no new version: {attempt.get('why', 'nothing to train on yet')}")


bench_app = typer.Typer(help="Benchmarks: ratios against a baseline measured in the same run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("ingest")
def bench_ingest_cmd(
    shards: int = typer.Option(2, help="FeatureShard actors"),
    events: int = typer.Option(2_000_000, help="events in the stream (labels come on top)"),
    entities: int = typer.Option(100_000, help="distinct entity keys"),
    batch_size: int = typer.Option(20_000, help="events per source batch"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Events/s through the sharded actors against a single-process vectorised baseline, and state per entity."""
    import json

    from rich.table import Table

    from streamfit.scripts.bench import bench_ingest

    log = (lambda _msg: None) if as_json else (lambda msg: console.print(f"[dim]{msg}[/]"))
    res = bench_ingest(shards, events, entities, batch_size, log=log)
    if as_json:
        print(json.dumps(res))
        return
    t = Table(title=f"ingest: {res['events']:,} events, {entities:,} entities, {shards} shards")
    t.add_column("path")
    t.add_column("events/s", justify="right")
    t.add_column("bytes/entity", justify="right")
    t.add_row("single process (baseline)", f"{res['baseline_events_per_s']:,.0f}", f"{res['baseline_bytes_per_entity']:,.0f}")
    t.add_row(f"{shards} shard actors", f"{res['sharded_events_per_s']:,.0f}", f"{res['bytes_per_entity']:,.0f}")
    console.print(t)
    console.print(f"ratio sharded / baseline: [bold]{res['ratio']:.2f}x[/]")


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
