"""The configs in examples/ (one per task) load, say their task, and drive the stream and the trainer (no Ray).

- each loads with the config loader: the task, its classes, its categorical fields, the gate metric
  the task defaults to, the label-history features of the task;
- the embedded synthetic stream of each config sends events and labels the config accepts;
- a few batches through the in-process stream plane (``LocalRunner``) give training rows with the
  config's feature names, and the trainer of the task fits a version on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamfit.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXPECTED = {  # file -> (task, classes, categorical fields, gate metric, the last feature names)
    "regression": ("regression", None, [], "rmse", ["label_last", "label_mean_5m", "label_std_5m", "label_count_5m"]),
    "multiclass": ("multiclass", ["low", "mid", "high"], [], "logloss",
                   ["label_last", "label_rate_c0_5m", "label_rate_c1_5m", "label_rate_c2_5m", "label_count_5m"]),
    "categorical": ("binary", None, ["country", "device"], "logloss",
                    ["label_last", "label_rate_5m", "label_count_5m"]),
}


def test_there_is_one_example_per_task() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_loads_with_its_task(name: str) -> None:
    task, classes, categorical, gate, tail = EXPECTED[name]
    cfg = load_config(EXAMPLES / f"{name}.yaml")
    assert cfg.model.task == task and cfg.model.classes == classes
    assert cfg.features.categorical_fields() == categorical and cfg.trainer.gate_metric == gate
    names = cfg.feature_names()
    assert names[:len(cfg.features.fields)] == [f.name for f in cfg.features.fields]
    assert names[names.index("label_last"):][:len(tail)] == tail
    # Paced for a demo like the built-in one (`streamfit demo` without --config).
    assert cfg.trainer.refit_every_rows == 20_000 and cfg.rollout.bake_s == 5.0
    assert "streamfit demo --config examples/" in (EXAMPLES / f"{name}.yaml").read_text()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_streams_and_trains_in_process(name: str) -> None:
    from streamfit.actors.stream import FramesSource, LocalRunner, synthetic_source
    from streamfit.actors.training import TrainerCore
    from streamfit.schema import KIND, LABEL_KIND, validate

    cfg = load_config(EXAMPLES / f"{name}.yaml")
    cfg.stream.bad_row_rate = 0.0
    cfg.stream.batch_size = 500
    source = synthetic_source(cfg.stream, cfg.features, cfg.model)
    batches = [source.read(p)[0] for p in range(12)]
    for b in batches:
        _clean, reason = validate(b, cfg.features, model=cfg.model)
        assert (reason == "").all(), sorted(set(reason) - {""})
    labels = np.concatenate([b.loc[b[KIND] == LABEL_KIND, "label"].to_numpy(dtype=object) for b in batches])
    if cfg.model.classes:
        assert set(labels.tolist()) == set(cfg.model.classes)
    parts = []
    runner = LocalRunner(cfg.features, FramesSource(batches), on_rows=lambda rows, _clock: parts.append(rows),
                         model=cfg.model)
    runner.run()
    rows = [p for p in parts if len(p)]
    assert rows and all(set(cfg.feature_names()) <= set(p.columns) for p in rows)
    core = TrainerCore(cfg.trainer.model_copy(update={"refit_every_rows": None, "drift_detector": None}),
                       cfg.feature_names(), None, model=cfg.model,
                       categorical=cfg.features.categorical_columns(cfg.model))
    for p in rows:
        core.add_rows(p)
    core.request_refit()
    assert core.history and core.history[-1]["accepted"], core.history[-1:]
    assert core.fit.spec.task.value == cfg.model.task
