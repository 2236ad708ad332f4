"""One shard of the feature state: validate, clean, dedup, window aggregates, label history, label join.

``FeatureShard`` is plain Python and numpy (unit-tested without Ray); every step is
vectorised over the batch, with no Python loop per row: the entity hashes come with each part
from the partitioner (``_entity_hash``: hashed once, where the batch enters), event ids are
hashed once here, validation reads plain arrays (``check_columns``), and the label join is a
sorted search (``PendingRows.contains``/``take``). ``FeatureShardActor`` is the thin Ray shell: on (re)start it
loads its last checkpoint, so a restarted shard resumes from a consistent state.

Online lookups (``lookup``) compute a raw event's model row with ``_features_at``, the
function that makes the training rows, over the immutable ``ShardView`` the shard publishes
after each whole batch (see ``lookup``): the actor serves them in their own concurrency
group, beside a running ``process()``, without a lock and without seeing half a batch. The
served vectors of scored events wait in a ``ServedLog`` for their labels (``served_log``).

Example:
    >>> import pandas as pd
    >>> from streamfit.config import FeaturesConfig, AggregateSpec
    >>> cfg = FeaturesConfig(windows_s=[60], aggregates=[AggregateSpec(field="x0", ops=["mean"])])
    >>> shard = FeatureShard(cfg)
    >>> ev = pd.DataFrame({"kind": ["event", "event"], "event_id": ["a", "b"], "entity": ["u1", "u1"],
    ...                    "event_time": [0.0, 10.0], "x0": [1.0, 3.0], "x1": [0.0, 0.0], "x2": [0.0, 0.0]})
    >>> shard.process(1, ev, watermark=0.0).accepted
    2
    >>> lab = pd.DataFrame({"kind": ["label"], "event_id": ["b"], "entity": ["u1"], "event_time": [20.0],
    ...                     "label": [1.0]})
    >>> rows = shard.process(2, lab, watermark=10.0).training_rows
    >>> rows[["event_id", "x0", "count_1m", "x0_mean_1m", "label"]].values.tolist()  # as of event b: sees a only
    [['b', 3.0, 1.0, 1.0, 1.0]]
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import ray

from streamfit.config import FeaturesConfig, ModelConfig
from streamfit.schema import (ENTITY, ENTITY_HASH, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL, EventArrays, check_columns,
                              hash_keys)
from streamfit.actors.stream.dedup import Dedup, isin_sorted
from streamfit.actors.stream.lookup import NO_CLOCK, BusyMeter, LookupResult, ShardView, prepare
from streamfit.actors.stream.pending import PendingRows
from streamfit.actors.stream.served_log import ServedLog
from streamfit.actors.stream.task_columns import CategoryTexts, TaskColumns
from streamfit.actors.stream.windows import US, SeriesStore, to_us

RESULT_CACHE = 8  # results kept per shard so a retried call gets the same answer
LOOKUPS = "lookups"  # the actor's concurrency group for lookups


@dataclass
class ShardResult:
    """What one batch did: counts, reasons, completed training rows; or a request to replay."""

    batch_id: int
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    training_rows: pd.DataFrame | None = None
    events: int = 0
    nulls: dict[str, int] = field(default_factory=dict)  # missing values per field among event rows
    event_rows: int = 0
    replay_from: int | None = None  # set when the shard restarted and needs batches after this id again
    skew: dict[str, Any] | None = None  # served vs point-in-time vectors of this batch's labelled rows (served_log)


class FeatureShard:
    """Feature state for the entities one shard owns (a ``Stateful``: ``snapshot``/``restore``)."""

    def __init__(self, cfg: FeaturesConfig, shard_id: int = 0, training_features: str = "served",
                 model: ModelConfig | None = None) -> None:
        self.cfg, self.model = cfg, model  # model: the task (labels, label history); None = binary
        self.shard_id = shard_id
        self.use_served = training_features == "served"
        self.fields = [f.name for f in cfg.fields]
        self.agg_fields = cfg.aggregated_fields()
        self.agg_idx = [self.fields.index(f) for f in self.agg_fields]
        self.task = TaskColumns(cfg, model)
        self.feature_names = self.task.feature_names
        self.windows_us = [int(round(w * US)) for w in cfg.windows_s]
        self.label_windows_us = [int(round(w * US)) for w in cfg.label_history.windows_s]
        self.events = SeriesStore(len(self.agg_fields))
        self.labels = SeriesStore(self.task.label_width)
        self.texts = CategoryTexts()  # codes of categorical fields read back as <field>_last (task_columns)
        self.pending = PendingRows(len(self.feature_names), self.task.n_cats)
        self.dedup = Dedup(cfg.dedup_capacity)
        self.served = ServedLog(len(self.feature_names), cfg.served_log_capacity, self.task.n_cats)
        self.last_batch_id = 0
        self.latest_us = self.clock_us = NO_CLOCK
        self.counters: Counter[str] = Counter()
        self.results: OrderedDict[int, ShardResult] = OrderedDict()
        self.minmax_cols, self.std_cols, self.distinct_cols = ([j for j, f in enumerate(self.agg_fields) if any(
            op in ops for a in cfg.aggregates if a.field == f for op in a.ops)]  # only these are reduced
            for ops in (("min", "max"), ("std",), ("distinct",)))
        self.busy = BusyMeter()  # how much of the time batches are being applied: told to lookup callers
        self._publish()

    def _publish(self) -> None:
        # One reference swap: a lookup sees the state after some whole batch, never one half applied.
        self.view = ShardView.of(self.events, self.labels, self.clock_us, self.last_batch_id, self.texts)

    # -- the batch path ----------------------------------------------------------------
    def process(self, batch_id: int, df: pd.DataFrame, watermark: float, clock: float | None = None) -> ShardResult:
        """Apply batch ``batch_id`` exactly once; batches must come in order without gaps.

        ``watermark`` decides which events are late; ``clock`` is the stream's latest event time
        through this batch (the same on every shard), the "now" of ``features()``.
        """
        if batch_id <= self.last_batch_id:
            cached = self.results.get(batch_id)
            if cached is not None:
                return cached
            return ShardResult(batch_id=batch_id, training_rows=self.empty_rows())  # applied before a snapshot
        if batch_id != self.last_batch_id + 1:
            return ShardResult(batch_id=batch_id, replay_from=self.last_batch_id)
        self.busy.begin()
        try:
            result = self._apply(batch_id, df, watermark, clock)
        finally:
            self.busy.end()
        self.last_batch_id = batch_id
        self._publish()
        self.results[batch_id] = result
        while len(self.results) > RESULT_CACHE:
            self.results.popitem(last=False)
        return result

    def _apply(self, batch_id: int, df: pd.DataFrame, watermark: float, clock: float | None) -> ShardResult:
        clean, reason = check_columns(df, len(df), self.cfg, self.model)  # plain arrays: no frame to build
        kinds = clean[KIND]
        is_event = np.asarray(kinds == EVENT, dtype=bool)
        times = clean[EVENT_TIME]
        late = is_event & (reason == "") & (times < watermark)
        if self.cfg.late_policy == "drop":
            reason[late] = "late"
        else:
            self.counters["late_applied"] += int(late.sum())
        event_ids = np.asarray(clean[EVENT_ID], dtype=object)
        ids = hash_keys(event_ids)
        ev = is_event & (reason == "")
        dup = np.zeros(len(reason), bool)
        dup[ev] = self.dedup.check_and_add(ids[ev])
        reason[dup] = "duplicate"
        ev &= ~dup
        lab = (~is_event) & (reason == "")
        # A label counts (in history and as a training row) only if it names an event this shard
        # holds unlabelled, from an earlier batch or this one; others are rejected, never applied.
        lab_ids = ids[lab]
        known = self.pending.contains(lab_ids) | isin_sorted(np.sort(ids[ev]), lab_ids)
        first_claim = np.zeros(len(known), bool)  # the same label twice in one batch counts once
        _, firsts = np.unique(lab_ids, return_index=True)
        first_claim[firsts] = True
        unmatched = np.flatnonzero(lab)[~(known & first_claim)]
        reason[unmatched] = "label_unmatched"
        lab[unmatched] = False
        entities = np.asarray(clean[ENTITY], dtype=object)
        # The partitioner hashed the entities already (to pick this shard): its hashes come along.
        carried = df[ENTITY_HASH].to_numpy() if ENTITY_HASH in df else None
        keys = carried if carried is not None and carried.dtype == np.uint64 else hash_keys(entities)
        t_us = to_us(np.where(np.isfinite(times), times, 0.0))
        if self.cfg.label_history.enabled and lab.any():
            self.labels.insert(keys[lab], t_us[lab], self.task.label_values(clean[LABEL][lab]))
        n_events = int(ev.sum())
        if n_events:
            x = self.task.raw(clean, ev)  # categorical fields: NaN here, their text beside (task_columns)
            values = self.task.window_values(x[:, self.agg_idx], clean, ev, self.texts,
                                             lambda: self.events.values[:, self.task.read_back].ravel())
            if self.texts.dropped:  # categories the bounded map could not keep: their <field>_last is missing
                self.counters["category_text_over_cap"] += self.texts.dropped
            self.events.insert(keys[ev], t_us[ev], values)
            feats = self._features_at(keys[ev], t_us[ev], x)
            cats = self.task.text(clean, ev, feats, self.texts)
            self.pending.add(ids[ev], event_ids[ev], entities[ev], times[ev], feats, cats)
            self.latest_us = max(self.latest_us, int(t_us[ev].max()))
        rows, skew = None, None
        if lab.any():
            found, pos = self.pending.take(ids[lab])
            self.counters["labels"] += len(pos)
            if len(pos):
                feats, cats, skew = self.served.join(self.pending.ids[pos], self.pending.feats[pos],
                                                     self.pending.cats[pos], self.feature_names, self.task.cat_pos,
                                                     self.use_served)
                rows = self.task.frame({EVENT_ID: self.pending.event_ids[pos], ENTITY: self.pending.entities[pos],
                                        EVENT_TIME: self.pending.times[pos]}, feats, cats,
                                       {LABEL: clean[LABEL][np.flatnonzero(lab)[found]]})
        rows = self.empty_rows() if rows is None else rows
        if clock is not None and np.isfinite(clock):
            self.clock_us = max(self.clock_us, int(to_us(clock)))
        self.clock_us = max(self.clock_us, self.latest_us)
        wm_us = int(to_us(watermark)) if np.isfinite(watermark) else np.iinfo(np.int64).min // 2
        # An entity idle longer than every window and the label timeout has nothing a feature can read:
        # its rows (kept until now for `last` and age) are dropped, so state is bounded by active entities.
        idle_us = max(max(self.windows_us), max(self.label_windows_us, default=0), int(to_us(self.cfg.label_timeout_s)))
        self.events.prune(wm_us - max(self.windows_us), wm_us - idle_us)
        if self.label_windows_us:
            self.labels.prune(wm_us - max(self.label_windows_us), wm_us - idle_us)
        if np.isfinite(watermark):
            self.counters["expired_unlabelled"] += self.pending.expire(watermark - self.cfg.label_timeout_s)
        bad = reason != ""
        reasons = {str(k): int(v) for k, v in pd.Series(reason[bad]).value_counts().items()} if bad.any() else {}
        nulls = self.task.nulls(clean, is_event)
        result = ShardResult(batch_id=batch_id, accepted=int((~bad).sum()), rejected=int(bad.sum()),
                             reasons=reasons, training_rows=rows, events=n_events, nulls=nulls,
                             event_rows=int(is_event.sum()), skew=skew)
        self.counters["accepted"] += result.accepted
        self.counters["rejected"] += result.rejected
        self.counters["events"] += n_events
        self.counters["training_rows"] += len(rows)
        for k, v in reasons.items():
            self.counters[f"rejected:{k}"] += v
        return result

    def _features_at(self, keys: np.ndarray, t_us: np.ndarray, x: np.ndarray | None,
                     view: ShardView | None = None) -> np.ndarray:
        """Feature matrix (in feature_names order) as of each (key, time); raw fields from ``x``.

        Reads the live state, or ``view`` (a lookup): the one implementation of every feature.
        """
        n = len(keys)
        state = view if view is not None else self
        cols: list[np.ndarray] = []
        if x is not None:
            cols += [x[:, j] for j in range(len(self.fields))]
        q = state.events.query(keys, t_us, self.windows_us, minmax=self.minmax_cols, std=self.std_cols,
                               distinct=self.distinct_cols)
        for wi in range(len(self.windows_us)):
            if self.cfg.count:
                cols.append(q["count"][wi].astype(np.float64))
            for a in self.cfg.aggregates:
                j = self.agg_fields.index(a.field)
                for op in a.ops:
                    cols.append(q[op][wi][:, j])
        for a in self.cfg.aggregates:
            if a.last:
                cols.append(q["last"][:, self.agg_fields.index(a.field)])
        if self.cfg.age:
            age = q["age_us"].astype(np.float64) / US
            cols.append(np.where(q["age_us"] < 0, np.nan, age))
        if self.cfg.label_history.enabled:
            lq = state.labels.query(keys, t_us, self.label_windows_us, std=self.task.label_std)
            cols += self.task.label_columns(lq, len(self.label_windows_us))
        return np.column_stack(cols) if cols else np.zeros((n, 0))

    def empty_rows(self) -> pd.DataFrame:
        """A training-row frame with no rows (``TaskColumns.empty_rows``)."""
        return self.task.empty_rows()

    # -- reads ---------------------------------------------------------------------------
    def lookup(self, events: pd.DataFrame | EventArrays, record: bool = False) -> LookupResult:
        """Each event's model row as this shard would compute it if the event arrived now (state untouched).

        ``events``: ``entity``, ``event_time`` (NaN = the stream clock), the fields, ``event_id``
        ('' = none), as a frame or as ``EventArrays`` (what a Router sends: no frame to build or ship).
        Invalid rows, and times beyond ``max_future_s``/``max_past_s`` of the clock, get a reason and
        NaN features. ``record`` keeps the served vectors of rows with an id.
        """
        view = self.view  # read once: a batch applied meanwhile publishes a new view, this one stays whole
        clean, reason, times, ids = prepare(events, self.cfg, view.clock_us, self.model)
        ok = reason == ""
        feats = np.full((len(reason), len(self.feature_names)), np.nan)
        cats = np.empty((len(reason), self.task.n_cats), object)
        if ok.any():
            x = self.task.raw(clean, ok)
            at = self._features_at(hash_keys(clean[ENTITY][ok]), to_us(times[ok]), x, view)
            cats[ok] = self.task.text(clean, ok, at, view.texts)
            feats[ok] = at
        if record:
            keep = ok & (ids != "")
            if keep.any():
                self.served.record(hash_keys(ids[keep]), feats[keep], cats[keep])
        return LookupResult(features=feats, feature_names=list(self.feature_names),
                            times=np.where(ok, times, np.nan), as_of=view.as_of, reasons=reason.tolist(),
                            busy=self.busy.share(), text=self.task.text_columns(cats))

    def features(self, entity: str) -> dict[str, Any] | None:
        """An entity's current aggregates (as of just after its latest event), or None if unknown."""
        key = hash_keys(np.array([entity], dtype=object))
        if not self.events.contains(key)[0]:
            return None
        now = np.array([self.clock_us + 1], np.int64)  # just after the stream's latest event
        feats = self._features_at(key, now, None)
        text = self.task.last_text(feats, self.texts, offset=len(self.fields))  # a categorical <field>_last
        names = self.feature_names[len(self.fields):]
        out: dict[str, Any] = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, feats[0])}
        out.update({self.feature_names[p]: t[0] for p, t in zip(self.task.last_pos, text)})
        out["as_of"] = float(now[0]) / US
        return out

    def recent_events(self, n: int) -> pd.DataFrame:
        """Feature vectors of the newest ``n`` events still waiting for their label (event_id, entity, features)."""
        alive = np.flatnonzero(self.pending.alive)[-n:]
        return self.task.frame({EVENT_ID: self.pending.event_ids[alive], ENTITY: self.pending.entities[alive]},
                               self.pending.feats[alive], self.pending.cats[alive])

    def stats(self) -> dict[str, Any]:
        """Counters (accepted, rejected by reason, events, training rows …) and state size."""
        out: dict[str, Any] = {k: 0 for k in ("accepted", "rejected", "events", "labels", "training_rows")}
        out.update(self.counters)
        out["entities"] = self.events.n_keys()
        out["pending_labels"] = len(self.pending)
        out["served_log"], out["served_evicted"] = len(self.served), self.served.evicted
        out["state_bytes"] = self.state_bytes()
        out["last_batch_id"] = self.last_batch_id
        return out

    def state_bytes(self) -> int:
        """Approximate bytes of state held (window rows, label rows, pending rows, dedup ids)."""
        pend = self.pending.feats.nbytes + self.pending.times.nbytes + self.pending.ids.nbytes
        pend += 120 * len(self.pending)  # dict entry + two small strings per pending event
        return self.events.nbytes + self.labels.nbytes + pend + 8 * self.dedup.size

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume exactly here: plain arrays plus a small dict of scalars."""
        meta = {"last_batch_id": self.last_batch_id, "latest_us": int(self.latest_us), "clock_us": int(self.clock_us),
                "counters": dict(self.counters), "shard_id": self.shard_id}
        if self.task.fingerprint() is not None:  # binary without categorical fields: the meta it always had
            meta["task"] = self.task.fingerprint()
        return {
            "meta": meta,
            "events": self.events.snapshot(),
            "labels": self.labels.snapshot(),
            "pending": self.pending.snapshot(),
            "dedup": self.dedup.snapshot(),
            "served": self.served.snapshot(),
            **({"texts": self.texts.snapshot()} if self.task.read_back else {}),  # none: the parts it always had
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace this shard's state with ``snapshot()`` output, in place (one of another task is refused)."""
        meta = snap["meta"]
        self.task.check(meta)
        self.last_batch_id = int(meta["last_batch_id"])
        self.latest_us = int(meta["latest_us"])
        self.clock_us = int(meta.get("clock_us", self.latest_us))
        self.counters = Counter(meta["counters"])
        self.events.restore(snap["events"])
        self.labels.restore(snap["labels"])
        self.pending.restore(snap["pending"])
        self.dedup.restore(snap["dedup"])
        self.texts.restore(snap.get("texts") or {})  # a checkpoint from before categorical last values has none
        # Snapshots from before served logs existed have none: start with an empty one.
        self.served.restore(snap.get("served") or ServedLog(len(self.feature_names), 1, self.task.n_cats).snapshot())
        self.results.clear()
        self._publish()


@ray.remote(max_restarts=-1, max_task_retries=-1, concurrency_groups={LOOKUPS: 2})
class FeatureShardActor:
    """Ray actor holding one FeatureShard; loads the last complete checkpoint when (re)started.

    Lookups run in their own concurrency group (threads beside the one that applies batches):
    they read the view published after the last whole batch, so they never wait for ``process``.
    """

    def __init__(self, cfg: FeaturesConfig, shard_id: int, checkpoint_uri: str | None = None,
                 num_shards: int = 1, training_features: str = "served", model: ModelConfig | None = None) -> None:
        from streamfit.actors.stream.checkpoint import CheckpointStore
        from streamfit.actors.stream.shard_checkpoint import load_shard_checkpoint

        self.shard = FeatureShard(cfg, shard_id, training_features, model)
        self.store = CheckpointStore(checkpoint_uri) if checkpoint_uri else None
        self.restored_from: int | None = None
        if self.store is not None and load_shard_checkpoint(self.store, self.shard, num_shards):
            self.restored_from = self.shard.last_batch_id

    def process(self, batch_id: int, df: pd.DataFrame, watermark: float, clock: float | None = None) -> ShardResult:
        return self.shard.process(batch_id, df, watermark, clock)

    # Hundreds of calls a second: no task events (each costs CPU here, in the caller and the GCS, beside ingest).
    @ray.method(concurrency_group=LOOKUPS, enable_task_events=False)
    def lookup(self, events: pd.DataFrame | EventArrays, record: bool = False) -> LookupResult:
        return self.shard.lookup(events, record)

    def checkpoint(self, checkpoint_id: int, batch_id: int) -> str | None:
        """Write the snapshot as checkpoint ``checkpoint_id`` if exactly ``batch_id`` is applied (else None)."""
        from streamfit.actors.stream.shard_checkpoint import write_shard_checkpoint
        if self.shard.last_batch_id != batch_id:
            return None
        return write_shard_checkpoint(self.store, checkpoint_id, self.shard)

    def rewind(self, batch_id: int) -> bool:
        """Back to the latest checkpoint (at ``batch_id``) if later batches were applied: a restarted coordinator."""
        from streamfit.actors.stream.shard_checkpoint import rewind_shard
        return rewind_shard(self.store, self.shard, batch_id)

    def features(self, entity: str) -> dict[str, Any] | None:
        return self.shard.features(entity)

    def snapshot(self) -> dict[str, Any]:
        return self.shard.snapshot()

    def stats(self) -> dict[str, Any]:
        return {**self.shard.stats(), "restored_from": self.restored_from}
