"""One shard of the feature state: validation, dedup, window aggregates and the label join.

``FeatureShard`` is plain Python (unit-tested without Ray); ``FeatureShardActor`` is
the thin Ray shell around it.

Example:
    >>> import pandas as pd
    >>> from streamfit.config import FeaturesConfig
    >>> shard = FeatureShard(FeaturesConfig(window_s=60))
    >>> ev = pd.DataFrame({"kind": ["event", "event"], "event_id": ["a", "b"], "entity": ["u1", "u1"],
    ...                    "event_time": [0.0, 10.0], "x0": [1.0, 3.0], "x1": [0.0, 0.0], "x2": [0.0, 0.0],
    ...                    "label": [float("nan")] * 2})
    >>> shard.process(1, ev, watermark=0.0).accepted
    2
    >>> lab = pd.DataFrame({"kind": ["label"], "event_id": ["a"], "entity": ["u1"], "event_time": [20.0],
    ...                     "x0": [None], "x1": [None], "x2": [None], "label": [1.0]})
    >>> rows = shard.process(2, lab, watermark=10.0).training_rows
    >>> rows[["event_id", "count_1m", "x0_mean_1m", "label"]].values.tolist()  # features as of event a
    [['a', 1.0, 1.0, 1.0]]
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import ray

from streamfit.config import FeaturesConfig
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL, LABEL_KIND
from streamfit.actors.windows import EntityWindows

DEDUP_CAPACITY = 200_000
PENDING_CAPACITY = 500_000


@dataclass
class ShardResult:
    """What one batch did: accepted/rejected counts and the training rows it completed."""

    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    training_rows: pd.DataFrame | None = None


def validate(df: pd.DataFrame, cfg: FeaturesConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Coerce a batch to the schema; returns (clean frame, reason per row or '' when valid)."""
    n = len(df)
    reason = np.full(n, "", dtype=object)
    out = pd.DataFrame(index=df.index)

    def mark(mask: pd.Series | np.ndarray, why: str) -> None:
        m = np.asarray(mask, dtype=bool) & (reason == "")
        reason[m] = why

    for col in (KIND, EVENT_ID, ENTITY):
        if col not in df:
            mark(np.ones(n, bool), f"missing:{col}")
            out[col] = None
        else:
            out[col] = df[col]
            mark(df[col].isna(), f"missing:{col}")
    kind = out[KIND].astype(str)
    mark(~kind.isin([EVENT, LABEL_KIND]), "bad_kind")
    t = pd.to_numeric(df[EVENT_TIME], errors="coerce") if EVENT_TIME in df else pd.Series(np.nan, index=df.index)
    mark(t.isna() | ~np.isfinite(t.astype(float)), "missing:event_time")
    out[EVENT_TIME] = t.astype(float)
    is_event = (kind == EVENT).values
    for spec in cfg.fields:
        raw = df[spec.name] if spec.name in df else pd.Series(np.nan, index=df.index)
        num = pd.to_numeric(raw, errors="coerce").astype(float)
        missing = raw.isna().values
        mark(is_event & ~missing & num.isna().values, f"non_numeric:{spec.name}")
        if spec.required:
            mark(is_event & missing, f"missing:{spec.name}")
        mark(is_event & np.isinf(num.values), f"non_finite:{spec.name}")
        lo = -np.inf if spec.min is None else spec.min
        hi = np.inf if spec.max is None else spec.max
        mark(is_event & ((num.values < lo) | (num.values > hi)), f"out_of_range:{spec.name}")
        out[spec.name] = num
    lab = pd.to_numeric(df[LABEL], errors="coerce") if LABEL in df else pd.Series(np.nan, index=df.index)
    mark(~is_event & ~lab.isin([0.0, 1.0]).values, "bad_label")
    out[LABEL] = lab.astype(float)
    return out, reason


class FeatureShard:
    """Feature state for the entities one shard owns."""

    def __init__(self, cfg: FeaturesConfig, shard_id: int = 0) -> None:
        self.cfg = cfg
        self.shard_id = shard_id
        self.fields = [f.name for f in cfg.fields]
        self.mean_idx = [self.fields.index(m) for m in cfg.mean_of]
        self.feature_names = cfg.feature_names()
        self.windows = EntityWindows(cfg.window_s, len(cfg.mean_of))
        self.pending: OrderedDict[str, tuple[str, float, tuple[float, ...]]] = OrderedDict()
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.last_batch_id = -1
        self.counters: Counter[str] = Counter()
        self.latest_time = float("-inf")

    def process(self, batch_id: int, df: pd.DataFrame, watermark: float) -> ShardResult:
        """Apply one batch (idempotent by increasing batch id) and return completed training rows."""
        if batch_id <= self.last_batch_id:
            self.counters["duplicate_batches"] += 1
            return ShardResult(training_rows=self._empty_rows())
        clean, reason = validate(df, self.cfg)
        result = ShardResult()
        late = (reason == "") & (clean[EVENT_TIME].values < watermark) & (clean[KIND].values == EVENT)
        reason[late] = "late"
        rows: list[list] = []
        ids = clean[EVENT_ID].astype(str).values
        kinds = clean[KIND].values
        ents = clean[ENTITY].astype(str).values
        times = clean[EVENT_TIME].values
        xs = clean[self.fields].to_numpy(dtype=float)
        labels = clean[LABEL].values
        reasons = reason
        for i in range(len(clean)):
            if reasons[i]:
                continue
            if kinds[i] == EVENT:
                if ids[i] in self.seen:
                    reasons[i] = "duplicate"
                    continue
                self._remember(ids[i])
                count, means = self.windows.update(ents[i], times[i], [xs[i, j] for j in self.mean_idx])
                vec = tuple(xs[i]) + (float(count),) + tuple(means)
                self.pending[ids[i]] = (ents[i], times[i], vec)
                if len(self.pending) > PENDING_CAPACITY:
                    self.pending.popitem(last=False)
                    self.counters["expired_unlabelled"] += 1
                self.latest_time = max(self.latest_time, times[i])
            else:
                hit = self.pending.pop(ids[i], None)
                if hit is None:
                    reasons[i] = "label_unmatched"
                    continue
                ent, t, vec = hit
                rows.append([ids[i], ent, t, *vec, labels[i]])
        self.windows.expire(watermark)
        self.last_batch_id = batch_id
        bad = pd.Series(reasons[reasons != ""]).value_counts()
        result.reasons = {str(k): int(v) for k, v in bad.items()}
        result.rejected = int((reasons != "").sum())
        result.accepted = len(clean) - result.rejected
        self.counters["accepted"] += result.accepted
        self.counters["rejected"] += result.rejected
        self.counters["events"] += int(((kinds == EVENT) & (reasons == "")).sum())
        self.counters["training_rows"] += len(rows)
        for k, v in result.reasons.items():
            self.counters[f"rejected:{k}"] += v
        result.training_rows = pd.DataFrame(rows, columns=self._row_columns()) if rows else self._empty_rows()
        return result

    def _remember(self, event_id: str) -> None:
        self.seen[event_id] = None
        if len(self.seen) > DEDUP_CAPACITY:
            self.seen.popitem(last=False)

    def _row_columns(self) -> list[str]:
        return [EVENT_ID, ENTITY, EVENT_TIME, *self.feature_names, LABEL]

    def _empty_rows(self) -> pd.DataFrame:
        return pd.DataFrame(columns=self._row_columns())

    def features(self, entity: str) -> dict[str, float] | None:
        """Current window aggregates of one entity as of the latest event time seen, or None."""
        agg = self.windows.current(entity, self.latest_time)
        if agg is None:
            return None
        count, means = agg
        names = self.feature_names[len(self.fields):]
        return dict(zip(names, [float(count), *means]))

    def stats(self) -> dict[str, int]:
        """Counters of this shard (accepted, rejected by reason, events, training rows …)."""
        out = dict(self.counters)
        out["entities"] = len(self.windows)
        out["pending_labels"] = len(self.pending)
        return out


@ray.remote(max_restarts=-1, max_task_retries=-1)
class FeatureShardActor:
    """Ray actor holding one FeatureShard."""

    def __init__(self, cfg: FeaturesConfig, shard_id: int) -> None:
        self.shard = FeatureShard(cfg, shard_id)

    def process(self, batch_id: int, df: pd.DataFrame, watermark: float) -> ShardResult:
        return self.shard.process(batch_id, df, watermark)

    def features(self, entity: str) -> dict[str, float] | None:
        return self.shard.features(entity)

    def stats(self) -> dict[str, int]:
        return self.shard.stats()
