"""Freshness arithmetic: were requests answered by a version trained on the concept they belong to, and how
long did each concept change take to reach all traffic with a version trained after it.

Plain functions over plain data, shared by ``streamfit bench freshness`` (the generator's ground truth:
when each concept begins) and the monitor (live, where the drift-triggered refits estimate it).

Clocks: a version's ``trained_through`` (the newest event time among its training rows, the registry's
``window.end``) and a change's ``start`` are event times; a change's ``wall`` (when the stream's events of
the new concept began being ingested, or when the change was detected) and the traffic samples are wall-clock
times.

Example:
    >>> trained = {1: 90.0, 2: 130.0, 3: 210.0}  # version -> trained through (event time)
    >>> changes = [Change(start=100.0, wall=1000.0), Change(start=200.0, wall=1100.0)]
    >>> is_stale(trained[1], concept_start(150.0, [c.start for c in changes]))
    True
    >>> stale_share([(1, 100.0), (2, 100.0), (2, 200.0), (3, 200.0)], trained)
    0.5
    >>> full = [(990.0, 1), (1030.0, 2), (1150.0, 3)]  # (wall time, version serving 100 % from then on)
    >>> [round(r["seconds"]) for r in seconds_to_full(changes, trained, full, end=1200.0)]
    [30, 50]
    >>> spread([30.0, 50.0, 10.0])
    {'p50_s': 30.0, 'max_s': 50.0}
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Change:
    """A concept change: its event-time start and the wall time it began being ingested (or was detected)."""

    start: float
    wall: float


def concept_start(t: float, starts: Sequence[float]) -> Optional[float]:
    """The start of the concept in force at event time ``t`` (the newest start at or before it; None: the first)."""
    i = bisect.bisect_right(list(starts), t)
    return starts[i - 1] if i else None


def is_stale(trained_through: Optional[float], start: Optional[float]) -> bool:
    """Was a version trained only on rows before the concept began? (Unknown either way: not stale.)"""
    return trained_through is not None and start is not None and trained_through < start


def stale_share(requests: Iterable[tuple[int, Optional[float]]], trained: Mapping[int, float]) -> Optional[float]:
    """Share of ``(version, start of the request's concept)`` answered by a version trained before that start."""
    flags = [is_stale(trained.get(v), start) for v, start in requests]
    return sum(flags) / len(flags) if flags else None


def full_version(slots: Mapping[str, Optional[int]], weights: Mapping[str, int]) -> Optional[int]:
    """The version serving 100 % of the traffic (None while a split or nothing is live).

    >>> full_version({"blue": 3, "green": 4}, {"blue": 0, "green": 100}), full_version({"blue": 3}, {"blue": 50})
    (4, None)
    """
    return next((slots.get(s) for s, w in weights.items() if w >= 100), None)


def seconds_to_full(changes: Sequence[Change], trained: Mapping[int, float],
                    full: Sequence[tuple[float, Optional[int]]], end: float) -> list[dict[str, Any]]:
    """Per change: seconds from its wall time to the first moment a version trained after its start served 100 %.

    ``full`` lists (wall time, version at 100 % from then on) in time order. A change no such version reached
    before ``end`` is reported ``reached: False`` with the seconds until ``end`` (a lower bound).
    """
    out = []
    for c in changes:
        hit = None
        for i, (t, v) in enumerate(full):
            later = full[i + 1][0] if i + 1 < len(full) else end
            if later < c.wall or v is None or trained.get(v, float("-inf")) < c.start:
                continue
            hit = (max(t, c.wall), v)  # a fresh version already at 100 % when the change began counts from then
            break
        seconds = (hit[0] if hit else end) - c.wall
        out.append({"start": c.start, "wall": c.wall, "seconds": round(max(seconds, 0.0), 2),
                    "reached": hit is not None, "version": hit[1] if hit else None})
    return out


def spread(seconds: Sequence[float]) -> dict[str, Optional[float]]:
    """``p50_s`` and ``max_s`` of a list of seconds (None when empty)."""
    if not len(seconds):
        return {"p50_s": None, "max_s": None}
    return {"p50_s": round(float(np.median(seconds)), 2), "max_s": round(float(np.max(seconds)), 2)}
