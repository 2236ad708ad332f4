"""Distributed XGBoost refit with Ray Train's ``XGBoostTrainer`` (Ray 2.60, Train V2 API).

When the trainer uses it: small training windows are fitted in-process with
``xgboost.train`` (start-up costs nothing). Above a configured number of training rows,
or when a refit is explicitly asked to be distributed, the trainer calls
:func:`fit_distributed` instead: the rows are handed to Ray Data, split across
``num_workers`` Ray Train workers, and XGBoost's collective (rabit) backend, set up by
Ray Train, builds one model from all shards — the engine for users who outgrow one
machine. Start-up dominates on small data (a 2-worker fit of 20,000 rows took about 1.5
minutes on a 2-CPU local Ray, against well under a second in-process), so keep the
threshold high. In ``actors/trainer.py`` the switch is ``trainer.distributed_above_rows``
(with ``trainer.distributed_workers``); continuation of the champion stays in-process.

The API used, as installed (``ray/train/xgboost/__init__.py`` exports the V2 trainer from
``ray/train/v2/xgboost/xgboost_trainer.py`` because ``RAY_TRAIN_V2_ENABLED`` defaults to on;
the callback is in ``ray/train/xgboost/_xgboost_utils.py``)::

    XGBoostTrainer(train_loop_per_worker, train_loop_config=..., datasets={"train": ds},
                   scaling_config=ray.train.ScalingConfig(num_workers=..., resources_per_worker={"CPU": ...}),
                   run_config=ray.train.RunConfig(storage_path=..., name=...)).fit()
    # in each worker: ray.train.get_dataset_shard("train") -> DataIterator,
    #                 xgboost.train(..., callbacks=[RayTrainReportCallback()])
    # on the caller:  RayTrainReportCallback.get_model(result.checkpoint)

Resources: each worker asks for ``cpus_per_worker`` CPUs (0.5 by default, so two workers
fit beside the pipeline's other actors on a 2-CPU machine) and XGBoost's ``nthread``
defaults to ``max(1, floor(cpus_per_worker))``. The run's checkpoints go to
``storage_path`` (a temporary directory when None; on a multi-node cluster pass storage
every node reaches, such as ``s3://…``); the run directory is deleted once the booster is
loaded. A failure raises :class:`DistributedFitError` naming the cause. Without Ray's
dashboard (``include_dashboard=False``) Ray Train's ``PlacementGroupCleaner`` logs "Failed to
query Ray Train Controller actor state" about once a second during the fit (and, when several
Ray instances run on one machine, its monitor thread stops with "Found multiple active Ray
instances"); it is only a safety net for a crashed controller, and the fit is unaffected.

Example (needs a running Ray; start-up takes tens of seconds)::

    bst = fit_distributed(df, ["x0", "x1"], "label", {"objective": "binary:logistic"}, 50)
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import tempfile
import threading
import uuid
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from streamfit.errors import StreamfitError

logger = logging.getLogger(__name__)

DEFAULT_CPUS_PER_WORKER = 0.5


class DistributedFitError(StreamfitError):
    """A distributed (Ray Train) refit could not run or did not produce a model."""


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker, inside the XGBoost collective context Ray Train sets up."""
    import ray.train
    import xgboost
    from ray.train.xgboost import RayTrainReportCallback

    features, label = config["feature_names"], config["label"]
    shard = ray.train.get_dataset_shard("train").materialize().to_pandas()
    dtrain = xgboost.DMatrix(shard[features], label=shard[label].to_numpy(), feature_names=features)
    xgboost.train(
        config["params"],
        dtrain,
        num_boost_round=config["num_boost_round"],
        callbacks=[RayTrainReportCallback()],  # rank 0 reports the final model as the checkpoint
    )


def _check_inputs(train: pd.DataFrame, feature_names: list[str], label: str, num_boost_round: int,
                  num_workers: int, cpus_per_worker: float) -> None:
    if num_workers < 1:
        raise DistributedFitError(f"num_workers must be at least 1, got {num_workers}")
    if cpus_per_worker <= 0:
        raise DistributedFitError(f"cpus_per_worker must be positive, got {cpus_per_worker}")
    if num_boost_round < 1:
        raise DistributedFitError(f"num_boost_round must be at least 1, got {num_boost_round}")
    if not feature_names:
        raise DistributedFitError("no feature names given")
    missing = [c for c in [*feature_names, label] if c not in train.columns]
    if missing:
        raise DistributedFitError(f"training frame lacks columns {missing}")
    if len(train) < num_workers:
        raise DistributedFitError(f"{len(train)} training rows cannot be split across {num_workers} workers")
    if train[label].isna().any():
        raise DistributedFitError(f"label column {label!r} has missing values")


def _remove_run_dir(storage_path: str, name: str) -> None:
    """Delete ``storage_path/name`` on a local path or any pyarrow filesystem URI; never raises."""
    try:
        if "://" not in storage_path:
            shutil.rmtree(f"{storage_path.rstrip('/')}/{name}", ignore_errors=True)
            return
        import pyarrow.fs as pafs

        fs, root = pafs.FileSystem.from_uri(storage_path)
        path = f"{root.rstrip('/')}/{name}"
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
    except Exception as err:  # cleanup must not hide the result or the original error
        logger.warning("could not remove Ray Train run directory %s/%s: %s", storage_path, name, err)


def fit_distributed(
    train: pd.DataFrame,
    feature_names: list[str],
    label: str,
    params: dict,
    num_boost_round: int,
    num_workers: int = 2,
    storage_path: str | None = None,
    *,
    cpus_per_worker: float = DEFAULT_CPUS_PER_WORKER,
) -> xgb.Booster:
    """Fit one XGBoost booster on ``train`` with ``num_workers`` Ray Train workers.

    Same meaning as ``xgboost.train(params, DMatrix(train[feature_names], label=train[label]),
    num_boost_round)``; the booster carries ``feature_names``. Needs a connected Ray
    (``ray.init`` or running inside a Ray actor).
    """
    import ray
    import ray.data
    import ray.train
    from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer

    feature_names = list(feature_names)
    _check_inputs(train, feature_names, label, num_boost_round, num_workers, cpus_per_worker)
    worker_params = dict(params)
    worker_params.setdefault("nthread", max(1, math.floor(cpus_per_worker)))

    # One block per worker: each worker reads whole blocks of its shard.
    frame = train[[*feature_names, label]].reset_index(drop=True)
    chunks = [frame.iloc[idx] for idx in np.array_split(np.arange(len(frame)), num_workers)]
    dataset = ray.data.from_pandas(chunks)

    own_dir = storage_path is None
    root = tempfile.mkdtemp(prefix="streamfit-raytrain-") if own_dir else storage_path
    name = f"streamfit-fit-{uuid.uuid4().hex[:12]}"
    trainer = XGBoostTrainer(
        _train_loop_per_worker,
        train_loop_config={"feature_names": feature_names, "label": label, "params": worker_params,
                           "num_boost_round": int(num_boost_round)},
        datasets={"train": dataset},
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers,
                                               resources_per_worker={"CPU": cpus_per_worker}),
        run_config=ray.train.RunConfig(storage_path=root, name=name),
    )
    # fit() installs its own SIGINT handler when called on the main thread (to abort the run);
    # put back whatever the caller (a script, a Ray actor) had.
    on_main = threading.current_thread() is threading.main_thread()
    previous_sigint = signal.getsignal(signal.SIGINT) if on_main else None
    try:
        try:
            result = trainer.fit()
        except Exception as err:
            raise DistributedFitError(
                f"distributed XGBoost fit ({num_workers} workers x {cpus_per_worker} CPU, {len(frame)} rows) "
                f"failed: {type(err).__name__}: {err}"
            ) from err
        if result.checkpoint is None:
            raise DistributedFitError(f"distributed XGBoost fit finished without a model checkpoint (run {name})")
        booster = RayTrainReportCallback.get_model(result.checkpoint)
        if booster.num_boosted_rounds() != num_boost_round:
            raise DistributedFitError(
                f"distributed XGBoost fit returned {booster.num_boosted_rounds()} rounds, expected {num_boost_round}"
            )
        if booster.feature_names is None:
            booster.feature_names = feature_names
        return booster
    finally:
        if on_main and previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
        else:
            _remove_run_dir(root, name)
