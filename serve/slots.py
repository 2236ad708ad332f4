"""A model slot: one registered version loaded and ready to predict.

A slot predicts what its version's task predicts (``ModelSlot.predict``): a probability per row
(binary), a value per row (regression), or a probability per class, (n, k) (multiclass). A version
with categorical fields takes rows whose categorical columns are text (an object array); the
slot encodes them with the version's own ``CategoryDictionary`` (a value unseen at training time
is missing, and reported per field by ``ModelSlot.score``). A version whose features, schema,
task, classes or categorical fields differ from the serving config's is refused when loaded
(``FeatureMismatchError`` naming the difference).

Example:
    >>> import numpy as np, xgboost as xgb
    >>> bst = xgb.train({"max_depth": 2, "objective": "binary:logistic"},
    ...                 xgb.DMatrix(np.eye(2), label=[0, 1], feature_names=["a", "b"]), 2)
    >>> slot = ModelSlot("blue", 7, bst, ["a", "b"])
    >>> p = slot.predict(np.array([[1.0, 0.0]]))
    >>> p.shape, bool(0.0 <= p[0] <= 1.0)
    ((1,), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Collection

import numpy as np
import pandas as pd
import xgboost as xgb

from streamfit.errors import StreamfitError
from streamfit.registry import VersionTask, task_difference, version_task
from streamfit.task import Task

if TYPE_CHECKING:
    from streamfit.config import FeaturesConfig, ModelConfig

Unseen = dict[str, np.ndarray]  # categorical field -> which rows held a category unseen at training time


class FeatureMismatchError(StreamfitError):
    """A version's feature list (or task, classes, categorical fields) differs from the serving path's."""


def _binary() -> VersionTask:
    return version_task({})


@dataclass
class ModelSlot:
    """A booster of one version, held under a slot name (blue or green)."""

    name: str
    version: int
    booster: xgb.Booster
    features: list[str]
    verified: bool | str | None = None  # True, or why it failed; None when there is no recorded sample
    task: VersionTask = field(default_factory=_binary)  # what the version predicts, and its dictionaries

    @classmethod
    def from_registry(cls, name: str, version: int, booster: xgb.Booster, meta: dict,
                      expected_features: list[str], schema_hash: str | Collection[str] | None = None,
                      model: ModelConfig | None = None, features_cfg: FeaturesConfig | None = None) -> "ModelSlot":
        """Build a slot, refusing a version whose task (with ``model`` and ``features_cfg``), features or schema
        (``schema_hash``: the serving one, or several accepted) differ from the serving path's, and check that
        it reproduces the predictions recorded in the registry for a fixed sample."""
        if model is not None and features_cfg is not None:
            # First: a version of another task also computes other label-history features; name the cause.
            why = task_difference({"version": version, **meta}, model, features_cfg)
            if why:
                raise FeatureMismatchError(why)
        feats = list(meta.get("features", []))
        if feats != list(expected_features):
            missing = [f for f in expected_features if f not in feats]
            extra = [f for f in feats if f not in expected_features]
            raise FeatureMismatchError(
                f"v{version} feature list differs from the serving path's: missing {missing}, unexpected {extra}"
                + ("" if missing or extra else " (same names, other order)"))
        accepted = [schema_hash] if isinstance(schema_hash, str) else sorted(schema_hash or [])
        if accepted and meta.get("schema_hash") not in (None, *accepted):
            raise FeatureMismatchError(f"v{version} schema hash {meta.get('schema_hash')} != serving "
                                       f"{' or '.join(accepted)}")
        booster.set_param({"nthread": 1})  # a single request gains nothing from threads; replicas scale out
        slot = cls(name, version, booster, feats, task=version_task(meta))
        slot.verified = slot.verify(meta.get("verify"))
        return slot

    def verify(self, sample: dict | None) -> bool | str | None:
        """True if the booster reproduces ``sample['p']`` on ``sample['x']`` (to 1e-6), else why not
        (categorical columns of the sample hold text)."""
        if not sample or not sample.get("x"):
            return None
        categorical = self.task.categories is not None
        got = self.predict(np.asarray(sample["x"], dtype=object if categorical else float))
        want = np.asarray(sample["p"], dtype=float)
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-6):
            return f"v{self.version} predictions differ from the registry's recorded sample"
        return True

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Per row of ``x`` (columns in feature order): the positive-class probability (binary), the value
        (regression), or every class's probability, shape (n, k) (multiclass)."""
        return self.score(x)[0]

    def score(self, x: np.ndarray) -> tuple[np.ndarray, Unseen]:
        """``predict``'s answer and, per categorical field, which rows held a category the version never saw."""
        cats = self.task.categories
        unseen: Unseen = {}
        data: Any = x
        if cats is not None:
            data, unseen = encode_rows(x, self.features, cats)
        out = np.asarray(self.booster.inplace_predict(data), dtype=float)
        if self.task.spec.task is Task.MULTICLASS:
            return out.reshape(len(x), -1), unseen
        return out.reshape(-1), unseen


def _numbers(col: np.ndarray) -> np.ndarray:
    try:
        return col.astype(float)
    except (TypeError, ValueError):  # None for a missing number (a recorded sample)
        return pd.to_numeric(pd.Series(col, dtype=object), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def encode_rows(x: np.ndarray, features: list[str], cats: Any) -> tuple[pd.DataFrame, Unseen]:
    """Rows of ``x`` (an object array: numbers, and text or None in categorical columns) as the frame a
    booster with native categories takes, and which rows of each categorical field held an unseen category.

    >>> from streamfit.dictionaries import CategoryDictionary
    >>> frame, unseen = encode_rows(np.array([[1.0, "fr"], [2.0, "it"], [3.0, None]], dtype=object), ["x", "c"],
    ...                             CategoryDictionary({"c": ["de", "fr"]}))
    >>> frame["c"].cat.codes.tolist(), unseen["c"].tolist()
    ([1, -1, -1], [False, True, False])
    """
    x = np.asarray(x, dtype=object).reshape(len(x), len(features))
    fields = set(cats.fields)
    frame = pd.DataFrame({f: (x[:, j] if f in fields else _numbers(x[:, j])) for j, f in enumerate(features)})
    encoded, unseen = cats.encode_marked(frame)
    return encoded, {f: rows for f, rows in unseen.items() if f in frame.columns}


def score_batch(slot: ModelSlot, xs: list[np.ndarray]) -> list[dict[str, Any]]:
    """Several requests' rows scored at once, answered per request: the version, its rows' predictions and
    how many categories per field the version never saw among them (a slot deployment's ``@serve.batch``)."""
    preds, unseen = slot.score(np.vstack(xs))
    out, start = [], 0
    for x in xs:
        end = start + len(x)
        out.append({"version": slot.version, "probs": preds[start:end],
                    "unseen": {f: int(rows[start:end].sum()) for f, rows in unseen.items()}})
        start = end
    return out
