"""The trainer: keeps a sliding window of labelled rows and refits XGBoost every N new rows.

``TrainerCore`` holds the logic (unit-tested without Ray); ``TrainerActor`` is the Ray
shell that also hands every registered version to the RolloutController.

Example:
    >>> import tempfile, numpy as np, pandas as pd
    >>> from streamfit.config import TrainerConfig
    >>> from streamfit.registry import Registry
    >>> core = TrainerCore(TrainerConfig(refit_every_rows=100, num_boost_round=5), ["a"], Registry(tempfile.mkdtemp()))
    >>> rng = np.random.default_rng(0); a = rng.normal(size=100)
    >>> rows = pd.DataFrame({"event_time": np.arange(100.0), "a": a, "label": (a > 0).astype(float)})
    >>> core.add_rows(rows)
    1
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import ray
import xgboost as xgb

from streamfit.config import TrainerConfig
from streamfit.registry import Registry
from streamfit.schema import EVENT_TIME, LABEL


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Accuracy and logloss of probabilities ``p`` against 0/1 labels ``y``."""
    if len(y) == 0:
        return {"accuracy": float("nan"), "logloss": float("nan"), "n": 0}
    eps = 1e-7
    pc = np.clip(p, eps, 1 - eps)
    return {
        "accuracy": float(((p >= 0.5) == (y >= 0.5)).mean()),
        "logloss": float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean()),
        "n": int(len(y)),
    }


class TrainerCore:
    """Sliding window of training rows; a volume trigger; fit, evaluate on the newest slice, register."""

    def __init__(self, cfg: TrainerConfig, feature_names: list[str], registry: Registry) -> None:
        self.cfg = cfg
        self.feature_names = list(feature_names)
        self.registry = registry
        self.buffer = pd.DataFrame(columns=[EVENT_TIME, *self.feature_names, LABEL])
        self.rows_since_refit = 0
        self.rows_seen = 0
        existing = registry.version_numbers()
        self.parent: int | None = existing[-1] if existing else None
        self.history: list[dict[str, Any]] = []

    def add_rows(self, rows: pd.DataFrame) -> int | None:
        """Add labelled rows; refit and return the new version when the volume trigger fires."""
        if rows is None or len(rows) == 0:
            return None
        part = rows[[EVENT_TIME, *self.feature_names, LABEL]].astype(float)
        self.buffer = pd.concat([self.buffer, part], ignore_index=True) if len(self.buffer) else part
        if len(self.buffer) > self.cfg.window_rows:
            self.buffer = self.buffer.iloc[-self.cfg.window_rows :].reset_index(drop=True)
        self.rows_since_refit += len(part)
        self.rows_seen += len(part)
        if self.rows_since_refit >= self.cfg.refit_every_rows:
            return self.refit(trigger="volume")
        return None

    def refit(self, trigger: str) -> int | None:
        """Fit on the window (newest slice held out), register the booster, return its version."""
        data = self.buffer.sort_values(EVENT_TIME, kind="stable")
        if len(data) < 10 or data[LABEL].nunique() < 2:
            return None
        started = time.time()
        n_hold = max(1, int(len(data) * self.cfg.holdout_fraction))
        train, hold = data.iloc[:-n_hold], data.iloc[-n_hold:]
        params = {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "max_depth": self.cfg.max_depth,
            "eta": self.cfg.eta,
            "nthread": 1,
        }
        dtrain = xgb.DMatrix(train[self.feature_names].to_numpy(), label=train[LABEL].to_numpy(),
                             feature_names=self.feature_names)
        booster = xgb.train(params, dtrain, num_boost_round=self.cfg.num_boost_round)
        metrics = binary_metrics(hold[LABEL].to_numpy(), booster.inplace_predict(hold[self.feature_names].to_numpy()))
        meta = {
            "features": self.feature_names,
            "metrics": {"holdout": metrics},
            "rows": int(len(train)),
            "window": {"start": float(data[EVENT_TIME].iloc[0]), "end": float(data[EVENT_TIME].iloc[-1])},
            "trigger": trigger,
            "parent": self.parent,
            "trainer": self.cfg.model_dump(),
            "fit_seconds": round(time.time() - started, 3),
        }
        version = self.registry.register(booster, meta)
        self.parent = version
        self.rows_since_refit = 0
        self.history.append({"version": version, "trigger": trigger, **metrics})
        return version

    def stats(self) -> dict[str, Any]:
        """Rows seen, rows buffered and the refit history."""
        return {"rows_seen": self.rows_seen, "rows_buffered": len(self.buffer), "refits": list(self.history)}


@ray.remote(max_restarts=-1)
class TrainerActor:
    """Ray actor around TrainerCore; sends each new version to the rollout controller."""

    def __init__(self, cfg: TrainerConfig, feature_names: list[str], registry_uri: str,
                 controller_name: str | None, namespace: str | None) -> None:
        self.core = TrainerCore(cfg, feature_names, Registry(registry_uri))
        self.controller = ray.get_actor(controller_name, namespace=namespace) if controller_name else None

    def add_rows(self, rows: pd.DataFrame) -> int | None:
        version = self.core.add_rows(rows)
        if version is not None and self.controller is not None:
            self.controller.deploy.remote(version, f"refit ({self.core.history[-1]['trigger']})")
        return version

    def stats(self) -> dict[str, Any]:
        return self.core.stats()
