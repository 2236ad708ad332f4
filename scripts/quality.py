"""``streamfit bench quality``: prequential (test-then-train) replay of refit policies on one stream.

A stream (the built-in drifting generator, or a CSV in file order) goes once through the
same feature logic as the live pipeline (one in-process ``FeatureShard`` holding every key,
with the stream-wide watermark), which yields the training rows exactly as the trainer would
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

from streamfit.config import AggregateSpec, FeaturesConfig, FieldSpec, TrainerConfig
from streamfit.errors import ConfigError
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL, LABEL_KIND

METHODS = ("static", "periodic", "incremental", "drift", "default", "river_arf")
START_TIME = 1_700_000_000.0
SYNTHETIC_FIELDS = ("x0", "x1", "x2")


# -- the built-in drifting stream ------------------------------------------------------------

@dataclass(frozen=True)
class Concept:
    """One labelling rule: weights on the row's own signal, on the entity's level, and an interaction."""

    w: tuple[float, float, float]
    level: float  # weight of the entity's level (visible only through x0's window mean)
    inter: float = 0.0  # weight of z1 * z2


# Five concepts: every change moves both the row weights and the role of the entity level.
CONCEPTS = (
    Concept((2.0, 1.0, 0.0), +1.5),
    Concept((-1.0, 2.0, 0.5), -1.5),
    Concept((0.5, -2.0, 1.5), +1.0, 1.0),
    Concept((-2.0, 0.0, -1.5), -1.0),
    Concept((1.0, -1.0, -2.0), +1.5, 1.5),
)

# (start, end) as fractions of the stream; start == end is an abrupt change, otherwise the
# labelling rule blends linearly from the old concept to the next one over [start, end).
DEFAULT_CHANGES = ((0.2, 0.2), (0.4, 0.4), (0.6, 0.6), (0.74, 0.86))


class DriftingStream:
    """Deterministic synthetic stream with per-entity structure, abrupt and gradual concept drift.

    Each entity has a hidden level ``b`` (x0 = z0 + 2 b, so only the entity's window mean of
    x0 recovers ``b``) and a hidden two-state mood ``s`` that flips now and then (seen only in
    its own recent labels: the label-history features). The label of event ``i`` is
    ``1[w·z + level·b + inter·z1·z2 + 1.2 s + noise > 0]`` under the concept in force at ``i``;
    inside a gradual change each row follows the new concept with a probability rising from
    0 to 1. Labels arrive ``label_delay`` events after their event, as ``kind="label"`` rows.

    >>> s = DriftingStream(rows=1000, changes=((0.5, 0.5),))
    >>> frames = list(s.batches(400))
    >>> sum(len(f) for f in frames), int(sum((f["kind"] == "label").sum() for f in frames))
    (2000, 1000)
    >>> s.concept_of(np.array([0, 499, 500, 999])).tolist()
    [0, 0, 1, 1]
    """

    def __init__(self, rows: int = 50_000, seed: int = 7, entities: int = 200, events_per_second: float = 10.0,
                 label_delay: int = 100, changes: Sequence[tuple[float, float]] = DEFAULT_CHANGES,
                 noise: float = 0.5, mood_weight: float = 1.2, mood_flip: float = 0.01) -> None:
        if len(changes) >= len(CONCEPTS):
            raise ValueError(f"at most {len(CONCEPTS) - 1} concept changes")
        self.rows, self.seed, self.entities = rows, seed, entities
        self.events_per_second, self.label_delay = events_per_second, label_delay
        self.changes = [(int(a * rows), int(b * rows)) for a, b in changes]
        self.noise, self.mood_weight, self.mood_flip = noise, mood_weight, mood_flip

    def concept_of(self, idx: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        """Concept number labelling each event index (``u``: uniform draws that pick a side in a blend)."""
        idx = np.asarray(idx)
        u = np.full(len(idx), 0.5) if u is None else u
        concept = np.zeros(len(idx), dtype=np.int64)
        for k, (a, b) in enumerate(self.changes):
            if b <= a:
                concept[idx >= a] = k + 1
            else:
                share = np.clip((idx - a) / (b - a), 0.0, 1.0)
                concept[(idx >= b) | ((idx >= a) & (u < share))] = k + 1
        return concept

    def frame(self) -> pd.DataFrame:
        """The whole stream (events and their labels) in arrival order."""
        n = self.rows
        rng = np.random.default_rng([self.seed, 20_240_611])
        level = rng.normal(0.0, 1.0, size=self.entities)
        ent = rng.integers(0, self.entities, size=n)
        z = rng.normal(0.0, 1.0, size=(n, 3))
        x = z.copy()
        x[:, 0] += 2.0 * level[ent]
        # Hidden per-entity mood: flips with probability mood_flip at each of the entity's events.
        flips = (rng.random(n) < self.mood_flip).astype(np.int64)
        cum = pd.Series(flips).groupby(ent).cumsum().to_numpy()  # the entity's flips so far
        start_mood = rng.integers(0, 2, size=self.entities)
        mood = np.where((cum + start_mood[ent]) % 2 == 0, 1.0, -1.0)
        idx = np.arange(n)
        concept = self.concept_of(idx, rng.random(n))
        w = np.array([c.w for c in CONCEPTS])[concept]
        lv = np.array([c.level for c in CONCEPTS])[concept]
        inter = np.array([c.inter for c in CONCEPTS])[concept]
        logit = (w * z).sum(axis=1) + lv * level[ent] + inter * z[:, 1] * z[:, 2] + self.mood_weight * mood
        label = (logit + rng.normal(0.0, self.noise, size=n) > 0).astype(np.float64)
        t = START_TIME + idx / self.events_per_second
        ids = np.char.add("ev", idx.astype(str)).astype(object)
        ents = np.char.add("u", ent.astype(str)).astype(object)
        events = pd.DataFrame({KIND: EVENT, EVENT_ID: ids, ENTITY: ents, EVENT_TIME: t})
        for j, name in enumerate(SYNTHETIC_FIELDS):
            events[name] = x[:, j]
        events[LABEL] = np.nan
        labels = pd.DataFrame({KIND: LABEL_KIND, EVENT_ID: ids, ENTITY: ents,
                               EVENT_TIME: START_TIME + (idx + self.label_delay) / self.events_per_second})
        for name in SYNTHETIC_FIELDS:
            labels[name] = np.nan
        labels[LABEL] = label
        both = pd.concat([events, labels], ignore_index=True)
        # Arrival order is time order; a label due at the same instant as an event comes after it.
        return both.sort_values(EVENT_TIME, kind="stable", ignore_index=True)

    def batches(self, batch_rows: int = 200) -> Iterator[pd.DataFrame]:
        """The stream in source batches of ``batch_rows`` rows (events and labels together)."""
        df = self.frame()
        for i in range(0, len(df), batch_rows):
            yield df.iloc[i:i + batch_rows].reset_index(drop=True)

    @staticmethod
    def features() -> FeaturesConfig:
        """The feature spec the stream is replayed with: the built-in default."""
        return FeaturesConfig()


# -- a CSV in file order ---------------------------------------------------------------------

def binary_target(values: pd.Series, column: str) -> np.ndarray:
    """A two-valued column as 0/1 floats (NaN where missing): 0/1, booleans, or the larger of two values as 1.

    >>> binary_target(pd.Series(["up", "down", "up", None]), "y").tolist()
    [1.0, 0.0, 1.0, nan]
    """
    present = values.dropna()
    kinds = sorted(present.unique().tolist(), key=str)
    if len(kinds) > 2:
        raise ConfigError(f"--target {column}: {len(kinds)} distinct values; a binary label is needed")
    if pd.api.types.is_bool_dtype(present.dtype):
        mapping = {False: 0.0, True: 1.0}
    elif set(kinds) <= {0, 1}:
        mapping = {0: 0.0, 1: 1.0}
    else:
        try:
            kinds = sorted(kinds)
        except TypeError:
            pass
        mapping = {v: float(i) for i, v in enumerate(kinds[-2:] if len(kinds) == 2 else kinds)}
        if len(kinds) == 1:
            mapping = {kinds[0]: 1.0}
    return values.map(mapping).astype(float).to_numpy()


@dataclass
class CsvStream:
    """A CSV replayed in file order: numeric columns are the fields, ``target`` the label.

    Without ``entity`` the whole stream is one entity; without ``time`` the row number is the
    event time (seconds). Each label arrives as a label row right after its event.
    """

    path: str
    target: str
    entity: str | None = None
    time: str | None = None
    fields: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        p = Path(self.path)
        if not p.is_file():
            raise ConfigError(f"--dataset: no such file: {self.path}")
        self.df = pd.read_csv(p)
        for opt, col in (("--target", self.target), ("--entity", self.entity), ("--time", self.time)):
            if col is not None and col not in self.df.columns:
                raise ConfigError(f"{opt}: no column {col!r} in {p.name} (columns: {list(self.df.columns)})")
        special = {self.target, self.entity, self.time} - {None}
        for c in self.df.columns:
            if c in special:
                continue
            if pd.api.types.is_numeric_dtype(self.df[c].dtype) or pd.api.types.is_bool_dtype(self.df[c].dtype):
                self.fields.append(str(c))
            else:
                self.dropped.append(str(c))
        if not self.fields:
            raise ConfigError(f"{p.name}: no numeric columns besides the target")

    def features(self) -> FeaturesConfig:
        """Every numeric column a field, label history on; with an entity column, also per-entity
        event counts, age and window means of the complete columns.

        Without an entity, window means of the whole stream were noise on River's SEA and Agrawal
        streams (measured: ARF lost 5-14 points with them, XGBoost 1-2), so there are none.
        """
        complete = [c for c in self.fields if self.df[c].notna().all()]
        per_entity = self.entity is not None
        return FeaturesConfig(
            fields=[FieldSpec(name=c, required=c in complete) for c in self.fields],
            aggregates=[AggregateSpec(field=c, ops=["mean"]) for c in complete] if per_entity else [],
            count=per_entity,
            age=per_entity,
        )

    def frame(self) -> pd.DataFrame:
        """Events and their labels, interleaved in file order."""
        n = len(self.df)
        if self.time is None:
            t = np.arange(n, dtype=np.float64)
        else:
            col = self.df[self.time]
            if pd.api.types.is_numeric_dtype(col.dtype):
                t = col.astype(float).to_numpy()
            else:
                stamps = pd.to_datetime(col, errors="coerce", utc=True)
                t = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=float)
        ids = np.char.add("row-", np.arange(n).astype(str)).astype(object)
        ents = self.df[self.entity].astype(str).to_numpy(dtype=object) if self.entity else np.full(n, "all", object)
        events = pd.DataFrame({KIND: EVENT, EVENT_ID: ids, ENTITY: ents, EVENT_TIME: t})
        for c in self.fields:
            events[c] = self.df[c].astype(float).to_numpy()
        events[LABEL] = np.nan
        labels = pd.DataFrame({KIND: LABEL_KIND, EVENT_ID: ids, ENTITY: ents, EVENT_TIME: t})
        for c in self.fields:
            labels[c] = np.nan
        labels[LABEL] = binary_target(self.df[self.target], self.target)
        labels = labels[np.isfinite(labels[LABEL].to_numpy())]
        both = pd.concat([events, labels])
        # File order: each row's label right after its event.
        both["_row"] = np.r_[np.arange(n), labels.index.to_numpy()]
        both["_lab"] = np.r_[np.zeros(n, int), np.ones(len(labels), int)]
        return both.sort_values(["_row", "_lab"], kind="stable").drop(columns=["_row", "_lab"]).reset_index(drop=True)

    def batches(self, batch_rows: int = 200) -> Iterator[pd.DataFrame]:
        """The stream in source batches of ``batch_rows`` rows."""
        df = self.frame()
        for i in range(0, len(df), batch_rows):
            yield df.iloc[i:i + batch_rows].reset_index(drop=True)


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
    from streamfit.actors.stream import FeatureShard, Watermark

    shard = FeatureShard(features)
    wm = Watermark(features.allowed_lateness_s)
    parts, sizes, arrival = [], [], []
    for batch_id, df in enumerate(batches, start=1):
        mark = wm.observe(df)
        res = shard.process(batch_id, df, mark, wm.clock)
        rows = res.training_rows
        if rows is not None and len(rows):
            parts.append(rows)
            sizes.append(len(rows))
            arrival.append(wm.clock)
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
