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
    verified: bool | str | None = None  # True, or why it failed; None when there is no recorded sample

    @classmethod
    def from_registry(cls, name: str, version: int, booster: xgb.Booster, meta: dict,
                      expected_features: list[str], schema_hash: str | None = None) -> "ModelSlot":
        """Build a slot, refusing a version whose features or schema differ from the serving path's,
        and check that it reproduces the predictions recorded in the registry for a fixed sample."""
        feats = list(meta.get("features", []))
        if feats != list(expected_features):
            missing = [f for f in expected_features if f not in feats]
            extra = [f for f in feats if f not in expected_features]
            raise FeatureMismatchError(
                f"v{version} feature list differs from the serving path's: missing {missing}, unexpected {extra}"
                + ("" if missing or extra else " (same names, other order)"))
        if schema_hash is not None and meta.get("schema_hash") not in (None, schema_hash):
            raise FeatureMismatchError(f"v{version} schema hash {meta.get('schema_hash')} != serving {schema_hash}")
        booster.set_param({"nthread": 1})  # a single request gains nothing from threads; replicas scale out
        slot = cls(name, version, booster, feats)
        slot.verified = slot.verify(meta.get("verify"))
        return slot

    def verify(self, sample: dict | None) -> bool | str | None:
        """True if the booster reproduces ``sample['p']`` on ``sample['x']`` (to 1e-6), else why not."""
        if not sample or not sample.get("x"):
            return None
        got = self.predict(np.asarray(sample["x"], dtype=float))
        want = np.asarray(sample["p"], dtype=float)
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-6):
            return f"v{self.version} predictions differ from the registry's recorded sample"
        return True

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Positive-class probabilities for rows of ``x`` (columns in feature order)."""
        return np.asarray(self.booster.inplace_predict(x), dtype=float).reshape(-1)
