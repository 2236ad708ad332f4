"""`streamfit bench quality`'s baselines and its persistent-label stream (no Ray).

- ``no_change`` and ``majority`` on a six-row hand-made stream, predictions checked by hand
  (labels reach the learners only when their chunk arrives);
- the persistent stream keeps an entity's label about as often as its parameter says, and
  with persistence 0 it is the drifting stream;
- on short persistent streams (three seeds) the default policy is not below ``no_change``;
- the report: baselines in each stream's table, the verdict, the summary of several streams.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamfit.scripts import quality
from streamfit.scripts.baselines import NAN, Majority, NoChange, replay_online, timeline
from streamfit.scripts.quality_streams import DriftingStream, PersistentStream, same_as_previous


def hand_made() -> quality.Replay:
    """Six rows, entities a b a a c a; chunks of two reach the trainer at 1.5, 3.5 and 5.5. ``label_last``
    is what the feature store knew at each event (labels reach it sooner than the trainer)."""
    rows = pd.DataFrame({"event_id": [f"e{i}" for i in range(6)], "entity": list("abaaca"),
                         "event_time": np.arange(6.0), "label_last": [NAN, NAN, 1.0, 0.0, NAN, 1.0],
                         "label": [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]})
    return quality.Replay(rows, ["label_last"], np.array([0, 2, 4, 6]), np.array([1.5, 3.5, 5.5]), {})


def test_timeline_predicts_each_row_before_its_label_arrives():
    r = hand_made()
    order = timeline(r.rows["event_time"].to_numpy(), r.bounds, r.arrival).tolist()
    assert order == [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]


def test_no_change_predicts_the_entity_previous_label():
    # r0 a, r1 b: nothing known -> 0 (wrong, right); the trainer learns a=1, b=0 (newest 0).
    # r2 a: label_last 1 (wrong); r3 a: label_last 0, r2's label, not yet learnt by the trainer (wrong);
    # the trainer learns a=0, a=1. r4 c: nothing of its own -> the majority of 1, 0, 0, 1: a tie, the newest, 1 (wrong);
    # r5 a: label_last 1 (right).
    correct = quality.replay_baseline(hand_made(), "no_change").correct
    assert correct.tolist() == [False, True, False, False, False, True]
    # Without the feature store's label_last, only what the trainer has learnt counts:
    # r2 and r3 both get a's label from r0 (1): wrong, right; r5 gets r3's (1): right.
    r = hand_made()
    order = timeline(r.rows["event_time"].to_numpy(), r.bounds, r.arrival)
    y = r.rows["label"].to_numpy().astype(int)
    inputs = [(e, NAN) for e in r.rows["entity"]]
    assert replay_online(order, inputs, y, NoChange()).tolist() == [False, True, False, True, False, True]


def test_majority_predicts_the_most_frequent_recent_label():
    # r0, r1: nothing learnt -> 0 (wrong, right); then 1, 0 arrive: a tie -> the newest (0) for r2
    # (right) and r3 (wrong); then 0, 1 arrive: two of each, a tie -> the newest (1) for r4 (wrong), r5 (right).
    correct = quality.replay_baseline(hand_made(), "majority").correct
    assert correct.tolist() == [False, True, True, False, False, True]
    m = Majority(window=2)  # only the newest two count
    for y in (1, 1, 1, 0, 0):
        m.learn_one(None, y)
    assert m.predict_one() == 0
    m.learn_one(None, 1)
    assert m.predict_one() == 1  # 0, 1: a tie, the newest wins


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_persistent_stream_keeps_labels_about_as_often_as_its_parameter(seed):
    s = PersistentStream(rows=20_000, seed=seed)
    assert 0.8 <= s.persistence <= 0.9
    ent, _x, y = s.draw()
    same = same_as_previous(ent, y)
    # Kept with p; otherwise a fresh label, which equals the previous one about half the time.
    assert s.persistence + 0.3 * (1 - s.persistence) <= same <= s.persistence + 0.8 * (1 - s.persistence), same
    assert 0.4 < y.mean() < 0.6
    assert len({PersistentStream(rows=10, seed=k).persistence for k in range(5)}) == 5  # drawn per seed


def test_persistent_stream_without_persistence_is_the_drifting_stream():
    ent, x, y = PersistentStream(rows=3000, seed=4, persistence=0.0).draw()
    ent2, x2, y2 = DriftingStream(rows=3000, seed=4).draw()
    assert (ent == ent2).all() and np.array_equal(x, x2) and np.array_equal(y, y2)
    low, high = (same_as_previous(*PersistentStream(rows=3000, seed=4, persistence=p).draw()[::2]) for p in (0.0, 0.95))
    assert high > low + 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_policy_is_not_below_no_change_on_a_persistent_stream(seed):
    res = quality.bench_quality("persistent", rows=8000, seed=seed, methods=["default"], log=lambda _m: None)
    default, no_change = res["methods"]["default"]["accuracy"], res["baselines"]["no_change"]["accuracy"]
    assert default >= no_change, (default, no_change)
    assert no_change > res["baselines"]["majority"]["accuracy"] + 0.2  # the labels do persist


def test_the_report_shows_baselines_the_verdict_and_a_summary_of_several_streams():
    from rich.console import Console

    one = {"methods": {"static": {"accuracy": 0.5, "refits": 0, "seconds": 1.0},
                       "default": {"accuracy": 0.9, "refits": 9, "seconds": 10.0},
                       "river_arf": {"accuracy": 0.8, "refits": 3, "seconds": 40.0}},
           "baselines": {"no_change": {"accuracy": 0.85, "seconds": 0.1}, "majority": {"accuracy": 0.5, "seconds": 0.1}},
           "dataset": "d", "rows": 10, "scored_rows": 8, "warmup_rows": 2, "feature_seconds": 1.0, "wall_seconds": 2.0}
    assert quality.verdict(one) == {"best_baseline": "no_change", "points": 5.0, "cpu_share_of_arf": 0.25}
    console = Console(record=True, width=80)
    quality.print_report({"streams": {"synthetic": one, "persistent": one}}, console)
    lines = [" ".join(line.replace("│", " ").split()) for line in console.export_text().splitlines()]
    assert "no_change 85.00 % — 0.1" in lines and "majority 50.00 % — 0.1" in lines
    text = " ".join(lines)
    assert text.count("(no_change): +5.00 points, at 0.25x River ARF's CPU time") == 2
    assert "persistent 90.00 85.00 50.00 80.00 50.00 +5.00 0.25x" in lines  # the summary, within 80 columns
