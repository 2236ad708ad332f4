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
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig, TrainerConfig
from streamfit.errors import ConfigError
from streamfit.schema import EVENT_TIME, LABEL
# The streams live beside the replay; their names stay importable from here (tests, callers).
from streamfit.scripts.quality_streams import DEFAULT_CHANGES, START_TIME, CsvStream, DriftingStream  # noqa: F401

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
    t = rows[EVENT_TIME].to_numpy(dtype=float)
    y = (rows[LABEL].to_numpy(dtype=float) >= 0.5).astype(int)
    n = len(rows)
    chunk_of = np.repeat(np.arange(replay.chunks), np.diff(replay.bounds))
    learn_t = replay.arrival[chunk_of] if n else np.zeros(0)
    # One timeline: predict at event time, learn at arrival; a prediction at the same instant as a
    # learning step comes first (a version that went live at A predicts only rows after A).
    times = np.r_[t, learn_t]
    kind = np.r_[np.zeros(n, int), np.ones(n, int)]
    seq = np.r_[np.arange(n), np.arange(n)]
    order = np.lexsort((seq, kind, times))
    finite = np.isfinite(x)
    dicts = [{names[j]: v for j, v in zip(np.flatnonzero(finite[i]), x[i, finite[i]].tolist())} for i in range(n)]
    model = forest.ARFClassifier(seed=seed)
    correct = np.zeros(n, dtype=bool)
    for o in order.tolist():
        if o < n:
            correct[o] = model.predict_one(dicts[o]) == y[o]
        else:
            i = o - n
            model.learn_one(dicts[i], int(y[i]))
    return MethodResult(correct, int(model.n_drifts_detected()), time.process_time() - started)


# -- the bench --------------------------------------------------------------------------------

def bench_quality(dataset: str = "synthetic", target: str | None = None, entity: str | None = None,
                  time_col: str | None = None, rows: int = 50_000, seed: int = 7, warmup: int = 1000,
                  trainer: TrainerConfig | None = None, methods: Sequence[str] = METHODS,
                  changes: Sequence[tuple[float, float]] = DEFAULT_CHANGES, batch_rows: int = 200,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Replay the stream through every method; ``{"methods": {name: {accuracy, refits, seconds}}, ...}``."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown methods {unknown} (known: {list(METHODS)})")
    wall = time.perf_counter()
    if dataset == "synthetic":
        stream: DriftingStream | CsvStream = DriftingStream(rows=rows, seed=seed, changes=changes)
        desc = f"synthetic: {rows:,} rows, {len(changes)} concept changes, seed {seed}"
    else:
        if not target:
            raise ConfigError("--target: required with a CSV dataset")
        stream = CsvStream(dataset, target, entity, time_col)
        desc = f"{Path(dataset).name}: {len(stream.df):,} rows, {len(stream.fields)} numeric fields"
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
    out: dict[str, Any] = {"methods": {}}
    for name in [m for m in METHODS if m in methods]:
        if name == "river_arf":
            r = replay_arf(replay, seed)
        else:
            r, _ = replay_trainer(replay, configs[name], warmup)
        acc = float(r.correct[scored].mean()) if scored.any() else float("nan")
        out["methods"][name] = {"accuracy": round(acc, 5), "refits": int(r.refits), "seconds": round(r.seconds, 2)}
        refused = sum(1 for h in r.history if not h["accepted"])
        log(f"{name:<12} accuracy {acc:.4f}  refits {r.refits:>3}"
            + (f" ({refused} refused by the gate)" if refused else "") + f"  {r.seconds:6.1f}s CPU")
    out.update(dataset=desc, rows=int(replay.stats["labelled_rows"]), scored_rows=int(scored.sum()),
               warmup_rows=int(warmup), features=len(replay.feature_names), rejected=replay.stats["rejected"],
               feature_seconds=round(feature_seconds, 2), wall_seconds=round(time.perf_counter() - wall, 2))
    return out
