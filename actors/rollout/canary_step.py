"""One canary step's figures: when it is due for analysis, and its verdict.

Replica reports are cumulative, so a step's figures are the reports now minus the baseline
taken when its weights were set (``streamfit.request_stats.minus``). A step needs evidence:
``min_requests`` candidate requests and, while labels flow, ``min_labels`` paired requests; short of
it, the step bakes again (up to ``evidence_bakes`` bakes) and then fails closed unless
``on_no_evidence`` is ``pass`` — never a pass on no requests at all.

Example:
    >>> from streamfit.config import RolloutConfig
    >>> from streamfit.actors.rollout.serving_state import Rollout
    >>> r = Rollout(version=2, slot="green", live_version=1, steps=[50, 100], bake_s=10.0, reason="", actor="t",
    ...             step_started=100.0, baseline=None)
    >>> empty = {"blue": empty_stats(), "green": empty_stats()}
    >>> due(r, 105.0, empty, RolloutConfig(min_requests=0)), due(r, 111.0, empty, RolloutConfig(min_requests=0))
    (False, True)
    >>> due(r, 111.0, empty, RolloutConfig(min_requests=5)), due(r, 131.0, empty, RolloutConfig(min_requests=5))
    (False, True)
    >>> missing_evidence(r, empty, None, RolloutConfig(min_requests=5))
    'only 0 candidate requests in 3 bakes (wanted 5)'
"""

from __future__ import annotations

from typing import Any, Callable

from streamfit.config import RolloutConfig
from streamfit.names import other
from streamfit.request_stats import empty_stats, minus
from streamfit.actors.rollout.judging import Judgement
from streamfit.actors.rollout.serving_state import Rollout

Figures = dict[str, dict[str, Any]]
Verdict = Callable[..., tuple[bool, list[str], dict[str, Any]]]


def step_figures(r: Rollout, figures: Figures, slot: str) -> dict[str, Any]:
    """``slot``'s figures since the step in progress began."""
    return minus(figures[slot], (r.baseline or {}).get(slot, empty_stats()))


def due(r: Rollout, now: float, figures: Figures, cfg: RolloutConfig) -> bool:
    """The step has baked, and has its minimum candidate requests or has waited ``evidence_bakes`` bakes for them."""
    if r.step_started is None or now < r.step_started + r.bake_s:
        return False
    return step_figures(r, figures, r.slot)["requests"] >= cfg.min_requests or extended_out(r, now, cfg)


def extended_out(r: Rollout, now: float, cfg: RolloutConfig) -> bool:
    """The step has baked as many times as it may while it waits for evidence."""
    return now >= (r.step_started or now) + cfg.evidence_bakes * r.bake_s


def labels_short(paired: dict[str, Any] | None, cfg: RolloutConfig) -> bool:
    """Labels flow (the live version has labelled requests) but fewer than ``min_labels`` of them are pairs."""
    return bool(paired is not None and paired.get("live_labelled") and paired.get("n", 0) < cfg.min_labels)


def missing_evidence(r: Rollout, figures: Figures, paired: dict[str, Any] | None, cfg: RolloutConfig) -> str | None:
    """What the step in progress lacks of its minimum evidence (None when it has it); ``paired``: the prediction
    log's paired figures of a rollout judged in shadow."""
    n = step_figures(r, figures, r.slot)["requests"]
    if n < cfg.min_requests:
        return f"only {n} candidate requests in {cfg.evidence_bakes} bakes (wanted {cfg.min_requests})"
    if labels_short(paired, cfg):
        return (f"only {paired.get('n', 0)} paired labelled requests while labels flow "  # type: ignore[union-attr]
                f"(wanted {cfg.min_labels})")
    return None


def judge(r: Rollout, now: float, figures: Figures, accuracy: dict[int, Any], cfg: RolloutConfig,
          verdict: Verdict, paired: Judgement | None = None, lacking: str | None = None) -> dict[str, Any]:
    """Analyse the step in progress (candidate against live; ``paired``: on the requests both answered;
    ``lacking``: the evidence it is short of, which fails it unless ``on_no_evidence`` is pass);
    the result is appended to ``r.results``."""
    live_acc = accuracy.get(r.live_version) if r.live_version is not None else None
    extra = {} if paired is None else {"paired": paired}
    passed, reasons, found = verdict(step_figures(r, figures, other(r.slot)), step_figures(r, figures, r.slot),
                                     live_acc, accuracy.get(r.version), cfg, **extra)
    if lacking is not None:
        found["no_evidence"] = f"no evidence: {lacking}"
        if cfg.on_no_evidence == "fail":
            passed, reasons = False, [*reasons, found["no_evidence"]]
    result = {"weight": r.steps[r.step], "passed": passed, "reasons": reasons, **found, "time": now}
    r.results.append(result)
    return result

