"""Drift and live quality of the live version, measured on the labelled rows the shards emit.

``StreamMonitor`` keeps a sliding window of labelled rows, scores the live version on them
(live quality on the stream, in the task's metrics), computes each feature's PSI (and a KS distance)
against the reference quantiles stored in the live version's metadata, and raises a drift alarm over
the configured threshold.

Per task (``spec``): the prediction shift is the PSI of the predicted value against the version's
reference quantiles (binary, regression) or the predicted classes' mix against the training shares
(multiclass: PSI and a chi-square test). Binary is as before: the prediction PSI is reported only.
For regression and multiclass a Page-Hinkley detector also watches the live version's per-row errors
(0/1 for classes; for regression the absolute error over the version's holdout MAE), and an error
drift or a prediction shift (``prediction_psi`` over ``psi_alarm``; for classes with chi-square
p < ``SHIFT_P`` too) raises the alarm, as a feature's PSI does. Categorical fields are encoded with
the version's category dictionary.

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
from streamfit.drift_detectors import detector_restore, detector_snapshot, feed_errors, new_detector
from streamfit.psi import class_shift, psi_against
from streamfit.registry import version_task
from streamfit.task import Task, TaskSpec, predicted_class

from streamfit.actors.monitoring.prediction_log import scores_by_version

MAX_VERSIONS = 32  # versions whose outcomes on the stream are kept (as the prediction log keeps)
SHIFT_P = 1e-3  # a predicted class mix this unlikely under the training shares (chi-square) can raise the alarm


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

    def __init__(self, cfg: MonitorConfig, feature_names: list[str], fields: list[str] | None = None,
                 spec: TaskSpec | None = None) -> None:
        self.cfg = cfg
        self.spec = spec or TaskSpec()
        self.cats: Any = None  # the live version's category dictionary (None: no categorical fields)
        self.reference_class_shares: list[float] = []
        self.detector = new_detector("page_hinkley", self.spec.task.value)
        self.error_scale, self.error_rows, self.error_sum = 1.0, 0, 0.0
        self.error_alarm: str | None = None
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
        self.reference_class_shares = meta.get("reference_class_shares", [])
        self.cats = version_task(meta).categories
        self.window.clear()
        self.window_rows = 0
        self.alarm = None
        mae = ((meta.get("metrics") or {}).get("holdout") or {}).get("mae")
        self._reset_errors(mae if self.spec.task is Task.REGRESSION else None)

    def _reset_errors(self, scale: float | None) -> None:
        """A fresh error detector for a new live version (``scale``: its holdout MAE, regression)."""
        self.error_scale = float(scale) if scale is not None and np.isfinite(scale) and scale > 0 else 1.0
        self.detector = new_detector("page_hinkley", self.spec.task.value)
        self.error_rows, self.error_sum, self.error_alarm = 0, 0.0, None

    def snapshot(self) -> dict[str, Any]:
        """The version measured, its reference, the window (columns, and the sizes of the batches in it), each
        version's outcomes and the alarm; not the booster (the registry's, for ``version``)."""
        frame = self.frame()
        return {"version": self.version, "reference": copy.deepcopy(self.reference),
                "reference_prediction": list(self.reference_prediction),
                "window": {str(c): _column(frame[c]) for c in frame.columns},
                "sizes": [len(w) for w in self.window],
                "outcomes": {str(v): _rows(list(out)) for v, out in self.outcomes.items()},
                "alarm": self.alarm, "reference_class_shares": list(self.reference_class_shares),
                "errors": {"scale": self.error_scale, "rows": self.error_rows, "sum": self.error_sum,
                           "alarm": self.error_alarm, "detector": detector_snapshot(self.detector)}}

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
        self.outcomes = OrderedDict((int(v), deque(map(tuple, _rows(out).tolist()), maxlen=self.cfg.window_rows))
                                    for v, out in snap["outcomes"].items())
        self.reference_class_shares = [float(x) for x in snap.get("reference_class_shares", [])]
        errors = snap.get("errors")  # None: saved before the monitor watched errors
        self._reset_errors(None if errors is None else errors["scale"])
        if errors is not None:
            self.error_rows, self.error_sum, self.error_alarm = int(errors["rows"]), float(errors["sum"]), errors["alarm"]
            detector_restore(self.detector, errors["detector"])

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
            y = rows["label"].astype(float).to_numpy()
            out = self.outcomes.setdefault(self.version, deque(maxlen=self.cfg.window_rows))
            out.extend(zip(*(p.T.tolist() if p.ndim == 2 else [p.tolist()]), y.tolist()))
            if self.spec.task is not Task.BINARY:  # binary: as before (the trainer's detector watches its errors)
                self._watch_errors(y, p)
            # One entry per version ever live would grow without bound: keep the most recently measured ones.
            self.outcomes.move_to_end(self.version)
            while len(self.outcomes) > MAX_VERSIONS:
                self.outcomes.popitem(last=False)

    def _predict(self, rows: pd.DataFrame) -> np.ndarray:
        if self.cats is not None:
            return np.asarray(self.booster.inplace_predict(self.cats.encode(rows[self.feature_names])), dtype=float)
        return np.asarray(self.booster.inplace_predict(rows[self.feature_names].to_numpy(dtype=float)), dtype=float)

    def _watch_errors(self, y: np.ndarray, pred: np.ndarray) -> None:
        """Feed the live version's per-row errors to the detector (in holdout MAEs for regression)."""
        errors = self.spec.row_error(y, pred) / self.error_scale
        errors = errors[np.isfinite(errors)]
        self.error_rows += len(errors)
        self.error_sum += float(errors.sum())
        if self.error_alarm is None and feed_errors(self.detector, errors):
            unit = " holdout MAEs" if self.spec.task is Task.REGRESSION else ""
            self.error_alarm = (f"error drift: the live version's mean error rose to "
                                f"{self.error_sum / self.error_rows:.3f}{unit} (Page-Hinkley)")

    def error_figures(self) -> dict[str, Any]:
        """The error detector's figures: rows fed, mean error (in holdout MAEs for regression), its alarm."""
        return {"rows": self.error_rows, "mean_error": self.error_sum / self.error_rows if self.error_rows else None,
                "alarm": self.error_alarm}

    def frame(self) -> pd.DataFrame:
        """The rows in the window."""
        return pd.concat(list(self.window), ignore_index=True) if self.window else pd.DataFrame()

    def drift(self) -> dict[str, Any]:
        """PSI and KS distance per feature and PSI of the live version's scores, against its reference; the
        error detector's figures (and for multiclass the chi-square test of the predicted class mix)."""
        frame = self.frame()
        binary = self.spec.task is Task.BINARY
        if not len(frame) or (not self.reference and binary) or len(frame) < self.cfg.min_rows:
            out = {"psi": {}, "ks": {}, "prediction_psi": None, "rows": len(frame), "version": self.version}
            if binary:
                return out
            self.alarm = self.alarm or self.error_alarm
            return {**out, "error_drift": self.error_figures(), "alarm": self.alarm}
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
        if not binary:
            out["error_drift"] = self.error_figures()
            self._task_shift(frame, out)
        out["alarm"] = self.alarm
        return out

    def _task_shift(self, frame: pd.DataFrame, out: dict[str, Any]) -> None:
        """Regression and multiclass: the class mix's shift (multiclass), and the alarm an error drift or a
        prediction shift raises when no feature did."""
        shift_alarm = None
        if self.spec.task is Task.MULTICLASS and self.booster is not None and self.reference_class_shares:
            k = len(self.reference_class_shares)
            shift = class_shift(self.reference_class_shares,
                                np.bincount(predicted_class(self._predict(frame)), minlength=k)[:k])
            if shift is not None:
                out.update(prediction_psi=shift["psi"], prediction_chi2=shift["chi2"], prediction_shift_p=shift["p"])
                if shift["p"] < SHIFT_P and shift["psi"] > self.cfg.psi_alarm:
                    shift_alarm = (f"predicted class mix PSI {shift['psi']:.2f} > {self.cfg.psi_alarm} "
                                   f"(chi-square p={shift['p']:.1e})")
        elif out["prediction_psi"] is not None and out["prediction_psi"] > self.cfg.psi_alarm:
            shift_alarm = f"prediction PSI {out['prediction_psi']:.2f} > {self.cfg.psi_alarm}"
        if self.alarm is None:
            self.alarm = self.error_alarm or shift_alarm

    def live_accuracy(self) -> dict[int, dict[str, Any]]:
        """Each version's quality (the task's metrics) on the stream's labelled rows while it was live."""
        return scores_by_version(self.outcomes, self.spec)


def _column(s: pd.Series) -> np.ndarray:
    """A window column as plain data: numbers as they are, text (a categorical field) with None where missing."""
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(copy=True)
    return s.astype(object).where(s.notna(), None).to_numpy(copy=True)


def _rows(out: Any) -> np.ndarray:
    """Outcome rows as an (n, width) float array: (prediction, label), or k probabilities and the label."""
    arr = np.asarray(out, dtype=float)
    return arr.reshape(-1, 2) if arr.ndim < 2 else arr
