"""The canary analysis that compares a candidate with the live version on one step's figures.

Router replicas keep ``SlotStats`` (``streamfit.request_stats``) per slot as cumulative
counters and histograms, so the controller gets a step's figures as the difference of two
reports; ``canary_verdict`` applies the configured thresholds to one step. Labelled figures speak the
task's canary metric: (n, accuracy) for classes; for regression (n, value, metric, sd of the per-row loss),
a candidate worse when its loss is above live's by more than ``max_accuracy_drop`` of it, with confidence.

Example:
    >>> from streamfit.request_stats import SlotStats
    >>> live, cand = SlotStats(), SlotStats()
    >>> for p in (0.1, 0.9, 0.2, 0.8) * 10: live.record(0.002, p)
    >>> for p in (0.5, 0.5, 0.5, 0.5) * 10: cand.record(0.002, p)
    >>> from streamfit.config import RolloutConfig
    >>> ok, reasons, _ = canary_verdict(live.to_dict(), cand.to_dict(), None, None, RolloutConfig(min_requests=0))
    >>> ok, reasons[0].split(" ")[0]
    (False, 'prediction')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamfit.config import RolloutConfig
from streamfit.psi import psi
from streamfit.actors.rollout.judging import Judgement, unpaired_loss_worse_p, unpaired_worse_p
from streamfit.request_stats import summary


def _coarse(hist: list[int], bins: int = 10) -> np.ndarray:
    h = np.asarray(hist, dtype=float)
    return h.reshape(bins, -1).sum(axis=1) if len(h) % bins == 0 else h


def prediction_psi(live: list[int], cand: list[int]) -> float | None:
    """PSI of the candidate's prediction-score histogram against the live one's (10 bins); None if either is empty."""
    return psi(_coarse(live), _coarse(cand))


def prediction_shift_p(live: list[int], cand: list[int]) -> float | None:
    """p-value of a chi-square test that both histograms come from one distribution (small samples
    cannot make PSI alone fail a step)."""
    from scipy.stats import chi2_contingency

    table = np.vstack([_coarse(live), _coarse(cand)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return None
    return float(chi2_contingency(table)[1])


def canary_verdict(live: dict[str, Any], cand: dict[str, Any], live_acc: tuple[Any, ...] | None,
                   cand_acc: tuple[Any, ...] | None, cfg: RolloutConfig,
                   paired: Judgement | None = None) -> tuple[bool, list[str], dict[str, Any]]:
    """Compare one step's figures: (passed, reasons it failed, the figures). ``paired``: the judgement on
    requests both versions answered (``judging.judge_pairs``); with enough pairs it settles accuracy."""
    ls, cs = summary(live), summary(cand)
    figures: dict[str, Any] = {"live": ls, "candidate": cs}
    reasons: list[str] = []
    if cs["requests"] < cfg.min_requests:
        figures["note"] = f"only {cs['requests']} candidate requests (wanted {cfg.min_requests})"
    if cs["error_rate"] is not None:
        delta = cs["error_rate"] - (ls["error_rate"] or 0.0)
        if delta > cfg.max_error_rate_delta:
            reasons.append(f"error rate {cs['error_rate']:.3f} vs live {ls['error_rate'] or 0.0:.3f}")
    # A p99 from a few dozen requests is one slow request: judge latency only on enough of them.
    if cs["p99_ms"] is not None and ls["p99_ms"] is not None and cs["requests"] >= max(cfg.min_requests, 100):
        if cs["p99_ms"] > cfg.max_latency_ratio * ls["p99_ms"] + 5.0:
            reasons.append(f"p99 latency {cs['p99_ms']:.1f} ms vs live {ls['p99_ms']:.1f} ms")
    labelled = bool(live_acc and cand_acc and live_acc[0] >= cfg.min_labels and cand_acc[0] >= cfg.min_labels)
    if live_acc and cand_acc:
        figures["accuracy"] = {"live": live_acc, "candidate": cand_acc}
    if paired is not None:
        figures["paired"] = {"decision": paired.decision, "reason": paired.reason, **paired.figures}
    if paired is not None and paired.decision != "too_few":
        # The same requests answered by both: this settles accuracy (and the prediction shift is moot).
        labelled = True
        if paired.decision == "worse":
            reasons.append(paired.reason)
    elif labelled and len(cand_acc) > 2:  # regression: a loss, lower is better
        figures["accuracy_p"] = p = unpaired_loss_worse_p(live_acc, cand_acc)  # type: ignore[arg-type]
        (_, lv, metric, _), (_, cv, _, _) = live_acc, cand_acc
        if cv > lv * (1 + cfg.max_accuracy_drop) and p < cfg.decision_p:
            reasons.append(f"{metric} {cv:.3f} vs live {lv:.3f} on labelled requests")
    elif labelled:
        # Labels settle it: after a drift a better candidate predicts differently from a stale live
        # version, so its prediction shift must not count against it. Worse only with confidence.
        (_, la), (_, ca) = live_acc, cand_acc
        figures["accuracy_p"] = p = unpaired_worse_p(live_acc, cand_acc)
        if ca < la - cfg.max_accuracy_drop and p < cfg.decision_p:
            reasons.append(f"accuracy {ca:.3f} vs live {la:.3f} on labelled requests")
    shift = prediction_psi(live["preds"], cand["preds"])
    p_value = prediction_shift_p(live["preds"], cand["preds"])
    figures["prediction_psi"], figures["prediction_shift_p"] = shift, p_value
    if not labelled and shift is not None and p_value is not None and shift > cfg.max_prediction_psi \
            and p_value < cfg.prediction_shift_p:
        reasons.append(f"prediction PSI {shift:.2f} > {cfg.max_prediction_psi} (chi-square p={p_value:.1e})")
    metric = cand_acc[2] if cand_acc is not None and len(cand_acc) > 2 else "accuracy"
    figures["judged_on"] = (f"paired labelled {metric}" if paired is not None and paired.decision != "too_few"
                            else f"labelled {metric}" if labelled else "prediction shift")
    return not reasons, reasons, figures
