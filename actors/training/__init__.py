"""The training plane: when to refit (policy and drift detectors), how (in-process or Ray Train), the gate.

Owns: the ``RefitPolicy`` (time, volume, performance, drift, PSI and manual triggers), the
``TrainerCore`` (sliding window of labelled rows, full or incremental refits, the gate
against the live version, registration) and its ``TrainerActor`` shell, the ``RowLog`` (the
training rows and the trainer's state as Parquet segments, what a restarted trainer resumes
from), the ``TaskFit`` (the task's side of a fit: binary, multiclass or regression, categorical fields as
native XGBoost categories, the task and dictionaries a version keeps) and the distributed fit with Ray
Train's ``XGBoostTrainer``.

May import: the core package ``streamfit`` only.

Exposes the names in ``__all__`` (imported lazily).
"""

from streamfit.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "fit_distributed": "distributed_fit",
    "Decision": "policy",
    "RefitPolicy": "policy",
    "TrainerActor": "trainer",
    "TrainerCore": "trainer",
    "RowLog": "row_log",
    "better_or_close": "gate",
})
