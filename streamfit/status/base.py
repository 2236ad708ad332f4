"""The status models' base: unknown keys kept, request figures and accuracy per version.

Example:
    >>> Accuracy.model_validate({"labelled": 40, "accuracy": 0.9}).text()
    '0.900 (n=40)'
    >>> Accuracy.model_validate({"labelled": 40, "rmse": 2.5, "mae": 2.0}).named()
    'rmse 2.500 · mae 2.000 (n=40)'
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from streamfit.request_stats import empty_stats, summary


class Open(BaseModel):
    """Base of every status model: unknown keys are kept; non-finite floats travel as strings in JSON."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")


def _str_keys(value: Any) -> Any:
    """Versions key some dicts as ints inside the actors and as strings in JSON: accept both."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


# -- request figures and accuracy -----------------------------------------------------------
class SlotSummary(Open):
    """Requests, errors and latency percentiles of one slot over some span."""

    requests: int = 0
    errors: int = 0
    error_rate: Optional[float] = None
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None


class RequestFigures(Open):
    """One slot's cumulative request counters and histograms (summed over Router replicas)."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = Field(default_factory=lambda: empty_stats()["latency"])
    preds: list[int] = Field(default_factory=lambda: empty_stats()["preds"])

    def summary(self) -> SlotSummary:
        """Requests, errors, error rate, p50 and p99."""
        return SlotSummary.model_validate(summary(self.model_dump()))


class Accuracy(Open):
    """How one version did on labelled rows (served requests, ``source="served"``, or the stream), in its task's
    metrics: accuracy, logloss (and AUC for binary) for classes; RMSE, MAE (and pinball) for regression."""

    labelled: int
    accuracy: Optional[float]  # always in the JSON: null for a regression version
    logloss: Optional[float] = None
    auc: Optional[float] = None
    rmse: Optional[float] = None
    mae: Optional[float] = None
    pinball: Optional[float] = None
    source: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _regression_has_no_accuracy(cls, data: Any) -> Any:
        if isinstance(data, dict) and "accuracy" not in data and "rmse" in data:
            return {**data, "accuracy": None}
        return data

    def text(self) -> str:
        """``0.912 (n=340)``; a regression version: ``rmse 2.500 · mae 2.000 (n=340)``."""
        if self.accuracy is not None:
            return f"{self.accuracy:.3f} (n={self.labelled})"
        errors = " · ".join(f"{k} {v:.3f}" for k, v in (("rmse", self.rmse), ("mae", self.mae),
                                                          ("pinball", self.pinball)) if v is not None)
        return f"{errors or '–'} (n={self.labelled})"

    def named(self) -> str:
        """``text()`` naming its metric: ``accuracy 0.912 (n=340)``, ``rmse 2.500 · mae 2.000 (n=340)``."""
        return f"accuracy {self.text()}" if self.accuracy is not None else self.text()

    def headline(self) -> tuple[str, Optional[float]]:
        """The metric a version is shown by, and its value: accuracy for classes, RMSE for regression."""
        if self.accuracy is not None or self.rmse is None:
            return "accuracy", self.accuracy
        return "rmse", self.rmse


ByVersion = Annotated[dict[str, Accuracy], BeforeValidator(_str_keys)]
"""Accuracy per version, keyed by the version number as a string."""
