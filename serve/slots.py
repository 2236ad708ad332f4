"""A model slot: one registered version loaded and ready to predict.

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

from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from streamfit.errors import StreamfitError


class FeatureMismatchError(StreamfitError):
    """A version's feature list differs from what the serving path computes."""


@dataclass
class ModelSlot:
    """A booster of one version, held under a slot name (blue or green)."""

    name: str
    version: int
    booster: xgb.Booster
    features: list[str]

    @classmethod
    def from_registry(cls, name: str, version: int, booster: xgb.Booster, meta: dict,
                      expected_features: list[str]) -> "ModelSlot":
        """Build a slot, refusing a version whose feature list does not match the serving path."""
        feats = list(meta.get("features", []))
        if feats != list(expected_features):
            raise FeatureMismatchError(f"v{version} expects features {feats}, serving computes {expected_features}")
        return cls(name, version, booster, feats)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Positive-class probabilities for rows of ``x`` (columns in feature order)."""
        return np.asarray(self.booster.inplace_predict(x), dtype=float).reshape(-1)
