"""Request figures per serving slot: counters and histograms that add up across replicas.

Example:
    >>> st = SlotStats()
    >>> st.record(0.004, 0.9); st.record(0.006, 0.2, error=True)
    >>> summary(st.to_dict())["requests"], summary(st.to_dict())["error_rate"]
    (2, 0.5)
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Latency buckets: 0.1 ms .. ~30 s, log-spaced.
LAT_EDGES_MS = np.concatenate([[0.0], np.logspace(-1, 4.5, 56)])
PRED_BINS = 20


class SlotStats:
    """Cumulative request figures of one slot in one replica."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = np.zeros(len(LAT_EDGES_MS), dtype=np.int64)
        self.preds = np.zeros(PRED_BINS, dtype=np.int64)

    def record(self, seconds: float, probability: float | np.ndarray | None, error: bool = False) -> None:
        """One request: its latency, its predicted probabilities (one or many rows), whether it failed."""
        self.requests += 1
        if error:
            self.errors += 1
        ms = seconds * 1000.0
        self.latency[min(int(np.searchsorted(LAT_EDGES_MS, ms, "right")) - 1, len(LAT_EDGES_MS) - 1)] += 1
        if probability is not None:
            p = np.clip(np.atleast_1d(np.asarray(probability, dtype=float)), 0.0, 1.0 - 1e-12)
            np.add.at(self.preds, (p * PRED_BINS).astype(int), 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-safe) for reports."""
        return {"requests": self.requests, "errors": self.errors, "latency": self.latency.tolist(),
                "preds": self.preds.tolist()}


def empty_stats() -> dict[str, Any]:
    """The figures of a slot that saw nothing."""
    return SlotStats().to_dict()


def add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Sum of two reports (several replicas)."""
    return {"requests": a["requests"] + b["requests"], "errors": a["errors"] + b["errors"],
            "latency": (np.asarray(a["latency"]) + np.asarray(b["latency"])).tolist(),
            "preds": (np.asarray(a["preds"]) + np.asarray(b["preds"])).tolist()}


def minus(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Figures between two cumulative reports (a restarted replica's counters start again: clamp at 0)."""
    return {"requests": max(after["requests"] - before["requests"], 0),
            "errors": max(after["errors"] - before["errors"], 0),
            "latency": np.maximum(np.asarray(after["latency"]) - np.asarray(before["latency"]), 0).tolist(),
            "preds": np.maximum(np.asarray(after["preds"]) - np.asarray(before["preds"]), 0).tolist()}


def percentile_ms(hist: list[int], q: float) -> float | None:
    """The ``q`` percentile (0-100) of a latency histogram, as its bucket's upper edge; None if empty."""
    h = np.asarray(hist)
    total = h.sum()
    if total == 0:
        return None
    idx = int(np.searchsorted(np.cumsum(h), q / 100.0 * total))
    return float(LAT_EDGES_MS[min(idx + 1, len(LAT_EDGES_MS) - 1)])


def summary(stats: dict[str, Any]) -> dict[str, Any]:
    """Requests, error rate and latency percentiles of one slot's figures."""
    n = stats["requests"]
    return {"requests": n, "errors": stats["errors"], "error_rate": (stats["errors"] / n) if n else None,
            "p50_ms": percentile_ms(stats["latency"], 50), "p99_ms": percentile_ms(stats["latency"], 99)}
