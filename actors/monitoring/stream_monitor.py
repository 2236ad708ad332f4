"""Drift and live accuracy of the live version, measured on the labelled rows the shards emit.

``StreamMonitor`` keeps a sliding window of labelled rows, scores the live version on them
(live accuracy on the stream), computes each feature's PSI (and a KS distance) against the
reference quantiles stored in the live version's metadata, and raises a drift alarm over the
configured threshold.

Example:
    >>> import numpy as np, pandas as pd
    >>> from streamfit.config import MonitorConfig
    >>> from streamfit.psi import reference_quantiles
    >>> rng = np.random.default_rng(0)
    >>> mon = StreamMonitor(MonitorConfig(window_rows=500, min_rows=100), ["x"])
    >>> mon.set_live(1, None, {"reference": {"x": reference_quantiles(rng.normal(size=2000))}})
    >>> mon.observe(pd.DataFrame({"x": rng.normal(3.0, 1.0, 400), "label": 1.0}))
    >>> d = mon.drift()
    >>> d["rows"], d["psi"]["x"] > 0.25, d["alarm"].startswith("x PSI")
    (400, True, True)
"""

from __future__ import annotations

import copy
from collections import OrderedDict, deque
from typing import Any

import numpy as np
import pandas as pd

from streamfit.config import MonitorConfig
from streamfit.psi import psi_against

from streamfit.actors.monitoring.prediction_log import scores_by_version

MAX_VERSIONS = 32  # versions whose outcomes on the stream are kept (as the prediction log keeps)


def ks_distance(edges: list[float], values: np.ndarray) -> float:
    """Largest gap between the live CDF and the reference CDF known at its quantile edges (for
    discrete features, where PSI's quantile bins collapse)."""
    v = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    if not len(v) or len(edges) < 2:
        return 0.0
    grid = np.linspace(0, 1, len(edges))
    live = np.searchsorted(v, np.asarray(edges, dtype=float), side="right") / len(v)
    return float(np.max(np.abs(live - grid)))


class StreamMonitor:
    """Drift and live accuracy of the live version on the labelled rows of the stream."""

    def __init__(self, cfg: MonitorConfig, feature_names: list[str], fields: list[str] | None = None) -> None:
        self.cfg = cfg
        self.feature_names = feature_names
        self.alarm_features = set(feature_names if cfg.alarm_on == "all" or fields is None else fields)
        self.window: deque[pd.DataFrame] = deque()
        self.window_rows = 0
        self.version: int | None = None
        self.booster: Any = None
        self.reference: dict[str, list[float]] = {}
        self.reference_prediction: list[float] = []
        self.outcomes: OrderedDict[int, deque[tuple[float, float]]] = OrderedDict()  # newest-measured last
        self.alarm: str | None = None

    def set_live(self, version: int, booster: Any, meta: dict[str, Any]) -> None:
        """The live version changed: measure against its reference from now on."""
        self.version, self.booster = version, booster
        self.reference = meta.get("reference", {})
        self.reference_prediction = meta.get("reference_prediction", [])
        self.window.clear()
        self.window_rows = 0
        self.alarm = None

    def snapshot(self) -> dict[str, Any]:
        """The version measured, its reference, the window (columns, and the sizes of the batches in it), each
        version's outcomes and the alarm; not the booster (the registry's, for ``version``)."""
        frame = self.frame()
        return {"version": self.version, "reference": copy.deepcopy(self.reference),
                "reference_prediction": list(self.reference_prediction),
                "window": {str(c): frame[c].to_numpy(copy=True) for c in frame.columns},
                "sizes": [len(w) for w in self.window],
                "outcomes": {str(v): np.asarray(list(out), dtype=float).reshape(-1, 2) for v, out in self.outcomes.items()},
                "alarm": self.alarm}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the state with ``snap``; the booster is kept if it is ``snap``'s version's, else None (the
        owner loads it from the registry)."""
        version = None if snap["version"] is None else int(snap["version"])
        if version != self.version:
            self.booster = None
        self.version, self.alarm = version, snap["alarm"]
        self.reference = copy.deepcopy(snap["reference"])
        self.reference_prediction = [float(q) for q in snap["reference_prediction"]]
        frame = pd.DataFrame({c: np.asarray(v) for c, v in snap["window"].items()})
        bounds = np.cumsum([0, *snap["sizes"]])
        self.window = deque(frame.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds, bounds[1:]))
        self.window_rows = int(bounds[-1])
        self.outcomes = OrderedDict((int(v), deque(map(tuple, np.asarray(out, dtype=float).reshape(-1, 2).tolist()),
                                                   maxlen=self.cfg.window_rows)) for v, out in snap["outcomes"].items())

    def observe(self, rows: pd.DataFrame) -> None:
        """Labelled rows (features as of each event, and the label)."""
        if rows is None or not len(rows):
            return
        self.window.append(rows)
        self.window_rows += len(rows)
        while self.window_rows - len(self.window[0]) >= self.cfg.window_rows:
            self.window_rows -= len(self.window.popleft())
        if self.booster is not None:
            p = self._predict(rows)
            out = self.outcomes.setdefault(self.version, deque(maxlen=self.cfg.window_rows))
            out.extend(zip(p.tolist(), rows["label"].astype(float).tolist()))
            # One entry per version ever live would grow without bound: keep the most recently measured ones.
            self.outcomes.move_to_end(self.version)
            while len(self.outcomes) > MAX_VERSIONS:
                self.outcomes.popitem(last=False)

    def _predict(self, rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(rows[self.feature_names].to_numpy(dtype=float)), dtype=float)

    def frame(self) -> pd.DataFrame:
        """The rows in the window."""
        return pd.concat(list(self.window), ignore_index=True) if self.window else pd.DataFrame()

    def drift(self) -> dict[str, Any]:
        """PSI and KS distance per feature and PSI of the live version's scores, against its reference."""
        frame = self.frame()
        if not len(frame) or not self.reference or len(frame) < self.cfg.min_rows:
            return {"psi": {}, "ks": {}, "prediction_psi": None, "rows": len(frame), "version": self.version}
        out: dict[str, Any] = {"psi": {}, "ks": {}, "rows": len(frame), "version": self.version}
        for f, edges in self.reference.items():
            if f in frame:
                out["psi"][f] = psi_against(edges, frame[f].to_numpy())
                out["ks"][f] = ks_distance(edges, frame[f].to_numpy())
        out["prediction_psi"] = None
        if self.booster is not None and self.reference_prediction:
            out["prediction_psi"] = psi_against(self.reference_prediction, self._predict(frame))
        watched = {f: v for f, v in out["psi"].items() if f in self.alarm_features}
        worst = max(watched.items(), key=lambda kv: kv[1], default=(None, 0.0))
        if worst[0] is not None and worst[1] > self.cfg.psi_alarm:
            self.alarm = f"{worst[0]} PSI {worst[1]:.2f} > {self.cfg.psi_alarm}"
        out["alarm"] = self.alarm
        return out

    def live_accuracy(self) -> dict[int, dict[str, Any]]:
        """Each version's accuracy, logloss and AUC on the stream's labelled rows while it was live."""
        return scores_by_version(self.outcomes)
