"""One contract for every ``Stateful`` (``snapshot()``/``restore()``), run over every implementation.

In the way River's ``check_estimator`` runs one set of checks over every estimator, each
case below names a factory, a deterministic stream of inputs, how to feed one input (its
return value is the observable output) and how to compare two instances. Every case must:

(a) resume exactly: snapshot mid-stream, restore into a fresh instance (and into one that
    already holds other state), feed the rest -> the same outputs and the same final state
    as the run that never stopped; taking a snapshot changes nothing observable;
(b) survive storage: the snapshot is plain data (it goes through JSON in ``Storage``), and
    goes through the store that really keeps it: shard state through the ``CheckpointStore``
    (Arrow files), the watermark through a checkpoint manifest, the serving state through
    the controller's ``StateStore``;
(c) be a ``Stateful`` (``isinstance``).

To add a stateful class: write a ``Case`` and append it to ``CASES`` (a test fails while a
class of the core or a plane has ``snapshot``/``restore`` and no case). ``BROKEN`` holds
deliberately broken implementations that the checks must catch, so the suite can fail.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import inspect
import json
import math
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

from streamfit.actors.monitoring.alarms import RefitAlarm
from streamfit.actors.monitoring.core import Monitor
from streamfit.actors.monitoring.monitor_state import MonitorState
from streamfit.actors.monitoring.stream_monitor import StreamMonitor
from streamfit.actors.rollout.serving_state import ServingState
from streamfit.actors.rollout.state_store import StateStore
from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.dedup import Dedup
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.ingest import IngestLog
from streamfit.actors.stream.partition import Watermark
from streamfit.actors.stream.pending import PendingRows
from streamfit.actors.stream.served_log import ServedLog
from streamfit.actors.stream.shard_checkpoint import load_shard_checkpoint, write_shard_checkpoint
from streamfit.actors.stream.sources import SyntheticSource
from streamfit.actors.stream.windows import US, SeriesStore
from streamfit.actors.training.policy import RefitPolicy
from streamfit.actors.training.row_log import RowLog
from streamfit.actors.training.trainer import TrainerCore, window_rows_kept
from streamfit.config import (AggregateSpec, FeaturesConfig, LabelHistoryConfig, MonitorConfig, StreamConfig,
                              TrainerConfig)
from streamfit.psi import reference_quantiles
from streamfit.registry import Registry
from streamfit.names import Slot
from streamfit.schema import EVENT_TIME, PARTITION
from streamfit.stateful import Stateful
from streamfit.storage import Storage

RoundTrip = Callable[[dict[str, Any], Path], dict[str, Any]]


@dataclass
class Case:
    """One Stateful implementation under the contract."""

    name: str
    make: Callable[[], Stateful]  # a fresh instance
    inputs: Callable[[], list[Any]]  # a deterministic stream (a new list on each call)
    feed: Callable[[Any, Any], Any]  # feed one input; returns what an observer sees
    same: Callable[[Any, Any], None]  # asserts two instances hold the same state
    storage: list[str] = dataclasses.field(default_factory=lambda: ["json"])  # names in ROUND_TRIPS
    cuts: tuple[float, ...] = (0.0, 0.3, 0.7)  # where in the stream to snapshot, as a share of it


# == equality of outputs and states ===============================================================

def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Deep equality of plain data, numpy arrays, frames and dataclasses (NaN equals NaN)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, pd.DataFrame):
        assert isinstance(b, pd.DataFrame), where
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), obj=where)
    elif isinstance(a, np.ndarray):
        b = np.asarray(b)
        assert a.shape == b.shape, (where, a.shape, b.shape)
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            assert np.array_equal(a, b, equal_nan=True), where
        else:
            assert_same(a.tolist(), b.tolist(), where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(map(str, a)), sorted(map(str, b)))
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), (where, a, b)
    else:
        assert a == b, (where, a, b)


def dedup_view(d: Dedup) -> dict[str, list[int]]:
    """A Dedup's generations, independent of how the newer one is chunked."""
    return {"old": sorted(d.old.tolist()), "new": sorted(np.concatenate([np.zeros(0, np.uint64), *d.new]).tolist())}


# == storage round trips ==========================================================================

def encode(value: Any) -> Any:
    """Plain data to JSON values; anything else (a frame, an object) fails: snapshots are plain data."""
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value), f"snapshot keys must be strings: {list(value)}"
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return {"__objects__": [encode(v) for v in value.tolist()], "shape": list(value.shape)}
        return {"__ndarray__": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode(),
                "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    assert value is None or isinstance(value, (bool, int, float, str)), f"not plain data: {type(value)}"
    return value


def decode(value: Any) -> Any:
    """The inverse of ``encode``."""
    if isinstance(value, dict) and "__ndarray__" in value:
        raw = base64.b64decode(value["__ndarray__"])
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if isinstance(value, dict) and "__objects__" in value:
        out = np.empty(len(value["__objects__"]), dtype=object)
        out[:] = [decode(v) for v in value["__objects__"]]
        return out.reshape(value["shape"])
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def via_json(snap: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Through JSON in a ``Storage`` object (one atomic write, one read)."""
    store = Storage(str(tmp / "json"))
    store.ensure_dir(store.root)
    store.put(store.path("snapshot.json"), json.dumps(encode(snap)).encode())
    return decode(json.loads(store.get(store.path("snapshot.json"))))


def via_checkpoint(part: str | None, features: FeaturesConfig) -> RoundTrip:
    """Through the real CheckpointStore: a whole shard snapshot, or one ``part`` of an otherwise empty one."""

    def round_trip(snap: dict[str, Any], tmp: Path) -> dict[str, Any]:
        whole = snap if part is None else {**FeatureShard(features).snapshot(), part: snap}
        store = CheckpointStore(str(tmp / "checkpoints"))
        store.write_shard(1, 0, whole)
        store.write_manifest(1, batch_id=whole["meta"]["last_batch_id"], position=0, num_shards=1)
        back = store.load_shard_state(0, 1, features)
        assert back is not None
        return back if part is None else back[part]

    return round_trip


def via_manifest(snap: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """A watermark through a checkpoint manifest, as the coordinator records and reloads it."""
    store = CheckpointStore(str(tmp / "checkpoints"))
    store.write_shard(1, 0, FeatureShard(FEATURES).snapshot())
    store.write_manifest(1, batch_id=0, position=0, num_shards=1, extra={"max_event_times": snap["max_times"]})
    manifest = store.latest_manifest()
    assert manifest is not None
    return {"max_times": manifest["max_event_times"]}


def via_state_store(snap: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Serving state through the controller's StateStore (JSON in Storage)."""
    StateStore(str(tmp / "registry")).write(snap)
    loaded = StateStore(str(tmp / "registry")).load()
    assert loaded is not None
    return loaded.snapshot()


# == the cases ====================================================================================

FEATURES = FeaturesConfig(
    windows_s=[20.0, 120.0],
    aggregates=[AggregateSpec(field="x0", ops=["mean", "std", "min", "max"], last=True),
                AggregateSpec(field="x1", ops=["sum"])],
    label_history=LabelHistoryConfig(windows_s=[60.0]),
    dedup_capacity=400,  # small: the dedup memory rotates generations within the stream
    label_timeout_s=30.0,  # short: unlabelled events expire within the stream
)
STREAM = StreamConfig(batch_size=50, entities=15, label_delay_events=40, events_per_second=2.0,
                      bad_row_rate=0.05, seed=5)


def shard_inputs(n_batches: int = 24) -> list[tuple[int, pd.DataFrame, float, float]]:
    """(batch id, frame, watermark, clock); some batches repeat older events (retries the dedup must catch)."""
    src = SyntheticSource(STREAM, FEATURES)
    out, frames, wm, clock = [], [], -math.inf, -math.inf
    rng = np.random.default_rng(3)
    for bid in range(1, n_batches + 1):
        df, _ = src.read(bid - 1)
        if bid % 4 == 0:  # re-send a sample of older events: some still remembered, some forgotten
            old = pd.concat(frames[-8:], ignore_index=True)
            old = old[old["kind"] == "event"]
            df = pd.concat([df, old.sample(n=min(20, len(old)), random_state=int(rng.integers(1 << 30)))],
                           ignore_index=True)
        frames.append(df)
        t = df["event_time"].to_numpy(float)
        clock = max(clock, float(np.nanmax(t)))
        wm = max(wm, clock - FEATURES.allowed_lateness_s)
        out.append((bid, df, wm, clock))
    return out


def shard_same(a: FeatureShard, b: FeatureShard) -> None:
    # state_bytes is memory held, not state: a snapshot gives back the memory of rows already labelled
    assert_same({**a.stats(), "state_bytes": 0}, {**b.stats(), "state_bytes": 0}, "stats")
    sa, sb = a.snapshot(), b.snapshot()
    assert_same({k: v for k, v in sa.items() if k != "dedup"}, {k: v for k, v in sb.items() if k != "dedup"}, "snap")
    assert_same(dedup_view(a.dedup), dedup_view(b.dedup), "dedup")
    for entity in ("u0", "u3", "u7", "nobody"):
        assert_same(a.features(entity), b.features(entity), f"features({entity})")
    assert_same(a.recent_events(10), b.recent_events(10), "recent_events")


def scored_shard_inputs() -> list[tuple]:
    """The shard stream with each batch's events looked up (and recorded) just before the batch arrives."""
    out: list[tuple] = []
    for bid, df, wm, clock in shard_inputs():
        events = df[df["kind"] == "event"]
        cols = ["entity", "event_time", *[f.name for f in FEATURES.fields], "event_id"]
        out.append(("lookup", events[cols].iloc[::3].reset_index(drop=True)))
        out.append(("process", bid, df, wm, clock))
    return out


def scored_shard_feed(shard: FeatureShard, x: tuple) -> Any:
    if x[0] != "lookup":
        return shard.process(*x[1:])
    # ``busy`` is how much of the recent wall time the shard spent applying batches: a timing, not state.
    return dataclasses.replace(shard.lookup(x[1], record=True), busy=0.0)


def via_shard_checkpoint(snap: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """A whole shard, served log included, through the checkpoint path the shards use."""
    shard = FeatureShard(FEATURES)
    shard.restore(snap)
    store = CheckpointStore(str(tmp / "checkpoints"))
    write_shard_checkpoint(store, 1, shard)
    store.write_manifest(1, batch_id=shard.last_batch_id, position=0, num_shards=1)
    fresh = FeatureShard(FEATURES)
    assert load_shard_checkpoint(store, fresh, num_shards=1)
    return fresh.snapshot()


def series_inputs() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Batches of (keys, times µs, values, prune horizon µs), times out of order within a batch."""
    rng = np.random.default_rng(8)
    out = []
    for i in range(30):
        keys = rng.integers(0, 12, size=40).astype(np.uint64)
        times = (i * 10 + rng.integers(0, 15, size=40)).astype(np.int64) * US
        out.append((keys, times, rng.normal(size=(40, 2)), (i * 10 - 60) * US))
    return out


def series_feed(st: SeriesStore, x: tuple) -> dict[str, Any]:
    keys, times, values, horizon = x
    st.insert(keys, times, values)
    st.prune(horizon)
    probe = np.arange(14, dtype=np.uint64)  # two keys never seen
    return st.query(probe, np.full(len(probe), int(times.max()) + 1), [30 * US, 90 * US], minmax=True)


def series_same(a: SeriesStore, b: SeriesStore) -> None:
    assert_same(a.snapshot(), b.snapshot(), "series")


def dedup_inputs() -> list[np.ndarray]:
    """Batches of ids drawn from a small range, so old ids come back before and after being forgotten."""
    rng = np.random.default_rng(4)
    return [rng.integers(0, 120, size=int(rng.integers(0, 25))).astype(np.uint64) for _ in range(60)]


def dedup_same(a: Dedup, b: Dedup) -> None:
    assert_same(dedup_view(a), dedup_view(b), "dedup")


N_FEATS = 3


def pending_inputs() -> list[tuple]:
    """Adds, takes (labels, some for unknown ids) and expiries, enough to trigger compaction."""
    rng = np.random.default_rng(6)
    out: list[tuple] = []
    next_id = 0
    for step in range(40):
        n = 60
        ids = np.arange(next_id, next_id + n, dtype=np.uint64)
        out.append(("add", ids, np.array([f"e{i}" for i in ids], object), np.array([f"u{i % 7}" for i in ids], object),
                    (ids.astype(np.float64) * 0.5), rng.normal(size=(n, N_FEATS))))
        next_id += n
        out.append(("take", rng.integers(max(0, next_id - 200), next_id + 5, size=30).astype(np.uint64)))
        out.append(("expire", next_id * 0.5 - 60.0))
    return out


def pending_feed(p: PendingRows, x: tuple) -> Any:
    if x[0] == "add":
        return p.add(*x[1:])
    if x[0] == "take":
        found, pos = p.take(x[1])
        # the rows themselves: their positions may differ after a compaction
        return found, p.feats[pos], p.event_ids[pos], p.entities[pos], p.times[pos]
    return p.expire(x[1])


def pending_same(a: PendingRows, b: PendingRows) -> None:
    assert len(a) == len(b)
    assert_same(a.snapshot(), b.snapshot(), "pending")


def served_inputs() -> list[tuple]:
    """Records (ids repeated within and across calls, past capacity) and takes (some ids unknown)."""
    rng = np.random.default_rng(11)
    out: list[tuple] = []
    for step in range(30):
        ids = rng.integers(0, 120, size=25).astype(np.uint64)
        out.append(("record", ids, rng.normal(size=(25, N_FEATS))))
        out.append(("take", rng.integers(0, 150, size=10).astype(np.uint64)))
    return out


def served_feed(log: ServedLog, x: tuple) -> Any:
    return log.record(x[1], x[2]) if x[0] == "record" else log.take(x[1])


def served_same(a: ServedLog, b: ServedLog) -> None:
    assert len(a) == len(b) and a.evicted == b.evicted
    assert_same(a.snapshot(), b.snapshot(), "served")


def via_served_checkpoint(snap: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """A served log inside a shard, through the shard's checkpoint (``served.arrow`` beside its part)."""
    features = FeaturesConfig(fields=FEATURES.fields[:N_FEATS], windows_s=[60.0], aggregates=[], count=False,
                              age=False, label_history=LabelHistoryConfig(enabled=False))
    shard = FeatureShard(features)
    shard.served.restore(snap)
    store = CheckpointStore(str(tmp / "checkpoints"))
    write_shard_checkpoint(store, 1, shard)
    store.write_manifest(1, batch_id=0, position=0, num_shards=1)
    fresh = FeatureShard(features)
    assert load_shard_checkpoint(store, fresh, num_shards=1)
    return fresh.served.snapshot()


def ingest_inputs() -> list[tuple]:
    """Appends (with retries and labels), reads and commits."""
    rng = np.random.default_rng(2)
    out: list[tuple] = []
    for i in range(40):
        ids = [f"e{j}" for j in rng.integers(0, 150, size=int(rng.integers(1, 12)))]
        kind = "label" if i % 3 == 2 else "event"
        rows = pd.DataFrame({"kind": kind, "event_id": ids, "entity": [f"u{len(s)}" for s in ids],
                             "event_time": float(i), "x0": rng.normal(size=len(ids)),
                             "label": np.nan if kind == "event" else 1.0})
        out.append(("append", rows))
        out.append(("read", int(rng.integers(0, 10 * (i + 1))), int(rng.integers(1, 30))))
        if i % 5 == 4:
            out.append(("commit", 8 * i))
    return out


def ingest_feed(log: IngestLog, x: tuple) -> Any:
    if x[0] == "append":
        return log.append(x[1])
    if x[0] == "read":
        return log.read(x[1], x[2])
    return log.commit(x[1])


def ingest_same(a: IngestLog, b: IngestLog) -> None:
    assert_same(a.stats(), b.stats(), "stats")
    assert_same(a.read(0, 10**9), b.read(0, 10**9), "rows")
    assert_same(dedup_view(a.dedup), dedup_view(b.dedup), "dedup")


def watermark_inputs() -> list[tuple]:
    """Batches from two partitions read unevenly (one ahead), some rows without a time; partitions announced."""
    rng = np.random.default_rng(9)
    out: list[tuple] = [("expect", ["0", "1"])]
    for i in range(30):
        part = "0" if i % 3 else "1"
        t = 1000.0 + i * (4.0 if part == "0" else 2.0) + rng.normal(0, 3, size=8)
        t[rng.random(8) < 0.1] = np.nan
        out.append(("observe", pd.DataFrame({EVENT_TIME: t, PARTITION: part})))
        if i == 20:
            out.append(("expect", ["0", "1", "2"]))  # a partition appears
    return out


def watermark_feed(w: Watermark, x: tuple) -> Any:
    if x[0] == "expect":
        w.expect(x[1])
        return None
    return w.observe(x[1]), w.value, w.clock


SLOT_OPS: list[tuple] = [("stage", 1), ("stage", 2), ("weights", 90), ("weights", 50), ("flip", Slot.GREEN.value),
                         ("stage", 3), ("weights", 70), ("flip", Slot.BLUE.value, False), ("put", Slot.BLUE.value, 4),
                         ("flip", Slot.GREEN.value), ("stage", 5), ("weights", 100)]


def serving_feed(st: ServingState, x: tuple) -> Any:
    if x[0] == "stage":
        st.stage(x[1])
    elif x[0] == "put":
        st.put(x[1], x[2])
    elif x[0] == "weights":  # a share for the live slot; the rest to the idle one
        st.set_weights({st.live_slot(): x[1], st.idle_slot(): 100 - x[1]})
    else:
        st.flip(*x[1:])
    return st.snapshot()


def policy_inputs() -> list[tuple]:
    """Labelled rows with the live version's errors (rising twice: drift, follow-up and performance refits),
    PSI reports, requests, and a decision after each, acted on as the trainer would."""
    rng = np.random.default_rng(12)
    out: list[tuple] = []
    for i in range(240):
        errors = (rng.random(8) < (0.1 if i < 30 else 0.5 if i < 120 else 0.9)).astype(float)
        out.append(("observe", 8, float(i * 2), errors))
        if i % 67 == 20:
            out.append(("psi", {"a": 0.1 + 0.005 * i, "b": 0.05}))
        if i % 91 == 45:
            out.append(("request", f"by hand {i}"))
        out.append(("decide", float(i * 2), 40 + i // 4))
    return out


def policy_feed(p: RefitPolicy, x: tuple) -> Any:
    if x[0] == "observe":
        p.observe(*x[1:])
        return p.live_accuracy()
    if x[0] == "psi":
        return p.observe_psi(x[1])
    if x[0] == "request":
        return p.request(x[1])
    decision = p.decide(x[1], x[2])
    if decision is not None:
        p.refitted(x[1])
    return decision, p.window_rows()


def policy(detector: str | None) -> Callable[[], RefitPolicy]:
    cfg = TrainerConfig(refit_every_rows=400, min_rows_between=150, accuracy_below=0.5, accuracy_window=300,
                        psi_above=0.5, refit_every_s=250.0, drift_detector=detector, drift_window_rows=200,
                        drift_followups=1)
    return lambda: RefitPolicy(cfg)


TRAINER = TrainerConfig(refit_every_rows=150, min_rows_between=100, drift_detector="page_hinkley", window_rows=400,
                        drift_window_rows=120, drift_followups=1, num_boost_round=4, baseline_candidate=False)


def trainer_inputs() -> list[pd.DataFrame]:
    """Chunks of labelled rows; the concept flips two thirds in (drift, then a follow-up)."""
    rng = np.random.default_rng(13)
    out = []
    for i in range(24):
        a, b = rng.normal(size=40), rng.normal(size=40)
        y = ((a > 0) if i < 16 else (a <= 0)).astype(float)
        out.append(pd.DataFrame({"event_time": i * 40.0 + np.arange(40.0), "a": a, "b": b, "label": y}))
    return out


def trainer_same(a: TrainerCore, b: TrainerCore) -> None:
    def untimed(snap: dict[str, Any]) -> dict[str, Any]:  # fit times are measured, not state
        snap["history"] = [{k: v for k, v in r.items() if k != "fit_seconds"} for r in snap["history"]]
        snap["champion"]["meta"].pop("fit_seconds", None)
        return snap

    assert_same(untimed(a.snapshot()), untimed(b.snapshot()), "trainer")


def monitor_inputs() -> list[pd.DataFrame]:
    """Labelled rows in uneven batches (the window drops whole batches); x0 shifts half-way (the alarm rises)."""
    rng = np.random.default_rng(14)
    out = []
    for i, n in enumerate(rng.integers(20, 90, size=25)):
        x0 = rng.normal(size=n) + (2.0 if i >= 12 else 0.0)
        out.append(pd.DataFrame({"event_id": [f"e{i}-{j}" for j in range(n)], "x0": x0, "x1": rng.normal(size=n),
                                 "label": (x0 > 0).astype(float)}))
    return out


class LogisticBooster:
    """Stands in for a booster: the probability is a logistic of x0."""

    def inplace_predict(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-3.0 * x[:, 0]))


def stream_monitor() -> StreamMonitor:
    mon = StreamMonitor(MonitorConfig(window_rows=300, min_rows=60, psi_alarm=0.4), ["x0", "x1"], ["x0"])
    rng = np.random.default_rng(15)
    mon.set_live(2, LogisticBooster(), {"reference": {f: reference_quantiles(rng.normal(size=500)) for f in ("x0", "x1")},
                                        "reference_prediction": reference_quantiles(rng.random(500))})
    return mon


def monitor_feed(mon: StreamMonitor, rows: pd.DataFrame) -> Any:
    mon.observe(rows)
    return mon.drift(), mon.live_accuracy()


def alarm_inputs() -> list[tuple[float, str | None]]:
    return [(100.0 + 7 * i, None if i % 9 < 3 else f"x0 PSI {0.3 + i / 100:.2f} > 0.25") for i in range(40)]


def alarm_feed(alarm: RefitAlarm, x: tuple[float, str | None]) -> Any:
    reason = alarm.due(*x)
    if reason is not None:
        alarm.answered(x[0], x[1], int(x[0]) % 5 or None)
    return reason


def via_row_log(snap: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """A trainer's state through its RowLog: the window as a Parquet segment, the rest in its metadata, the model
    through a registry (the log keeps only its version)."""
    core = TrainerCore(TRAINER, ["a", "b"], Registry(str(tmp / "registry")))
    core.restore(snap)
    if core.champion is not None:  # the version the log names must be in the registry
        core.champion_version = core.registry.register(core.champion, core.champion_meta)
    core.row_log = RowLog(str(tmp / "rows"), window_rows_kept(TRAINER))
    core._persist(core.buffer.assign(event_id=core.ids))  # the whole window as one segment
    back = TrainerCore(TRAINER, ["a", "b"], Registry(str(tmp / "registry")),
                       row_log=RowLog(str(tmp / "rows"), window_rows_kept(TRAINER))).snapshot()
    return {**back, "champion": {**back["champion"], "version": snap["champion"]["version"]}}


def via_monitor_state(snap: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """A stream monitor's state through MonitorState (one Parquet object)."""
    mon = Monitor(MonitorConfig(window_rows=300, min_rows=60, psi_alarm=0.4), None, ["x0", "x1"], ["x0"])
    mon.stream.restore(snap)
    mon.rows_observed = 1
    MonitorState(str(tmp / "monitor")).save(mon, 0.0, force=True)
    fresh = Monitor(MonitorConfig(window_rows=300, min_rows=60, psi_alarm=0.4), None, ["x0", "x1"], ["x0"])
    assert MonitorState(str(tmp / "monitor")).load(fresh)
    return fresh.stream.snapshot()


ROUND_TRIPS: dict[str, RoundTrip] = {
    "json": via_json,
    "checkpoint": via_checkpoint(None, FEATURES),
    "checkpoint:events": via_checkpoint("events", FEATURES),
    "checkpoint:pending": via_checkpoint("pending", FEATURES),
    "checkpoint:dedup": via_checkpoint("dedup", FEATURES),
    "manifest": via_manifest,
    "state_store": via_state_store,
    "checkpoint:served": via_served_checkpoint,
    "checkpoint:shard+served": via_shard_checkpoint,
    "row_log": via_row_log,
    "monitor_state": via_monitor_state,
}

CASES: list[Case] = [
    Case("FeatureShard", lambda: FeatureShard(FEATURES, 0), shard_inputs,
         lambda s, x: s.process(*x), shard_same, storage=["json", "checkpoint"]),
    Case("SeriesStore", lambda: SeriesStore(n_values=2), series_inputs, series_feed, series_same,
         storage=["json", "checkpoint:events"]),
    Case("Dedup", lambda: Dedup(capacity=40), dedup_inputs, lambda d, x: d.check_and_add(x), dedup_same,
         storage=["json", "checkpoint:dedup"]),
    Case("PendingRows", lambda: PendingRows(N_FEATS), pending_inputs, pending_feed, pending_same,
         storage=["json", "checkpoint:pending"]),
    Case("IngestLog", lambda: IngestLog(dedup_capacity=60), ingest_inputs, ingest_feed, ingest_same),
    Case("ServedLog", lambda: ServedLog(N_FEATS, capacity=50), served_inputs, served_feed, served_same,
         storage=["json", "checkpoint:served"]),
    Case("Watermark", lambda: Watermark(lateness_s=5.0), watermark_inputs, watermark_feed,
         lambda a, b: assert_same(a.snapshot(), b.snapshot(), "watermark"), storage=["json", "manifest"]),
    Case("ServingState", ServingState, lambda: list(SLOT_OPS), serving_feed,
         lambda a, b: assert_same(a.snapshot(), b.snapshot(), "serving state"), storage=["json", "state_store"]),
    Case("FeatureShard (scored)", lambda: FeatureShard(FEATURES, 0), scored_shard_inputs, scored_shard_feed,
         shard_same, storage=["json", "checkpoint:shard+served"]),
    Case("RefitPolicy (page_hinkley)", policy("page_hinkley"), policy_inputs, policy_feed,
         lambda a, b: assert_same(a.snapshot(), b.snapshot(), "policy")),
    Case("RefitPolicy (adwin)", policy("adwin"), policy_inputs, policy_feed,
         lambda a, b: assert_same(a.snapshot(), b.snapshot(), "policy")),
    Case("TrainerCore", lambda: TrainerCore(TRAINER, ["a", "b"], None), trainer_inputs, TrainerCore.add_rows,
         trainer_same, storage=["json", "row_log"]),
    Case("StreamMonitor", stream_monitor, monitor_inputs, monitor_feed,
         lambda a, b: assert_same(a.snapshot(), b.snapshot(), "stream monitor"), storage=["json", "monitor_state"]),
    Case("RefitAlarm", lambda: RefitAlarm(MonitorConfig(alarm_cooldown_s=30)), alarm_inputs, alarm_feed,
         lambda a, b: assert_same(a.snapshot(), b.snapshot(), "refit alarm")),
]


from streamfit.dictionaries import CategoryDictionary, LabelDictionary  # noqa: E402


def label_inputs() -> list[list[Any]]:
    return [[f"c{(3 * i + j) % (2 + i // 3)}" for j in range(4)] + [i % 7, None, 2.0] for i in range(24)]


def label_feed(d: LabelDictionary, labels: list[Any]) -> Any:
    new = d.extend(labels)
    return new, *d.encode(labels)


def category_inputs() -> list[pd.DataFrame]:
    values = ["de", "fr", "it", None, "es"]
    return [pd.DataFrame({"country": [values[(i + j) % 5] for j in range(6)],
                          "device": [["ios", "web", "tv"][(i * j) % 3] for j in range(6)]}) for i in range(20)]


def category_feed(d: CategoryDictionary, frame: pd.DataFrame) -> Any:
    out = d.encode(frame)
    return [out[f].cat.codes.to_numpy() for f in d.fields], dict(d.unseen)


CASES += [
    Case("LabelDictionary", LabelDictionary, label_inputs, label_feed,
         lambda a, b: assert_same(a.snapshot(), b.snapshot(), "label dictionary")),
    Case("CategoryDictionary", lambda: CategoryDictionary({"country": ["de", "fr"], "device": ["ios", "web"]}),
         category_inputs, category_feed, lambda a, b: assert_same(a.snapshot(), b.snapshot(), "category dictionary")),
]


from streamfit.actors.stream.task_columns import CategoryTexts, text_codes  # noqa: E402


def texts_inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [np.asarray([f"c{v}" if v < 30 else None for v in rng.integers(0, 34, 8)], dtype=object) for _ in range(40)]


def texts_feed(t: CategoryTexts, text: np.ndarray) -> Any:
    held = text_codes(text[:4])  # the window rows hold only some categories: a full map drops the others
    codes = t.add(text, referenced=lambda: held)
    return codes, t.get(codes), t.dropped


CASES += [
    Case("CategoryTexts", lambda: CategoryTexts(cap=12), texts_inputs, texts_feed,
         lambda a, b: assert_same(a.snapshot(), b.snapshot(), "category texts")),
]


# == the checks ===================================================================================

def check_resume(case: Case, cut: float, round_trip: RoundTrip | None = None, tmp: Path | None = None,
                 into_used: bool = False) -> None:
    """(a): snapshot at ``cut``, restore into a new instance, continue: the same as never stopping."""
    inputs = case.inputs()
    k = int(len(inputs) * cut)
    never, through = case.make(), case.make()  # `never` is never snapshotted; `through` is, and goes on
    out_never = [case.feed(never, x) for x in inputs[:k]]
    out_through = [case.feed(through, x) for x in inputs[:k]]
    snap = through.snapshot()
    if round_trip is not None:
        snap = round_trip(snap, tmp)
    resumed = case.make()
    if into_used:  # restore replaces state, it does not merge into what is there
        for x in inputs[len(inputs) // 2:]:
            case.feed(resumed, x)
    resumed.restore(snap)
    assert_same(out_never, out_through, "outputs before the cut")
    for i, x in enumerate(inputs[k:], start=k):
        want = case.feed(never, x)
        assert_same(case.feed(through, x), want, f"{case.name}: input {i}, after taking a snapshot")
        assert_same(case.feed(resumed, x), want, f"{case.name}: input {i}, after restoring at {k}")
    case.same(resumed, never)
    case.same(through, never)


IDS = [c.name for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_is_stateful(case: Case) -> None:
    assert isinstance(case.make(), Stateful)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_snapshot_restore_continue_equals_uninterrupted(case: Case) -> None:
    for cut in case.cuts:
        check_resume(case, cut)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_restore_replaces_the_state_of_a_used_instance(case: Case) -> None:
    check_resume(case, case.cuts[-1], into_used=True)


@pytest.mark.parametrize("case,storage", [(c, s) for c in CASES for s in c.storage],
                         ids=[f"{c.name}-{s}" for c in CASES for s in c.storage])
def test_snapshot_survives_storage(case: Case, storage: str, tmp_path: Path) -> None:
    check_resume(case, case.cuts[-1], ROUND_TRIPS[storage], tmp_path)


PACKAGES = ["streamfit", "streamfit.actors.stream", "streamfit.actors.training", "streamfit.actors.monitoring",
            "streamfit.actors.rollout"]


def stateful_classes() -> set[type]:
    """Every class of the core and the planes that has ``snapshot`` and ``restore``."""
    found = set()
    for package in PACKAGES:
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            if info.ispkg:
                continue
            module = importlib.import_module(f"{package}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and cls is not Stateful and \
                        callable(getattr(cls, "snapshot", None)) and callable(getattr(cls, "restore", None)):
                    found.add(cls)
    return found


def test_every_stateful_class_has_a_case() -> None:
    # A mixin's snapshot/restore (TrainerState of TrainerCore) is covered by the case of the class using it.
    covered = {base for c in CASES for base in type(c.make()).__mro__}
    assert {f"{c.__module__}.{c.__name__}" for c in stateful_classes() - covered} == set()


def test_the_stream_of_each_case_is_deterministic() -> None:
    for case in CASES:
        assert_same(case.inputs(), case.inputs(), case.name)


def test_snapshots_of_an_empty_shard_read_from_an_old_checkpoint(tmp_path: Path) -> None:
    """A checkpoint written before the dedup kept its generations still loads (all ids count as older)."""
    shard = FeatureShard(FEATURES)
    for x in shard_inputs(6):
        shard.process(*x)
    snap = shard.snapshot()
    snap["dedup"] = {"ids": snap["dedup"]["ids"]}  # the old layout: no generation count
    back = via_checkpoint(None, FEATURES)(snap, tmp_path)
    assert back["dedup"]["n_old"] == len(back["dedup"]["ids"]) > 0
    fresh = FeatureShard(FEATURES)
    fresh.restore(back)
    assert fresh.dedup.size == shard.dedup.size and not fresh.dedup.new


# == the suite can fail ===========================================================================

class DedupForgettingGenerations(Dedup):
    """Restores every id as older (what restore did before it kept the generations)."""

    def restore(self, snap: dict[str, Any]) -> None:
        super().restore({"ids": snap["ids"]})


class PendingDroppingEntities(PendingRows):
    def restore(self, snap: dict[str, Any]) -> None:
        super().restore({**snap, "entities": np.full(len(snap["ids"]), "?", object)})


class SeriesMergingOnRestore(SeriesStore):
    def restore(self, snap: dict[str, Any]) -> None:
        self.insert(snap["keys"], snap["times"], snap["values"])


class ShardForgettingLabelHistory(FeatureShard):
    def restore(self, snap: dict[str, Any]) -> None:
        super().restore({**snap, "labels": FeatureShard(self.cfg).snapshot()["labels"]})


class IngestLosingCommitted(IngestLog):
    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "committed": 0}


class PolicyForgettingErrors(RefitPolicy):
    """Restores the counters but not the live version's recent errors (its accuracy starts over)."""

    def restore(self, snap: dict[str, Any]) -> None:
        super().restore({**snap, "recent_errors": np.zeros(0)})


class TrainerForgettingWindow(TrainerCore):
    def restore(self, snap: dict[str, Any]) -> None:
        super().restore({**snap, "window": {}})


BROKEN: list[Case] = [
    dataclasses.replace(CASES[2], make=lambda: DedupForgettingGenerations(40)),
    dataclasses.replace(CASES[3], make=lambda: PendingDroppingEntities(N_FEATS)),
    dataclasses.replace(CASES[1], make=lambda: SeriesMergingOnRestore(2)),
    dataclasses.replace(CASES[0], make=lambda: ShardForgettingLabelHistory(FEATURES, 0)),
    dataclasses.replace(CASES[4], make=lambda: IngestLosingCommitted(dedup_capacity=60)),
    dataclasses.replace(CASES[IDS.index("RefitPolicy (adwin)")], make=lambda: PolicyForgettingErrors(policy("adwin")().cfg)),
    dataclasses.replace(CASES[IDS.index("TrainerCore")], make=lambda: TrainerForgettingWindow(TRAINER, ["a", "b"], None)),
]


def run_contract(case: Case) -> None:
    """Every resume check of the suite on one case (as the tests above run them)."""
    assert isinstance(case.make(), Stateful)
    for cut in case.cuts:
        check_resume(case, cut)
    check_resume(case, case.cuts[-1], into_used=True)


@pytest.mark.parametrize("case", BROKEN, ids=[type(c.make()).__name__ for c in BROKEN])
def test_a_broken_implementation_is_caught(case: Case) -> None:
    with pytest.raises(AssertionError):
        run_contract(case)


def test_a_snapshot_that_is_not_plain_data_is_caught(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="not plain data"):
        via_json({"rows": pd.DataFrame({"a": [1]})}, tmp_path)
