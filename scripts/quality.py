"""``streamfit bench quality``: prequential (test-then-train) replay of refit policies on one stream.

A stream (the built-in drifting generator, or a CSV in file order: ``quality_streams``) goes
once through the live pipeline's own loop in process (``LocalRunner``: the coordinator's
watermark and dispatch, one ``FeatureShard`` holding every key), which yields the training rows exactly as the trainer would
receive them: features as of each event (window aggregates and label history included), in
label-arrival order, in chunks (one per source batch). Every method then replays the same
chunks in the same order:

- ``static``      one fit at the end of the warm-up, never again;
- ``periodic``    full refit on a sliding window every N labelled rows (volume trigger);
- ``incremental`` the same trigger, continuing the live booster with new trees;
- ``drift``       a drift detector on the live version's errors, nothing else;
- ``default``     the trainer configuration as configured (``TrainerConfig()`` unless given);
- ``river_arf``   River's adaptive random forest, learning one row at a time (the online peer).

The XGBoost methods are ``TrainerCore`` itself (policy, sliding window, gate) with no
registry: a version that passes the gate goes live when the chunk that triggered it has
been processed (no canary delay). Scoring is prequential and respects time: each row is
predicted by the version that was live at its *event* time (a version that went live at
time A predicts rows with event time > A), before the trainer learns from it. River's ARF
follows the same clock: it predicts a row at its event time and learns it when its label
arrives.

Warm-up rule (the same for every method, ARF included): every XGBoost method gets its first
model from a fit on the first ``warmup`` labelled rows; only rows whose event time is after
that first model went live are scored (a method whose first fit failed counts its rows
wrong until it has a model). ARF learns from the warm-up rows too, and its
predictions of them are not scored either. ``refits`` counts accepted new versions *after*
that initial fit (so ``static`` has 0); for ``river_arf`` it counts the trees the forest
replaced on a drift alarm. ``seconds`` is the CPU time of each method's replay (prediction +
learning; the shared feature pass is reported once, separately).

Example:
    >>> res = bench_quality(rows=3000, warmup=500, methods=["static", "periodic"], log=lambda _m: None)
    >>> sorted(res["methods"]), 0.0 <= res["methods"]["static"]["accuracy"] <= 1.0
    (['periodic', 'static'], True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig, TrainerConfig
from streamfit.errors import ConfigError
from streamfit.schema import ENTITY, EVENT_TIME, LABEL
from streamfit.scripts.baselines import BASELINES, MAJORITY_WINDOW, replay_online, timeline
# The streams live beside the replay; their names stay importable from here (tests, callers).
from streamfit.scripts.quality_streams import (BUILT_IN, DEFAULT_CHANGES, START_TIME, CsvStream,  # noqa: F401
                                               DriftingStream, PersistentStream)

METHODS = ("static", "periodic", "incremental", "drift", "default", "river_arf")


# -- the feature pass (shared by every method) -----------------------------------------------

@dataclass
class Replay:
    """Training rows as the trainer receives them, with the time each chunk of them arrived."""

    rows: pd.DataFrame  # event_id, entity, event_time, features..., label — in arrival order
    feature_names: list[str]
    bounds: np.ndarray  # chunk c is rows[bounds[c]:bounds[c+1]]
    arrival: np.ndarray  # stream time at which chunk c reached the trainer
    stats: dict[str, Any]

    @property
    def chunks(self) -> int:
        return len(self.arrival)


def feature_pass(batches: Iterator[pd.DataFrame], features: FeaturesConfig) -> Replay:
    """Run the source batches through one FeatureShard (all keys) with the stream-wide watermark."""
    from streamfit.actors.stream import FramesSource, LocalRunner

    parts: list[pd.DataFrame] = []
    arrival: list[float] = []

    def chunk(rows: pd.DataFrame, clock: float) -> None:
        parts.append(rows)
        arrival.append(clock)

    runner = LocalRunner(features, FramesSource(list(batches)), on_rows=chunk)
    runner.run()
    shard = runner.shards[0]
    sizes = [len(p) for p in parts]
    names = shard.feature_names
    all_rows = pd.concat(parts, ignore_index=True) if parts else shard.empty_rows()
    st = shard.stats()
    stats = {"events": int(st["events"]), "labelled_rows": len(all_rows), "rejected": int(st["rejected"]),
             "reasons": {k.split(":", 1)[1]: v for k, v in st.items() if k.startswith("rejected:")}}
    return Replay(all_rows, names, np.r_[0, np.cumsum(sizes)].astype(np.int64), np.asarray(arrival, float), stats)


# -- the methods ------------------------------------------------------------------------------

def method_configs(default: TrainerConfig) -> dict[str, TrainerConfig]:
    """The XGBoost methods: one TrainerConfig each, all with the default's model and gate settings."""
    quiet = dict(refit_every_rows=None, refit_every_s=None, accuracy_below=None, drift_detector=None,
                 psi_above=None)
    every = default.refit_every_rows or TrainerConfig.model_fields["refit_every_rows"].default
    return {
        "static": default.model_copy(update=quiet),
        "periodic": default.model_copy(update={**quiet, "refit_every_rows": every, "strategy": "full"}),
        "incremental": default.model_copy(update={**quiet, "refit_every_rows": every, "strategy": "incremental"}),
        "drift": default.model_copy(update={**quiet, "drift_detector": default.drift_detector or "page_hinkley"}),
        "default": default,
    }


@dataclass
class MethodResult:
    correct: np.ndarray  # per row: predicted right (only meaningful where scored)
    refits: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def replay_trainer(replay: Replay, cfg: TrainerConfig, warmup: int) -> tuple[MethodResult, float]:
    """TrainerCore over the chunks, each row predicted by the version live at its event time.

    Returns the result and the time the first model (fit at the end of the warm-up) went live.
    """
    from streamfit.actors.training import TrainerCore

    started = time.process_time()
    names = replay.feature_names
    rows = replay.rows
    x = rows[names].to_numpy(dtype=float)
    t = rows[EVENT_TIME].to_numpy(dtype=float)
    y = rows[LABEL].to_numpy(dtype=float) >= 0.5
    frame = rows[[EVENT_TIME, *names, LABEL]].astype(float)
    correct = np.zeros(len(rows), dtype=bool)
    core = TrainerCore(cfg, names, None)
    live_from: list[float] = []
    boosters: list[Any] = []
    first_live = float("nan")
    initial_at = 0  # history entries before this one belong to the warm-up
    for c in range(replay.chunks):
        lo, hi = int(replay.bounds[c]), int(replay.bounds[c + 1])
        if boosters:
            # The version live at each row's event time: the last one that went live strictly before it.
            which = np.searchsorted(np.asarray(live_from), t[lo:hi], side="left") - 1
            for v in np.unique(which[which >= 0]):
                sel = np.flatnonzero(which == v)
                p = boosters[v].inplace_predict(x[lo + sel])
                correct[lo + sel] = (np.asarray(p) >= 0.5) == y[lo + sel]
        core.add_rows(frame.iloc[lo:hi])
        if np.isnan(first_live) and core.rows_seen >= warmup:
            core.request_refit("initial")
            if core.champion is not None:
                first_live = float(replay.arrival[c])
                initial_at = len(core.history)
        if core.champion is not None and (not boosters or core.champion is not boosters[-1]):
            live_from.append(float(replay.arrival[c]))
            boosters.append(core.champion)
    after = core.history[initial_at:]
    refits = sum(1 for r in after if r["accepted"])
    return MethodResult(correct, refits, time.process_time() - started, after), first_live


def replay_arf(replay: Replay, seed: int = 7) -> MethodResult:
    """River's ARF on the same rows: predict each at its event time, learn it when its label arrives."""
    from river import forest

    started = time.process_time()
    names = replay.feature_names
    rows = replay.rows
    x = rows[names].to_numpy(dtype=float)
    y = (rows[LABEL].to_numpy(dtype=float) >= 0.5).astype(int)
    finite = np.isfinite(x)
    dicts = [{names[j]: v for j, v in zip(np.flatnonzero(finite[i]), x[i, finite[i]].tolist())} for i in range(len(rows))]
    model = forest.ARFClassifier(seed=seed)
    correct = replay_online(_timeline(replay), dicts, y, model)
    return MethodResult(correct, int(model.n_drifts_detected()), time.process_time() - started)


def replay_baseline(replay: Replay, name: str) -> MethodResult:
    """A trivial baseline (``baselines.BASELINES``) on the same clock as ARF; a row's input is its entity and
    ``label_last`` feature (the entity's newest label that had arrived at its event time)."""
    started = time.process_time()
    y = (replay.rows[LABEL].to_numpy(dtype=float) >= 0.5).astype(int)
    rows = replay.rows
    known = rows["label_last"].to_numpy(dtype=float) if "label_last" in rows else np.full(len(rows), np.nan)
    correct = replay_online(_timeline(replay), list(zip(rows[ENTITY].tolist(), known.tolist())), y, BASELINES[name]())
    return MethodResult(correct, 0, time.process_time() - started)


def _timeline(replay: Replay) -> np.ndarray:
    return timeline(replay.rows[EVENT_TIME].to_numpy(dtype=float), replay.bounds, replay.arrival)


# -- the bench --------------------------------------------------------------------------------

def bench_quality(dataset: str = "synthetic", target: str | None = None, entity: str | None = None,
                  time_col: str | None = None, rows: int = 50_000, seed: int = 7, warmup: int = 1000,
                  trainer: TrainerConfig | None = None, methods: Sequence[str] = METHODS,
                  changes: Sequence[tuple[float, float]] = DEFAULT_CHANGES, batch_rows: int = 200,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Replay the stream through every method and baseline;
    ``{"methods": {name: {accuracy, refits, seconds}}, "baselines": {name: {accuracy, seconds}}, ...}``
    (``dataset="all"``: ``{"streams": {built-in name: that}}``)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown methods {unknown} (known: {list(METHODS)})")
    if dataset == "all":
        out = {}
        for name in BUILT_IN:
            log(f"== {name}")
            out[name] = bench_quality(name, rows=rows, seed=seed, warmup=warmup, trainer=trainer, methods=methods,
                                      changes=changes, batch_rows=batch_rows, log=log)
        return {"streams": out}
    wall = time.perf_counter()
    stream = open_stream(dataset, target, entity, time_col, rows, seed, changes)
    t0 = time.perf_counter()
    replay = feature_pass(stream.batches(batch_rows), stream.features())
    feature_seconds = time.perf_counter() - t0
    rejected = replay.stats["rejected"]
    log(f"features: {replay.stats['labelled_rows']:,} labelled rows, {len(replay.feature_names)} features, "
        f"{replay.chunks} chunks ({feature_seconds:.1f}s)"
        + (f"; {rejected:,} rows rejected {replay.stats['reasons']}" if rejected else ""))
    if replay.stats["labelled_rows"] <= warmup:
        raise ConfigError(f"the stream has {replay.stats['labelled_rows']} labelled rows; more than the "
                          f"warm-up ({warmup}) are needed")
    configs = method_configs(trainer or TrainerConfig())
    # Scoring starts when the first fit (at the end of the chunk that completes the warm-up) goes
    # live: the same rows for every method. A method whose first fit failed (one class only) has
    # its rows counted wrong until it has a model.
    first_chunk = int(np.searchsorted(replay.bounds[1:], warmup, side="left"))
    scored = replay.rows[EVENT_TIME].to_numpy(dtype=float) > float(replay.arrival[first_chunk])
    out: dict[str, Any] = {"methods": {}, "baselines": {}}
    for name in [m for m in METHODS if m in methods] + list(BASELINES):
        if name in BASELINES:
            r = replay_baseline(replay, name)
        elif name == "river_arf":
            r = replay_arf(replay, seed)
        else:
            r, _ = replay_trainer(replay, configs[name], warmup)
        acc = float(r.correct[scored].mean()) if scored.any() else float("nan")
        if name in BASELINES:
            out["baselines"][name] = {"accuracy": round(acc, 5), "seconds": round(r.seconds, 2)}
        else:
            out["methods"][name] = {"accuracy": round(acc, 5), "refits": int(r.refits), "seconds": round(r.seconds, 2)}
        refused = sum(1 for h in r.history if not h["accepted"])
        log(f"{name:<12} accuracy {acc:.4f}  refits {r.refits:>3}"
            + (f" ({refused} refused by the gate)" if refused else "") + f"  {r.seconds:6.1f}s CPU")
    out.update(dataset=stream.describe(), rows=int(replay.stats["labelled_rows"]), scored_rows=int(scored.sum()),
               warmup_rows=int(warmup), features=len(replay.feature_names), rejected=replay.stats["rejected"],
               feature_seconds=round(feature_seconds, 2), wall_seconds=round(time.perf_counter() - wall, 2),
               verdict=verdict(out))
    return out


def open_stream(dataset: str, target: str | None, entity: str | None, time_col: str | None, rows: int, seed: int,
                changes: Sequence[tuple[float, float]]) -> DriftingStream | CsvStream:
    """The stream ``--dataset`` names: a built-in generator (``BUILT_IN``) or a CSV file."""
    if dataset in BUILT_IN:
        return BUILT_IN[dataset](rows=rows, seed=seed, changes=changes)
    if not target:
        raise ConfigError(f"--target: required with a CSV dataset (built-in streams: {', '.join(BUILT_IN)}, all)")
    return CsvStream(dataset, target, entity, time_col)


# -- the report -------------------------------------------------------------------------------

BAR = ("no_change", "static", "river_arf")  # the default policy must be at least as accurate as each


def verdict(res: dict[str, Any]) -> dict[str, Any] | None:
    """Default against the best of ``BAR`` (accuracy points) and its CPU seconds as a share of ARF's."""
    scores = {**res["methods"], **res["baselines"]}
    if "default" not in scores or any(b not in scores for b in BAR):
        return None
    best = max(BAR, key=lambda b: scores[b]["accuracy"])
    d = scores["default"]
    return {"best_baseline": best, "points": round(100 * (d["accuracy"] - scores[best]["accuracy"]), 2),
            "cpu_share_of_arf": round(d["seconds"] / max(scores["river_arf"]["seconds"], 1e-9), 3)}


def print_report(res: dict[str, Any], console: Any) -> None:
    """The bench's tables (rich): one per stream, and with several streams a summary of the verdicts."""
    from rich import box
    from rich.table import Table

    streams = res["streams"] if "streams" in res else {"": res}
    for name, r in streams.items():
        console.print(f"[bold]prequential accuracy[/] — {r['dataset']}; {r['scored_rows']:,} of {r['rows']:,} "
                      f"rows scored (those after the first fit, on {r['warmup_rows']:,} rows, went live)")
        t = Table()
        for col in ("method", "accuracy", "refits", "CPU s (replay)"):
            t.add_column(col, justify="left" if col == "method" else "right")
        for m, v in [*r["methods"].items(), *r["baselines"].items()]:
            t.add_row(m, f"{100 * v['accuracy']:.2f} %", str(v.get("refits", "—")), f"{v['seconds']:.1f}")
        console.print(t)
        v = verdict(r)
        if v is not None:
            console.print(f"default vs the best of {', '.join(BAR)} ({v['best_baseline']}): [bold]{v['points']:+.2f}[/] "
                          f"points, at {v['cpu_share_of_arf']:.2f}x River ARF's CPU time")
    console.print("[dim]refits: new versions after the first fit (river_arf: trees it replaced on a drift alarm); "
                  f"no_change: the entity's previous label; majority: of the newest {MAJORITY_WINDOW} labels[/]")
    if len(streams) > 1:
        t = Table(title="default against the baselines", box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1),
                  pad_edge=False, show_edge=False)  # 80 columns
        for col in ("stream", "default", *BAR, "majority", "points", "CPU/ARF"):
            t.add_column(col, justify="left" if col == "stream" else "right", no_wrap=True)
        for name, r in streams.items():
            s, v = {**r["methods"], **r["baselines"]}, verdict(r) or {}
            t.add_row(name, *(f"{100 * s[m]['accuracy']:.2f}" if m in s else "—" for m in ("default", *BAR, "majority")),
                      f"{v.get('points', float('nan')):+.2f}", f"{v.get('cpu_share_of_arf', float('nan')):.2f}x")
        console.print(t)
    total = sum(r["wall_seconds"] for r in streams.values())
    console.print(f"features {sum(r['feature_seconds'] for r in streams.values()):.1f} s, total wall time {total:.1f} s")
