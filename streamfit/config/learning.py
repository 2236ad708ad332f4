"""Config of the training plane: what the model predicts (``model``), when the trainer refits, how, and the gate.

Example:
    >>> ModelConfig(task="multiclass", classes=["cat", "dog", "emu"]).task_spec().task.value
    'multiclass'
    >>> ModelConfig(task="regression", objective="reg:absoluteerror").task_spec().gate_metric
    'mae'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from streamfit.config.base import Strict as _Strict
from streamfit.task import TaskSpec

# performance trigger -> the metric it watches; accuracy_below fires below its threshold, the others above
PERFORMANCE_TRIGGERS = {"accuracy_below": "accuracy", "logloss_above": "logloss", "rmse_above": "rmse",
                        "mae_above": "mae", "pinball_above": "pinball"}

if TYPE_CHECKING:
    from streamfit.dictionaries import LabelDictionary

GateMetric = Literal["logloss", "auc", "accuracy", "rmse", "mae", "pinball"]


class ModelConfig(_Strict):
    """What the model predicts: a 0/1 outcome (binary), one of ``classes`` (multiclass) or a quantity (regression).

    For multiclass, ``classes`` is the label dictionary: class i is the i-th entry, for every version
    trained under this config, and a label outside it is rejected at ingest (``bad_label:unknown_class``).
    """

    task: Literal["binary", "multiclass", "regression"] = "binary"
    objective: Literal["reg:squarederror", "reg:absoluteerror", "reg:quantileerror"] | None = Field(
        None, description="regression only: XGBoost's objective (default reg:squarederror)")
    quantile_alpha: float | None = Field(None, gt=0, lt=1, description="reg:quantileerror only: the quantile fitted "
                                                                       "(default 0.5)")
    classes: list[str | int] | None = Field(None, description="multiclass only (required): the class names, in "
                                                              "class-index order")

    @model_validator(mode="after")
    def _fits_the_task(self) -> "ModelConfig":
        if self.objective is not None and self.task != "regression":
            raise ValueError(f"@objective: {self.objective!r} is for task regression, not {self.task}")
        if self.quantile_alpha is not None and self.objective != "reg:quantileerror":
            raise ValueError("@quantile_alpha: only with objective reg:quantileerror")
        if self.task != "multiclass":
            if self.classes is not None:
                raise ValueError(f"@classes: only for task multiclass, not {self.task}")
            return self
        if self.classes is None:
            raise ValueError("@classes: required for task multiclass (the class names, in index order)")
        from streamfit.dictionaries import LabelDictionary  # pandas: only for a multiclass config

        try:
            keys = LabelDictionary(self.classes).classes
        except ValueError as err:
            raise ValueError(f"@classes: {err}") from None
        if len(keys) != len(self.classes):
            raise ValueError(f"@classes: repeated class (2, 2.0 and '2' are one class): {self.classes}")
        if len(keys) < 2:
            raise ValueError(f"@classes: at least 2 distinct classes, got {self.classes}")
        self.classes = keys  # canonical keys: 2 and "2.0" are class "2", as labels are matched
        return self

    def task_spec(self) -> TaskSpec:
        """The task's vocabulary (XGBoost params, gate metric and direction, row error, metrics)."""
        alpha = self.quantile_alpha if self.quantile_alpha is not None else 0.5
        return TaskSpec(self.task, objective=self.objective, quantile_alpha=alpha)

    def label_dictionary(self) -> LabelDictionary | None:
        """The label dictionary of a multiclass task (None for the others)."""
        from streamfit.dictionaries import LabelDictionary

        return LabelDictionary(self.classes) if self.classes is not None else None



class TrainerConfig(_Strict):
    """When and how the trainer refits XGBoost, and the gate a candidate must pass.

    The defaults — a refit every 500 labelled rows on a sliding window, plus a drift trigger
    that cuts the window at the alarm and follows up on rows after it — were chosen with
    ``streamfit bench quality`` (prequential accuracy on 50,000-row streams with and without
    drift): small refit intervals mattered most; a long window is safe once a drift alarm cuts it.
    On a stream whose labels persist, the fitted model fell below predicting the entity's
    previous label (89.6 % against 90.9 %): ``min_child_weight`` 10 (was XGBoost's 1) and the
    no_change candidate (``baseline_candidate``) made it 90.9 %, and 83.4 % on the drifting
    stream (was 83.2 %), at less CPU time.
    """

    # -- triggers (any that is set can fire; each refit records which one did) --
    refit_every_rows: int | None = Field(500, gt=0, description="volume: after N new labelled rows")
    refit_every_s: float | None = Field(None, gt=0, description="time: after N seconds of event time")
    accuracy_below: float | None = Field(
        None, gt=0, lt=1, description="performance: live version's accuracy on the newest labelled rows below this"
    )
    logloss_above: float | None = Field(
        None, gt=0, description="performance: live version's log loss on the newest labelled rows above this "
                                "(binary, multiclass)")
    rmse_above: float | None = Field(None, gt=0, description="performance: live version's RMSE on the newest "
                                                             "labelled rows above this, in label units (regression)")
    mae_above: float | None = Field(None, gt=0, description="performance: live version's MAE on the newest labelled "
                                                            "rows above this, in label units (regression)")
    pinball_above: float | None = Field(None, gt=0, description="performance: live version's pinball loss above this "
                                                                "(regression with objective reg:quantileerror)")
    accuracy_window: int = Field(1000, gt=0, description="labelled rows the live performance is measured over")
    drift_detector: Literal["page_hinkley", "adwin"] | None = Field(
        "page_hinkley", description="drift: a detector on the live version's error stream"
    )
    psi_above: float | None = Field(None, gt=0, description="drift: any feature's PSI against the live reference above this")
    min_rows_between: int = Field(500, ge=0, description="no automatic refit before this many new rows")
    # -- how --
    training_features: Literal["served", "point_in_time"] = Field(
        "served", description="a scored event's training row: the feature vector it was served with (what the "
                              "model saw), or the one recomputed when the event arrived in the stream")
    strategy: Literal["full", "incremental"] = "full"
    window_rows: int = Field(8000, gt=0, description="full refit on the newest N labelled rows")
    window_s: float | None = Field(None, gt=0, description="... and at most the newest N seconds of event time")
    drift_window_rows: int = Field(1000, gt=0, description="after a drift alarm, refit on only the newest N rows")
    grow_window_after_drift: bool = Field(
        True, description="after a drift refit, full refits learn only from rows since the alarm (at least "
                          "drift_window_rows), growing back to window_rows"
    )
    drift_followups: int = Field(
        3, ge=0, description="after a drift refit, refit again once 1x, 2x, 4x … drift_window_rows new rows "
                             "have arrived (this many times), so the new concept is learnt from rows after the alarm"
    )
    incremental_trees: int = Field(10, gt=0, description="trees added per incremental update")
    max_trees: int = Field(300, gt=0, description="an incremental update past this many trees is a full refit")
    # -- gate --
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    gate_metric: GateMetric = Field(
        "logloss", description="one of the task's metrics (binary: logloss, auc, accuracy; multiclass: logloss, "
                               "accuracy; regression: rmse, mae, pinball with the quantile objective); default: "
                               "the task's own loss (logloss; rmse, mae or pinball by the regression objective)")
    gate_margin: float = Field(0.0, ge=0, description="a candidate may be worse than live by at most this")
    # -- the model --
    # 40 rounds at XGBoost's own eta (0.3) instead of 60 at 0.2: on bench quality's five built-in streams the
    # default policy used 18-39 % less CPU, accuracy within 0.16 points, RMSE within 0.7 %.
    num_boost_round: int = Field(40, gt=0)
    max_depth: int = Field(5, gt=0)
    eta: float = Field(0.3, gt=0)
    min_child_weight: float = Field(10.0, ge=0, description="XGBoost: least hessian sum in a leaf (larger: fewer, surer splits)")
    max_bin: int = Field(64, ge=2, description="XGBoost: histogram bins per feature (XGBoost's own default is 256; "
                         "64 fitted 17-38 % faster on bench quality's four streams, accuracy within 0.2 points)")
    baseline_candidate: bool = Field(
        True, description="each full refit also fits the no_change baseline as a model (trees on the entity's "
                          "previous label, label_last, alone); the fitted candidate is kept only if it beats that "
                          "on the holdout with confidence (baseline_z), else the baseline model is the candidate")
    baseline_z: float = Field(2.0, ge=0, description="paired rows the candidate gets right and the baseline wrong, "
                                                    "minus the reverse, must exceed z * sqrt(their sum)")
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved for the trainer actor")
    distributed_above_rows: int | None = Field(
        None, gt=0, description="fit with Ray Train's XGBoostTrainer when the training set is larger"
    )
    distributed_workers: int = Field(2, gt=0)

    def performance_triggers(self) -> dict[str, tuple[str, float]]:
        """The performance triggers set: field -> (the metric it watches, its threshold)."""
        return {f: (m, getattr(self, f)) for f, m in PERFORMANCE_TRIGGERS.items() if getattr(self, f) is not None}

    def task_problem(self, spec: TaskSpec) -> str | None:
        """Why a performance trigger does not fit the task (``@trainer.<field>: ...``, the config's field path),
        or None.

        >>> from streamfit.task import Task
        >>> TrainerConfig(rmse_above=2.0).task_problem(TaskSpec(Task.BINARY))
        '@trainer.rmse_above: a binary model has no rmse; its performance triggers: accuracy_below, logloss_above'
        """
        names = spec.metric_names()
        for field, (metric, _) in self.performance_triggers().items():
            if metric not in names:
                fits = ", ".join(f for f, m in PERFORMANCE_TRIGGERS.items() if m in names)
                what = f"{spec.task.value} ({spec.objective})" if spec.objective else spec.task.value
                return f"@trainer.{field}: a {what} model has no {metric}; its performance triggers: {fits}"
        return None
