"""A version trained on a categorical ``<field>_last`` keeps it in its category dictionary, and a slot loading it
scores an unseen category there as missing, counted (issue 15). No Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamfit.actors.training import TrainerCore
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.config import ModelConfig, TrainerConfig
from streamfit.registry import Registry, task_difference
from streamfit.serve.slots import ModelSlot
from test_categorical_last import CITIES, features, feed, random_stream

REGRESSION = ModelConfig(task="regression")


def trained(tmp_path: Path) -> tuple[Registry, int, list[str]]:
    cfg = features()
    rows = feed([FeatureShard(cfg, model=REGRESSION)], random_stream(40))
    names = cfg.feature_names(REGRESSION)
    registry = Registry(str(tmp_path / "reg"))
    core = TrainerCore(TrainerConfig(refit_every_rows=600, num_boost_round=10, drift_detector=None,
                                     min_rows_between=0), names, registry, model=REGRESSION,
                       categorical=cfg.categorical_columns(REGRESSION))
    version = core.add_rows(rows)
    assert version == 1
    return registry, version, names


def test_a_version_keeps_last_city_categories_and_a_slot_counts_an_unseen_one(tmp_path: Path) -> None:
    registry, version, names = trained(tmp_path)
    booster, meta = registry.load(version)
    cats = meta["categories"]["categories"]
    assert sorted(cats) == ["city", "city_last"] and set(cats["city_last"]) <= set(CITIES) and len(cats["city_last"]) > 50
    slot = ModelSlot.from_registry("blue", version, booster, meta, names)
    assert slot.verified is True  # the recorded sample (text in city and city_last) is reproduced
    row = np.array([[0.0] * len(names)] * 3, dtype=object)
    city, last = names.index("city"), names.index("city_last")
    row[:, city] = CITIES[0]
    row[:, last] = [CITIES[1], "nowhere", None]
    pred, unseen = slot.score(row)
    assert pred.shape == (3,) and np.isfinite(pred).all()
    assert unseen["city_last"].tolist() == [False, True, False] and unseen["city"].tolist() == [False] * 3
    missing = row.copy()
    missing[1, last] = None
    assert slot.predict(missing)[1] == pytest.approx(pred[1])  # unseen scores as missing


def test_the_serving_config_accepts_a_version_with_last_city(tmp_path: Path) -> None:
    registry, version, _ = trained(tmp_path)
    assert task_difference({"version": version, **registry.meta(version)}, REGRESSION, features()) == ""
