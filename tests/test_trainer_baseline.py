"""The trainer's no_change candidate (no Ray): each full refit also fits the entity's previous label as a
model, and the fitted candidate replaces it only when it is surely better on the holdout; an entity
without a previous label gets the window's majority.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamfit.actors.training import TrainerCore
from streamfit.config import TrainerConfig


def test_the_default_trainer_keeps_the_no_change_model_when_its_candidate_is_not_surely_better():
    # Labels copy the entity's previous label; the field is noise: the fitted candidate is no better.
    rng = np.random.default_rng(5)
    last = rng.integers(0, 2, 600).astype(float)
    label = np.where(rng.random(600) < 0.85, last, 1 - last)
    rows = pd.DataFrame({"event_time": np.arange(600.0), "x": rng.normal(size=600), "label_last": last, "label": label})
    core = TrainerCore(TrainerConfig(), ["x", "label_last"], None)
    core.add_rows(rows)  # 600 rows: a volume refit
    attempt = core.history[-1]
    assert attempt["model"] == "no_change" and attempt["accepted"], attempt
    assert core.champion_meta["model"] == "no_change" and core.champion.num_boosted_rounds() == 20
    p = core.champion.inplace_predict(np.array([[5.0, 1.0], [-5.0, 0.0], [0.0, 1.0]]))
    assert ((p >= 0.5) == [True, False, True]).all()
    # A field that decides the label outright: the fitted candidate wins with confidence.
    core = TrainerCore(TrainerConfig(), ["x", "label_last"], None)
    core.add_rows(rows.assign(label=(rows["x"] > 0).astype(float)))
    attempt = core.history[-1]
    assert "model" not in attempt and attempt["accepted"] and core.champion_meta["model"] == "fitted", attempt
    assert attempt["vs_no_change"]["wins"] > 40 > attempt["vs_no_change"]["losses"]


def test_the_no_change_model_answers_an_entity_without_a_label_with_the_window_majority():
    rng = np.random.default_rng(6)
    for share_of_ones, expected in ((0.8, True), (0.2, False)):
        last = (rng.random(800) < share_of_ones).astype(float)
        rows = pd.DataFrame({"event_time": np.arange(800.0), "x": rng.normal(size=800), "label_last": last,
                             "label": np.where(rng.random(800) < 0.9, last, 1 - last)})
        core = TrainerCore(TrainerConfig(), ["x", "label_last"], None)
        core.add_rows(rows)
        assert core.champion_meta["model"] == "no_change"
        p = core.champion.inplace_predict(np.array([[0.0, np.nan], [0.0, 0.0], [0.0, 1.0]]))
        assert ((p >= 0.5) == [expected, False, True]).all(), p
