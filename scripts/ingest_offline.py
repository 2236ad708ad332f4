"""The ingest bench's yardsticks: the features of a whole stream in one vectorised pandas pass (as a batch
job computes them), their comparison with the streaming rows, and throughput by position in the stream.

``offline_features`` sorts the stream's events by (entity, time) once and computes every window
aggregate with pandas ``rolling(W, closed="left")`` (windows ``[t - W, t)``) over one time axis
where the entities follow each other (the equivalent of ``groupby(entity).rolling``, in one pass), ``last``/``age``
from the previous event, and the label history from the labels that arrived before each event.
The shards expire an entity idle longer than every window and the label timeout, so their
``last``/``age``/``label_last`` are NaN where the gap exceeds that horizon; ``compare`` accepts NaN
there (within ``slack`` of it, where the watermark decides) and demands equality everywhere else.

Example:
    >>> rates = decile_rates(np.full(20, 100), np.arange(1.0, 21.0), start=0.0)  # 20 batches of 100, 1 s each
    >>> rates["first_decile_events_per_s"], rates["last_decile_events_per_s"], rates["steady_state_ratio"]
    (100.0, 100.0, 1.0)
    >>> done_times(np.array([0.0, 0.1, 0.2, 1.0, 2.0]), end=3.0, depth=2)  # reads wait for batch i - depth - 1
    array([1., 2., 3., 3., 3.])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL

REL_TOL = 1e-9  # |streaming - offline| <= REL_TOL * max(|offline|, 1)
EXPIRING = ("last", "age_s", "label_last")  # features that read beyond every window: NaN once expired


def decile_rates(events: np.ndarray, done: np.ndarray, start: float) -> dict[str, float]:
    """Events/s of the first and last tenth of the batches (``done[i]``: when batch ``i`` was answered)."""
    parts = np.array_split(np.arange(len(events)), 10)
    first, last = parts[0], parts[-1]
    t_first = done[first[-1]] - start
    t_last = done[last[-1]] - done[last[0] - 1]
    a, b = float(np.sum(events[first]) / t_first), float(np.sum(events[last]) / t_last)
    return {"first_decile_events_per_s": a, "last_decile_events_per_s": b, "steady_state_ratio": b / a}


def done_times(reads: np.ndarray, end: float, depth: int) -> np.ndarray:
    """When each batch was answered, from when each was read: with ``depth`` batches in flight per shard,
    batch ``i + depth + 1`` is read once batch ``i`` is answered; the last ones end with the run (``end``)."""
    out = np.full(len(reads), end)
    k = depth + 1
    out[:max(len(reads) - k, 0)] = reads[k:]
    return out


def _sorted_codes(entities: np.ndarray, times: np.ndarray, tie: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    codes, _ = pd.factorize(entities)
    keys = (times, codes) if tie is None else (tie, times, codes)
    order = np.lexsort(keys)
    return order, codes[order]


def _rolling(codes: np.ndarray, t_us: np.ndarray, cols: dict[str, np.ndarray], w_s: float) -> Any:
    """``rolling(W, closed="left")`` per entity as one pass: each entity's times are moved past the previous
    entity's by more than any window (rows sorted by entity, time), so no window spans two entities."""
    span = int(t_us.max() - t_us.min()) + int(w_s * 1e6) + 1 if len(t_us) else 1
    if (int(codes.max(initial=0)) + 1) * span >= 2**62:
        raise OverflowError("too many entities x event-time span for one time axis")
    axis = codes.astype(np.int64) * span + (t_us - t_us.min(initial=0))
    frame = pd.DataFrame(cols, index=pd.DatetimeIndex(axis.astype("datetime64[us]")))
    return frame.rolling(pd.Timedelta(microseconds=round(w_s * 1e6)), closed="left")


def _gap_us(codes: np.ndarray, t_us: np.ndarray, prev_t: np.ndarray) -> np.ndarray:
    same = np.r_[False, codes[1:] == codes[:-1]]
    return np.where(same, t_us - prev_t, -1)


def offline_features(frames: list[pd.DataFrame], cfg: FeaturesConfig) -> pd.DataFrame:
    """Every event's features (``cfg.feature_names()``, indexed by event id) in one vectorised pass,
    plus ``gap_s`` (seconds since the entity's previous event) and ``label_gap_s`` (since its last label)."""
    df = pd.concat(frames, ignore_index=True)
    is_ev = (df[KIND] == EVENT).to_numpy()
    ev = df[is_ev]
    t_us = np.round(ev[EVENT_TIME].to_numpy(np.float64) * 1e6).astype(np.int64)
    order, codes = _sorted_codes(ev[ENTITY].to_numpy(), t_us)
    t = t_us[order]
    fields = [f.name for f in cfg.fields]
    x = {f: ev[f].to_numpy(np.float64)[order] for f in fields}
    out: dict[str, np.ndarray] = dict(x)
    agg = {a.field: x[a.field] for a in cfg.aggregates}
    for w, suffix in zip(cfg.windows_s, _suffixes(cfg)):
        r = _rolling(codes, t, {"_one": np.ones(len(t)), **agg}, w)
        if cfg.count:
            out[f"count_{suffix}"] = np.nan_to_num(r["_one"].count().to_numpy())
        for a in cfg.aggregates:
            for op in a.ops:
                out[f"{a.field}_{op}_{suffix}"] = getattr(r[a.field], op)().to_numpy()
    same = np.r_[False, codes[1:] == codes[:-1]]
    prev_t = np.r_[0, t[:-1]]
    for a in cfg.aggregates:
        if a.last:
            out[f"{a.field}_last"] = np.where(same, np.r_[np.nan, x[a.field][:-1]], np.nan)
    gap = _gap_us(codes, t, prev_t)
    if cfg.age:
        out["age_s"] = np.where(gap >= 0, gap / 1e6, np.nan)
    label_gap = np.full(len(t), -1)
    if cfg.label_history.enabled:
        labels, label_gap = _label_history(df[~is_ev], ev[ENTITY].to_numpy()[order], t, cfg)
        out.update(labels)
    res = pd.DataFrame({n: out[n] for n in cfg.feature_names()}, index=ev[EVENT_ID].to_numpy()[order])
    res["gap_s"], res["label_gap_s"] = np.where(gap >= 0, gap / 1e6, np.inf), label_gap
    return res


def _suffixes(cfg: FeaturesConfig) -> list[str]:
    """The window suffixes in feature names ('5m', '1h' …), read off the configured names."""
    names = cfg.feature_names()
    counts = [n for n in names if n.startswith("count_")] if cfg.count else []
    if len(counts) == len(cfg.windows_s):
        return [n[len("count_"):] for n in counts]
    a = cfg.aggregates[0]
    prefix = f"{a.field}_{a.ops[0]}_"
    return [n[len(prefix):] for n in names if n.startswith(prefix)]


def _label_history(lab: pd.DataFrame, ev_entities: np.ndarray, ev_t: np.ndarray,
                   cfg: FeaturesConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """label_last and label_rate/label_count per window for events (sorted by entity, time): labels strictly
    before each event (an event sorts before a label at the same time); seconds since the last label."""
    n = len(ev_t)
    lt = np.round(lab[EVENT_TIME].to_numpy(np.float64) * 1e6).astype(np.int64)
    ents = np.concatenate([ev_entities, lab[ENTITY].to_numpy()])
    times = np.concatenate([ev_t, lt])
    vals = np.concatenate([np.full(n, np.nan), lab[LABEL].to_numpy(np.float64)])
    is_label = np.r_[np.zeros(n, np.int8), np.ones(len(lt), np.int8)]
    order, codes = _sorted_codes(ents, times, is_label)
    back = np.argsort(order)[:n]  # where each event sits in the combined order
    v, tt = vals[order], times[order]
    s = pd.Series(v)
    last = s.groupby(codes, sort=False).ffill().to_numpy()
    last_t = pd.Series(np.where(np.isnan(v), np.nan, tt.astype(np.float64))).groupby(codes, sort=False).ffill()
    out = {"label_last": last[back]}
    gap = np.where(np.isnan(last_t.to_numpy()), np.inf, (tt - last_t.to_numpy()) / 1e6)[back]
    names = cfg.feature_names()
    for w, (rate, count) in zip(cfg.label_history.windows_s, _label_names(names)):
        r = _rolling(codes, tt, {"v": v}, w)["v"]
        out[rate], out[count] = r.mean().to_numpy()[back], np.nan_to_num(r.count().to_numpy())[back]
    return out, gap


def _label_names(names: list[str]) -> list[tuple[str, str]]:
    rates = [n for n in names if n.startswith("label_rate_")]
    return [(r, "label_count_" + r[len("label_rate_"):]) for r in rates]


def compare(rows: pd.DataFrame, offline: pd.DataFrame, names: list[str], horizon_s: float,
            slack_s: float) -> dict[str, Any]:
    """Streaming training rows against the offline features of the same events: the largest differences;
    raises if any feature differs beyond ``REL_TOL`` (NaN where the state expired is accepted only
    for a gap of at least ``horizon_s`` and required beyond ``horizon_s + slack_s``)."""
    off = offline.loc[rows[EVENT_ID].to_numpy()]
    worst_abs, worst_rel, expired, bad = 0.0, 0.0, 0, []
    for n in names:
        a, b = rows[n].to_numpy(np.float64), off[n].to_numpy(np.float64)
        if n.endswith(EXPIRING):
            gap = off["label_gap_s" if n.startswith("label") else "gap_s"].to_numpy()
            b = np.where(gap > horizon_s + slack_s, np.nan, b)
            gone = np.isnan(a) & ~np.isnan(b) & (gap >= horizon_s)
            expired += int(gone.sum())
            b = np.where(gone, np.nan, b)
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        diff = np.abs(np.where(nan_a | nan_b, 0.0, a - b))
        worst_abs = max(worst_abs, float(diff.max(initial=0.0)))
        worst_rel = max(worst_rel, float((diff / np.maximum(np.abs(np.nan_to_num(b)), 1.0)).max(initial=0.0)))
        wrong = (nan_a != nan_b) | (diff > REL_TOL * np.maximum(np.abs(np.nan_to_num(b)), 1.0))
        if wrong.any():
            bad.append(f"{n}: {int(wrong.sum())} rows, e.g. {rows[EVENT_ID].iloc[int(np.argmax(wrong))]}")
    if bad:
        raise AssertionError("streaming and offline features differ: " + "; ".join(bad))
    return {"rows_compared": len(rows), "max_abs_diff": worst_abs, "max_rel_diff": worst_rel,
            "expired_nan": expired}
