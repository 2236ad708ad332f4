"""Event vocabulary shared by every plane: column names, batch validation (``validate``) and the stable partition hash.

An event batch is a pandas DataFrame with one row per event or label:

- ``kind``: ``"event"`` (features) or ``"label"`` (labels the event named by ``event_id``)
- ``event_id``: unique id of the event (a label names the event it labels)
- ``entity``: the partition key
- ``event_time``: seconds since the epoch (float)
- one column per field (numbers; text for a categorical field), and ``label`` on label rows: 0/1 (binary),
  a number (regression) or one of ``model.classes`` (multiclass; the clean column holds its class index)

Example:
    >>> import numpy as np
    >>> shard_of(np.array(["a", "b", "a"], dtype=object), 4).tolist() == shard_of(np.array(["a", "b", "a"], dtype=object), 4).tolist()
    True
    >>> from streamfit.config import FieldSpec, ModelConfig
    >>> cfg = FeaturesConfig(fields=[FieldSpec(name="country", type="categorical", allowed=["de", "fr"])], aggregates=[])
    >>> rows = pd.DataFrame({"kind": ["event", "event", "label", "label"], "event_id": list("abcd"), "entity": "u",
    ...                      "event_time": 1.0, "country": ["fr", 3, None, None], "label": [None, None, "dog", "yak"]})
    >>> clean, why = validate(rows, cfg, ModelConfig(task="multiclass", classes=["cat", "dog"]))
    >>> why.tolist(), clean["label"].tolist()[2]
    (['', 'not_categorical:country', '', 'bad_label:unknown_class'], 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from streamfit.config import FeaturesConfig, FieldSpec, ModelConfig
from streamfit.dictionaries import check_categories
from streamfit.task import Task, check_labels

KIND, EVENT_ID, ENTITY, EVENT_TIME, LABEL = "kind", "event_id", "entity", "event_time", "label"
EVENT, LABEL_KIND = "event", "label"
BASE_COLUMNS = [KIND, EVENT_ID, ENTITY, EVENT_TIME]
PARTITION = "_partition"  # optional: the source partition a row came from (per-partition watermarks)
ENTITY_HASH = "_entity_hash"  # optional: hash_keys(entity), set by the partitioner so a shard does not hash again


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


@dataclass
class EventArrays:
    """Events as plain arrays: the online lookup's input (Ray sends numpy arrays whole, a frame column by column).

    A categorical field's values are text: they go in ``text`` (field -> object array, None = missing), and
    ``x``'s column of that field, if ``fields`` names it, is ignored (NaN).

    >>> ev = EventArrays(np.array(["u"], dtype=object), np.array([1.0]), np.array([[2.0, np.nan]]), ["x0", "city"],
    ...                  np.array([""], dtype=object), text={"city": np.array(["paris"], dtype=object)})
    >>> ev.columns()["city"].tolist(), ev.columns()["x0"].tolist()
    (['paris'], [2.0])
    """

    entity: np.ndarray  # str objects
    event_time: np.ndarray  # float seconds, NaN = none
    x: np.ndarray  # (n, len(fields)) float, NaN = missing
    fields: list[str]
    event_id: np.ndarray  # str objects, '' = none
    text: dict[str, np.ndarray] = field(default_factory=dict)  # categorical field -> text per row (None = missing)

    def __len__(self) -> int:
        return len(self.entity)

    def columns(self) -> dict[str, np.ndarray]:
        """The columns by name, as ``check_columns`` reads them."""
        cols = {ENTITY: self.entity, EVENT_TIME: self.event_time, EVENT_ID: self.event_id}
        cols.update({f: self.x[:, j] for j, f in enumerate(self.fields)})
        cols.update(self.text)
        return cols


def validate(df: pd.DataFrame, cfg: FeaturesConfig,
             model: ModelConfig | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Coerce a batch to the schema and clean it; returns (clean frame, reason per row, '' when valid)."""
    out, reason = check_columns(df, len(df), cfg, model)
    return pd.DataFrame(out, index=pd.RangeIndex(len(df))), reason  # one frame (inserting columns costs ~0.1 ms each)


def check_columns(cols: Mapping[str, Any], n: int, cfg: FeaturesConfig,
                  model: ModelConfig | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Every rule of ``validate`` on ``n`` rows of named columns (a DataFrame, or plain arrays); (clean columns,
    reason per row). Typed arrays (float numbers, str text) skip pandas' parsing: the online lookup's path.
    Labels are checked for ``model``'s task (None: binary)."""
    reason = np.full(n, "", dtype=object)
    free = np.ones(n, dtype=bool)  # rows without a reason yet (the first rule a row breaks names it)
    out: dict[str, Any] = {}

    def mark(mask: Any, why: str) -> None:
        m = np.asarray(mask, dtype=bool) & free
        if m.any():
            reason[m] = why
            free[m] = False

    def get(name: str) -> Any:
        return cols[name] if name in cols else None

    def mark_each(mask: np.ndarray, why: np.ndarray) -> None:
        for r in pd.unique(why[mask & (why != "")]):
            mark(mask & (why == r), r)

    out[KIND] = _kinds(get(KIND), n)
    is_event = np.asarray(out[KIND] == EVENT, dtype=bool)
    mark(~is_event & ~np.asarray(out[KIND] == LABEL_KIND, dtype=bool), "bad_kind")
    for col in (EVENT_ID, ENTITY):
        out[col], missing = _text(get(col), n)
        mark(missing, f"missing:{col}")
    t = _numeric(get(EVENT_TIME), n)[0]
    mark(~np.isfinite(t), "missing:event_time")
    out[EVENT_TIME] = t
    for spec in cfg.fields:
        if spec.categorical:
            out[spec.name], missing, why = _categories(get(spec.name), n, spec)
            mark_each(is_event & ~missing, why)
            if spec.required:
                mark(is_event & missing, f"missing:{spec.name}")
            continue
        num, missing = _numeric(get(spec.name), n)
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
    if model is None or model.task == Task.BINARY.value:
        lab = _numeric(get(LABEL), n)[0]
        mark(~is_event & (lab != 0.0) & (lab != 1.0), "bad_label")
    else:
        lab, why = _labels(get(LABEL), ~is_event, model)
        mark_each(~is_event, why)
    out[LABEL] = lab
    return out, reason


def _categories(raw: Any, n: int, spec: FieldSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(text per row, None where missing; missing mask: absent, None/NaN or empty; reason per row) of a
    categorical field: ``not_categorical:<field>`` for a value that is no text, ``unknown_category:<field>``
    for one outside ``allowed``."""
    s = _series(raw, n)
    missing = s.isna().to_numpy(dtype=bool) | (s == "").to_numpy(dtype=bool)
    why = check_categories(s, spec.name, spec.allowed)
    return s.where(~missing, None).to_numpy(dtype=object), missing, why


def _labels(raw: Any, on: np.ndarray, model: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(label per row as a float: the value, or the class index; reason per row) of the rows ``on`` (label
    rows), checked for the model's task; the other rows get NaN and no reason."""
    lab, why = np.full(len(on), np.nan), np.full(len(on), "", dtype=object)
    rows = np.flatnonzero(on)
    if len(rows) and raw is not None:
        values = _series(raw, len(on)).iloc[rows]
        lab[rows], why[rows] = check_labels(Task(model.task), values, model.label_dictionary())
    elif len(rows):
        why[rows] = "bad_label:missing"
    return lab, why


def _series(raw: Any, n: int) -> pd.Series:
    if raw is None:
        return pd.Series([None] * n, dtype=object)
    return raw.reset_index(drop=True) if isinstance(raw, pd.Series) else pd.Series(raw, dtype=object)


def _kinds(raw: Any, n: int) -> Any:
    """Row kinds as text; an absent column makes every row an event."""
    if raw is None:
        return np.full(n, EVENT, dtype=object)
    return _series(raw, n).fillna(EVENT).astype(str).values


def _text(raw: Any, n: int) -> tuple[Any, np.ndarray]:
    """(values as text, missing mask: absent, None/NaN or empty) of a column; ``raw`` None = absent."""
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "OU":
        values = raw.tolist()
        if all(type(v) is str for v in values):  # already text: nothing to parse
            return raw.astype(object), np.array([not v for v in values], dtype=bool)
    if isinstance(raw, pd.Series) and isinstance(raw.dtype, pd.StringDtype) and raw.dtype.storage == "pyarrow":
        arr = pa.array(raw.array)  # already text (pandas' str columns): Arrow compute, no conversion per value
        empty = pc.or_(pc.is_null(arr), pc.equal(pc.utf8_length(arr), 0))
        return raw.array, pc.fill_null(empty, True).to_numpy(zero_copy_only=False)
    s = _series(raw, n)
    text = s.astype(str)
    return text.values, s.isna().values | (text.str.len().values == 0)


def _numeric(raw: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values as floats, NaN where not a number; missing mask); numeric columns skip pandas' parsing."""
    if raw is None:
        return np.full(n, np.nan), np.ones(n, dtype=bool)
    if getattr(getattr(raw, "dtype", None), "kind", "") in ("f", "i", "u"):
        num = raw.to_numpy(dtype=np.float64) if isinstance(raw, pd.Series) else np.asarray(raw, dtype=np.float64)
        return num, np.isnan(num)
    s = _series(raw, n)
    return pd.to_numeric(s, errors="coerce").astype(float).values, s.isna().values
