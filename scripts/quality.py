"""``streamfit bench quality``: prequential (test-then-train) replay of refit policies on one stream.

A stream (a built-in drifting generator: ``quality_streams``, or of another task: ``task_streams``;
or a CSV in file order: ``quality_csv``) goes
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
- ``river_arf``   River's adaptive random forest, learning one row at a time (the online peer;
                  its regressor for a regression stream).

A stream of another task (regression, multiclass, categorical fields: it names its ``model``)
is replayed the same way with the task's trainer (``TrainerCore`` with ``model=`` and
``categorical=``) and scored with the task's metrics and baselines (``quality_scores``).

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

from streamfit.config import FeaturesConfig, ModelConfig, TrainerConfig
from streamfit.errors import ConfigError
from streamfit.schema import ENTITY, EVENT_TIME, LABEL
from streamfit.scripts.baselines import MAJORITY_WINDOW, TASK_BASELINES, baseline, replay_predictions, timeline
from streamfit.scripts.quality_csv import CsvStream
from streamfit.scripts.quality_scores import (arf_inputs, correct_of, labels_of, primary_metric, print_task_stream,
                                              print_task_summary, task_scores, task_verdict)
# The streams live beside the replay; their names stay importable from here (tests, callers).
from streamfit.scripts.quality_streams import (BUILT_IN, DEFAULT_CHANGES, START_TIME,  # noqa: F401
                                               DriftingStream, PersistentStream)
from streamfit.scripts.task_streams import TASK_STREAMS
from streamfit.task import Task

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
    model: ModelConfig | None = None  # the stream's task (None: binary, reported as before tasks)
    categorical: list[str] = field(default_factory=list)  # categorical fields (text in ``rows``)

    @property
    def chunks(self) -> int:
        return len(self.arrival)

    @property
    def task(self) -> Task:
        """The task the labels are of."""
        return Task(self.model.task) if self.model is not None else Task.BINARY


def feature_pass(batches: Iterator[pd.DataFrame], features: FeaturesConfig, model: ModelConfig | None = None) -> Replay:
    """Run the source batches through one FeatureShard (all keys) with the stream-wide watermark (and the
    stream plane's checks and label history for ``model``'s task)."""
    from streamfit.actors.stream import FramesSource, LocalRunner

    parts: list[pd.DataFrame] = []
    arrival: list[float] = []

    def chunk(rows: pd.DataFrame, clock: float) -> None:
        parts.append(rows)
        arrival.append(clock)

    task = {} if model is None else {"model": model}
    runner = LocalRunner(features, FramesSource(list(batches)), on_rows=chunk, **task)
    runner.run()
    shard = runner.shards[0]
    sizes = [len(p) for p in parts]
    names = shard.feature_names
    all_rows = pd.concat(parts, ignore_index=True) if parts else shard.empty_rows()
    st = shard.stats()
    stats = {"events": int(st["events"]), "labelled_rows": len(all_rows), "rejected": int(st["rejected"]),
             "reasons": {k.split(":", 1)[1]: v for k, v in st.items() if k.startswith("rejected:")}}
    return Replay(all_rows, names, np.r_[0, np.cumsum(sizes)].astype(np.int64), np.asarray(arrival, float), stats,
                  model, features.categorical_columns(model))


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
    correct: np.ndarray  # per row: predicted right (only meaningful where scored; classification)
    refits: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    pred: np.ndarray | None = None  # per row: the prediction (NaN: no model yet); see quality_scores
    hard: bool = True  # pred holds classes/values (ARF, baselines), not the booster's probabilities


def replay_trainer(replay: Replay, cfg: TrainerConfig, warmup: int) -> tuple[MethodResult, float]:
    """TrainerCore over the chunks, each row predicted by the version live at its event time.

    Returns the result and the time the first model (fit at the end of the warm-up) went live.
    """
    from streamfit.actors.training import TrainerCore

    started = time.process_time()
    names = replay.feature_names
    rows = replay.rows
    t = rows[EVENT_TIME].to_numpy(dtype=float)
    core = TrainerCore(cfg, names, None, model=replay.model, categorical=replay.categorical)
    core.history_kept = None  # an offline replay counts every attempt
    plain = core.fit.plain  # binary on numbers: a float matrix, as before tasks
    x = rows[names].to_numpy(dtype=float) if plain else None
    frame = rows[[EVENT_TIME, *names, LABEL]]
    frame = frame.astype(float) if plain else frame
    pred = np.full((len(rows), core.fit.n_classes) if core.fit.n_classes else len(rows), np.nan)
    which = np.full(len(rows), -1)  # the version that predicts each row (-1: none was live yet)
    live_from: list[float] = []
    boosters: list[Any] = []
    cats: list[Any] = []  # each booster's category dictionary (None without categorical fields)
    first_live = float("nan")
    initial_at = 0  # history entries before this one belong to the warm-up
    for c in range(replay.chunks):
        lo, hi = int(replay.bounds[c]), int(replay.bounds[c + 1])
        if boosters:
            # The version live at each row's event time: the last one that went live strictly before it.
            which[lo:hi] = np.searchsorted(np.asarray(live_from), t[lo:hi], side="left") - 1
        core.add_rows(frame.iloc[lo:hi])
        if np.isnan(first_live) and core.rows_seen >= warmup:
            core.request_refit("initial")
            if core.champion is not None:
                first_live = float(replay.arrival[c])
                initial_at = len(core.history)
        if core.champion is not None and (not boosters or core.champion is not boosters[-1]):
            live_from.append(float(replay.arrival[c]))
            boosters.append(core.champion)
            cats.append(core.champion_cats)
    # Each version predicts all its rows at once (a booster never changes once live: the same answers as
    # predicting chunk by chunk, with far fewer calls).
    for v in np.unique(which[which >= 0]).tolist():
        sel = np.flatnonzero(which == v)
        pred[sel] = (boosters[v].inplace_predict(x[sel]) if plain
                     else core.fit.predict(boosters[v], rows.iloc[sel], cats[v]))
    after = core.history[initial_at:]
    refits = sum(1 for r in after if r["accepted"])
    correct = correct_of(replay.task, labels_of(rows, replay.task), pred, hard=False)
    return MethodResult(correct, refits, time.process_time() - started, after, pred, hard=False), first_live


def replay_arf(replay: Replay, seed: int = 7) -> MethodResult:
    """River's ARF on the same rows: predict each at its event time, learn it when its label arrives."""
    from river import forest

    started = time.process_time()
    regression = replay.task is Task.REGRESSION
    dicts = arf_inputs(replay.rows, replay.feature_names, replay.categorical)
    model = forest.ARFRegressor(seed=seed) if regression else forest.ARFClassifier(seed=seed)
    return _online(replay, dicts, model, started)


def replay_baseline(replay: Replay, name: str) -> MethodResult:
    """A trivial baseline (``baselines.TASK_BASELINES``) on the same clock as ARF; a row's input is its entity and
    ``label_last`` feature (the entity's newest label that had arrived at its event time)."""
    started = time.process_time()
    rows = replay.rows
    known = rows["label_last"].to_numpy(dtype=float) if "label_last" in rows else np.full(len(rows), np.nan)
    return _online(replay, list(zip(rows[ENTITY].tolist(), known.tolist())), baseline(name, replay.task), started)


def _online(replay: Replay, inputs: list[Any], model: Any, started: float) -> MethodResult:
    """An online learner (ARF, a baseline) along the replay's clock: its hard predictions, CPU seconds and the
    trees it replaced on a drift alarm (ARF)."""
    y = labels_of(replay.rows, replay.task)
    order = timeline(replay.rows[EVENT_TIME].to_numpy(dtype=float), replay.bounds, replay.arrival)
    pred = replay_predictions(order, inputs, y, model, float if replay.task is Task.REGRESSION else int)
    drifts = int(model.n_drifts_detected()) if hasattr(model, "n_drifts_detected") else 0
    return MethodResult(correct_of(replay.task, y, pred, hard=True), drifts, time.process_time() - started, pred=pred)


# -- the bench --------------------------------------------------------------------------------

def bench_quality(dataset: str = "synthetic", target: str | None = None, entity: str | None = None,
                  time_col: str | None = None, rows: int = 50_000, seed: int = 7, warmup: int = 1000,
                  trainer: TrainerConfig | None = None, methods: Sequence[str] = METHODS,
                  changes: Sequence[tuple[float, float]] = DEFAULT_CHANGES, batch_rows: int = 200,
                  log: Callable[[str], None] = print, task: str | None = None) -> dict[str, Any]:
    """Replay the stream through every method and baseline;
    ``{"methods": {name: {accuracy, refits, seconds}}, "baselines": {name: {accuracy, seconds}}, ...}``
    (a stream of another task: its metrics instead of accuracy, and ``task``, ``metric``, ``categorical``;
    ``dataset="all"``: ``{"streams": {built-in name: that}}``; ``task``: a CSV target's, else inferred)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown methods {unknown} (known: {list(METHODS)})")
    if dataset == "all":
        out = {}
        for name in [*BUILT_IN, *TASK_STREAMS]:
            log(f"== {name}")
            out[name] = bench_quality(name, rows=rows, seed=seed, warmup=warmup, trainer=trainer, methods=methods,
                                      changes=changes, batch_rows=batch_rows, log=log)
        return {"streams": out}
    wall = time.perf_counter()
    stream = open_stream(dataset, target, entity, time_col, rows, seed, changes, task)
    model = stream.model() if hasattr(stream, "model") else None
    t0 = time.perf_counter()
    replay = feature_pass(stream.batches(batch_rows), stream.features(), model)
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
    if model is not None:
        out.update(task=replay.task.value, metric=primary_metric(replay.task), categorical=replay.categorical)
    y = labels_of(replay.rows, replay.task)
    baselines = TASK_BASELINES[replay.task]
    for name in [m for m in METHODS if m in methods] + list(baselines):
        if name in baselines:
            r = replay_baseline(replay, name)
        elif name == "river_arf":
            r = replay_arf(replay, seed)
        else:
            r, _ = replay_trainer(replay, configs[name], warmup)
        if model is None:  # a binary stream of before tasks: its accuracy, as it was reported
            scores = {"accuracy": round(float(r.correct[scored].mean()) if scored.any() else float("nan"), 5)}
        else:
            scores = task_scores(replay.task, y, r.pred, r.hard, scored)
        if name in baselines:
            out["baselines"][name] = {**scores, "seconds": round(r.seconds, 2)}
        else:
            out["methods"][name] = {**scores, "refits": int(r.refits), "seconds": round(r.seconds, 2)}
        refused = sum(1 for h in r.history if not h["accepted"])
        metric = primary_metric(replay.task)
        log(f"{name:<12} {metric} {scores[metric]:.4f}  refits {r.refits:>3}"
            + (f" ({refused} refused by the gate)" if refused else "") + f"  {r.seconds:6.1f}s CPU")
    out.update(dataset=stream.describe(), rows=int(replay.stats["labelled_rows"]), scored_rows=int(scored.sum()),
               warmup_rows=int(warmup), features=len(replay.feature_names), rejected=replay.stats["rejected"],
               feature_seconds=round(feature_seconds, 2), wall_seconds=round(time.perf_counter() - wall, 2),
               verdict=verdict(out))
    return out


def open_stream(dataset: str, target: str | None, entity: str | None, time_col: str | None, rows: int, seed: int,
                changes: Sequence[tuple[float, float]], task: str | None = None) -> Any:
    """The stream ``--dataset`` names: a built-in generator (``BUILT_IN``, ``TASK_STREAMS``) or a CSV file."""
    streams = {**BUILT_IN, **TASK_STREAMS}
    if dataset in streams:
        if task is not None:
            raise ConfigError(f"--task: for a CSV dataset only ({dataset} is a {streams[dataset].task.value} stream)"
                              if dataset in TASK_STREAMS else f"--task: for a CSV dataset only")
        return streams[dataset](rows=rows, seed=seed, changes=changes)
    if not target:
        raise ConfigError(f"--target: required with a CSV dataset (built-in streams: {', '.join(streams)}, all)")
    return CsvStream(dataset, target, entity, time_col, task=task)


# -- the report -------------------------------------------------------------------------------

BAR = ("no_change", "static", "river_arf")  # the default policy must be at least as accurate as each


def verdict(res: dict[str, Any]) -> dict[str, Any] | None:
    """Default against the best of ``BAR`` (accuracy points) and its CPU seconds as a share of ARF's (a stream
    of another task: ``quality_scores.task_verdict``)."""
    if "task" in res:
        return task_verdict(res)
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
    tasks = {name: r for name, r in streams.items() if "task" in r}
    for name, r in streams.items():
        if name in tasks:
            print_task_stream(r, console)
            continue
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
                  f"no_change: the entity's previous label; majority, mean: of the newest {MAJORITY_WINDOW} labels[/]")
    if len(tasks) > 1:
        print_task_summary(tasks, console)
    binary = {name: r for name, r in streams.items() if name not in tasks}
    if len(binary) > 1:
        t = Table(title="default against the baselines", box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1),
                  pad_edge=False, show_edge=False)  # 80 columns
        for col in ("stream", "default", *BAR, "majority", "points", "CPU/ARF"):
            t.add_column(col, justify="left" if col == "stream" else "right", no_wrap=True)
        for name, r in binary.items():
            s, v = {**r["methods"], **r["baselines"]}, verdict(r) or {}
            t.add_row(name, *(f"{100 * s[m]['accuracy']:.2f}" if m in s else "—" for m in ("default", *BAR, "majority")),
                      f"{v.get('points', float('nan')):+.2f}", f"{v.get('cpu_share_of_arf', float('nan')):.2f}x")
        console.print(t)
    total = sum(r["wall_seconds"] for r in streams.values())
    console.print(f"features {sum(r['feature_seconds'] for r in streams.values()):.1f} s, total wall time {total:.1f} s")
