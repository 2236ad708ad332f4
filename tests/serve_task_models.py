"""Test helper: a serving config with a categorical field, and tiny boosters of each task registered as the
trainer registers them (meta keys as ``actors/training/task_fit.py``'s ``TaskFit.describe`` writes them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from streamfit.config import FeaturesConfig, FieldSpec, ModelConfig
from streamfit.dictionaries import CategoryDictionary
from streamfit.registry import Registry

COLOURS = {"red": 2.0, "green": -1.0, "blue": 0.5}
CLASSES = ["low", "mid", "high"]
REGRESSION = ModelConfig(task="regression")
MULTICLASS = ModelConfig(task="multiclass", classes=CLASSES)
BINARY = ModelConfig()


def features_cfg(categorical: bool = True) -> FeaturesConfig:
    """Two raw fields (x0 numeric, colour categorical unless told), one window, label history."""
    fields = [FieldSpec(name="x0", min=-50, max=50)]
    fields.append(FieldSpec(name="colour", type="categorical") if categorical else FieldSpec(name="colour"))
    return FeaturesConfig(fields=fields, windows_s=[60.0], aggregates=[{"field": "x0", "ops": ["mean"]}],
                          label_history={"windows_s": [60.0]})


def frame(names: list[str], n: int, seed: int, categorical: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Model rows (colour as text, some missing) and a hidden score: x0 + the colour's effect."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {name: rng.normal(size=n) for name in names}
    colour = rng.choice(list(COLOURS), n).astype(object)
    colour[rng.random(n) < 0.05] = None
    score = data["x0"] + pd.Series(colour).map(COLOURS).fillna(0.0).to_numpy()
    if categorical:
        data["colour"] = colour
    return pd.DataFrame(data)[names], score


def fit_version(registry: Registry, model: ModelConfig, features: FeaturesConfig, seed: int = 0) -> int:
    """Fit a tiny booster of ``model``'s task on ``features``' model rows and register it with its meta."""
    names = features.feature_names(model)
    categorical = features.categorical_fields()
    rows, score = frame(names, 400, seed, categorical=bool(categorical))
    spec = model.task_spec()
    params: dict[str, Any] = {"max_depth": 3, "eta": 0.5, "nthread": 1}
    if spec.task.value == "multiclass":
        params.update(spec.xgb_params(len(CLASSES)))
        label = np.digitize(score, [-1.0, 1.0]).astype(float)
    elif spec.task.value == "regression":
        params.update(spec.xgb_params())
        label = score * 10.0
    else:
        params.update(spec.xgb_params())
        label = (score > 0).astype(float)
    cats = CategoryDictionary.fit(rows, categorical) if categorical else None
    data = cats.encode(rows) if cats is not None else rows.to_numpy(dtype=float)
    dm = xgb.DMatrix(data, label=label, feature_names=names, enable_categorical=cats is not None)
    booster = xgb.train(params, dm, 10)
    sample = rows.iloc[:8]
    p = np.asarray(booster.inplace_predict(cats.encode(sample) if cats is not None else sample.to_numpy(dtype=float)))
    x = sample.astype(object).where(sample.notna(), None).to_numpy().tolist()
    meta: dict[str, Any] = {"features": names, "schema_hash": features.schema_hash(model), "verify": {"x": x, "p": p.tolist()},
                            "task": spec.task.value, "objective": params["objective"]}
    if spec.task.value == "multiclass":
        meta["labels"] = {"classes": CLASSES}
    if cats is not None:
        meta["categories"] = {"categories": cats.snapshot()["categories"]}
    return registry.register(booster, meta)


def row(names: list[str], colour: Any = "red", x0: float = 1.0) -> dict[str, Any]:
    """One model row for ``/predict``'s ``features``: zeros, x0 and the colour's text."""
    out: dict[str, Any] = {n: 0.0 for n in names}
    out.update(x0=x0, colour=colour)
    return out
