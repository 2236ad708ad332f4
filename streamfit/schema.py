"""Event vocabulary shared by every plane: column names, batch validation (``validate``) and the stable partition hash.

An event batch is a pandas DataFrame with one row per event or label:

- ``kind``: ``"event"`` (features) or ``"label"`` (labels the event named by ``event_id``)
- ``event_id``: unique id of the event (a label names the event it labels)
- ``entity``: the partition key
- ``event_time``: seconds since the epoch (float)
- one column per numeric field, and ``label`` (0/1, set on label rows)

Example:
    >>> import numpy as np
    >>> shard_of(np.array(["a", "b", "a"], dtype=object), 4).tolist() == shard_of(np.array(["a", "b", "a"], dtype=object), 4).tolist()
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig

KIND, EVENT_ID, ENTITY, EVENT_TIME, LABEL = "kind", "event_id", "entity", "event_time", "label"
EVENT, LABEL_KIND = "event", "label"
BASE_COLUMNS = [KIND, EVENT_ID, ENTITY, EVENT_TIME]
PARTITION = "_partition"  # optional: the source partition a row came from (per-partition watermarks)


def hash_keys(values: np.ndarray | pd.Series) -> np.ndarray:
    """Stable 64-bit hash of each key's string form (the same in every process and run)."""
    # pandas' hash_array uses a fixed SipHash key, unlike Python's salted hash(); it hashes
    # non-string objects by their str() form, so 7 and "7" land on the same shard.
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=False)


def shard_of_hash(hashes: np.ndarray, num_shards: int) -> np.ndarray:
    """Owning shard of already-hashed keys."""
    return (np.asarray(hashes, dtype=np.uint64) % np.uint64(num_shards)).astype(np.int64)


def shard_of(entities: np.ndarray | pd.Series, num_shards: int) -> np.ndarray:
    """Owning shard of each entity key: a stable (unsalted) hash modulo the shard count."""
    return shard_of_hash(hash_keys(entities), num_shards)


def validate(df: pd.DataFrame, cfg: FeaturesConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Coerce a batch to the schema and clean it; returns (clean frame, reason per row, '' when valid)."""
    n = len(df)
    reason = np.full(n, "", dtype=object)
    out: dict[str, Any] = {}  # columns, made into one frame at the end (inserting one by one costs ~0.1 ms each)

    def mark(mask: Any, why: str) -> None:
        m = np.asarray(mask, dtype=bool) & (reason == "")
        reason[m] = why

    def column(name: str) -> pd.Series:
        return df[name].reset_index(drop=True) if name in df else pd.Series([None] * n, dtype=object)

    def numeric(name: str) -> tuple[np.ndarray, np.ndarray]:
        """(values as floats, NaN where not a number; missing mask); numeric columns skip pandas' parsing."""
        if name in df and df[name].dtype.kind in "fiu":
            num = df[name].to_numpy(dtype=np.float64)
            return num, np.isnan(num)
        raw = column(name)
        return pd.to_numeric(raw, errors="coerce").astype(float).values, raw.isna().values

    kind = column(KIND).fillna(EVENT).astype(str)
    mark(~kind.isin([EVENT, LABEL_KIND]), "bad_kind")
    out[KIND] = kind.values
    for col in (EVENT_ID, ENTITY):
        raw = column(col)
        text = raw.astype(str)
        missing = raw.isna().values | (text.str.len().values == 0)
        mark(missing, f"missing:{col}")
        out[col] = text.values
    t = numeric(EVENT_TIME)[0]
    mark(~np.isfinite(t), "missing:event_time")
    out[EVENT_TIME] = t
    is_event = kind.values == EVENT
    for spec in cfg.fields:
        num, missing = numeric(spec.name)
        mark(is_event & ~missing & np.isnan(num), f"non_numeric:{spec.name}")
        if spec.required:
            mark(is_event & missing, f"missing:{spec.name}")
        mark(is_event & np.isinf(num), f"non_finite:{spec.name}")
        lo = -np.inf if spec.min is None else spec.min
        hi = np.inf if spec.max is None else spec.max
        if spec.clip:
            num = np.where(np.isnan(num), num, np.clip(num, lo, hi))
        else:
            mark(is_event & ((num < lo) | (num > hi)), f"out_of_range:{spec.name}")
        out[spec.name] = num
    lab = numeric(LABEL)[0]
    mark(~is_event & ~np.isin(lab, [0.0, 1.0]), "bad_label")
    out[LABEL] = lab
    return pd.DataFrame(out, index=pd.RangeIndex(n)), reason
