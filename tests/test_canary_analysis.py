"""The canary analysis and the serving state, without Ray."""

from __future__ import annotations

import numpy as np

from streamfit.config import RolloutConfig
from streamfit.actors.rollout.analysis import canary_verdict
from streamfit.request_stats import SlotStats, minus, percentile_ms, summary
from streamfit.actors.rollout.serving_state import ServingState

CFG = RolloutConfig(min_requests=20, min_labels=30)


def stats(probs, latency_s=0.002, errors=0) -> dict:
    s = SlotStats()
    for i, p in enumerate(probs):
        s.record(latency_s, p, error=i < errors)
    return s.to_dict()


rng = np.random.default_rng(0)
BIMODAL = np.clip(np.concatenate([rng.beta(1, 8, 150), rng.beta(8, 1, 150)]), 0, 1)


def test_an_uninformative_candidate_fails_on_prediction_shift_without_labels():
    ok, reasons, fig = canary_verdict(stats(BIMODAL), stats(np.full(60, 0.5)), None, None, CFG)
    assert not ok and reasons[0].startswith("prediction PSI") and fig["judged_on"] == "prediction shift"


def test_a_similar_candidate_passes():
    ok, reasons, _ = canary_verdict(stats(BIMODAL), stats(BIMODAL[::5]), None, None, CFG)
    assert ok, reasons


def test_labelled_accuracy_settles_it_when_both_versions_have_enough_labels():
    shifted = stats(np.full(60, 0.5))
    ok, reasons, fig = canary_verdict(stats(BIMODAL), shifted, (40, 0.60), (35, 0.90), CFG)
    assert ok and fig["judged_on"] == "labelled accuracy"  # shifted, but more accurate: a post-drift model
    ok, reasons, _ = canary_verdict(stats(BIMODAL), stats(BIMODAL), (40, 0.90), (35, 0.70), CFG)
    assert not ok and reasons == ["accuracy 0.700 vs live 0.900 on labelled requests"]
    ok, reasons, _ = canary_verdict(stats(BIMODAL), shifted, (40, 0.60), (5, 0.90), CFG)
    assert not ok and reasons[0].startswith("prediction PSI")  # too few labels: the shift counts


def test_error_rate_and_latency():
    ok, reasons, _ = canary_verdict(stats(BIMODAL), stats(BIMODAL[::3], errors=5), None, None, CFG)
    assert not ok and reasons[0].startswith("error rate")
    slow_few = stats(BIMODAL[::6], latency_s=0.2)
    assert canary_verdict(stats(BIMODAL), slow_few, None, None, CFG)[0]  # 50 requests: latency not judged
    slow = stats(BIMODAL[::2], latency_s=0.2)
    ok, reasons, _ = canary_verdict(stats(BIMODAL), slow, None, None, CFG)
    assert not ok and reasons[0].startswith("p99 latency")


def test_step_figures_are_differences_of_cumulative_reports():
    before, after = stats(BIMODAL[:10]), stats(BIMODAL)
    d = minus(after, before)
    assert d["requests"] == len(BIMODAL) - 10 and summary(d)["error_rate"] == 0.0
    assert percentile_ms(stats([0.5] * 10, latency_s=0.004)["latency"], 99) >= 4.0


def test_serving_state_counts_a_flip_per_version_change_and_round_trips():
    st = ServingState()
    assert st.stage(1) == "blue" and st.flips == 0
    assert st.stage(2) == "green"
    st.set_weights({"blue": 95, "green": 5})
    st.flip("blue", count=False)  # a canary's share returns: no flip
    assert st.flips == 0 and st.weights == {"blue": 100, "green": 0}
    st.flip("green")
    assert st.flips == 1 and st.live_version() == 2
    again = ServingState()
    again.restore(st.snapshot())
    assert again.snapshot() == st.snapshot()
