"""One canary step's figures: when it is due for analysis, and its verdict.

Replica reports are cumulative, so a step's figures are the reports now minus the baseline
taken when its weights were set (``streamfit.request_stats.minus``).

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
    """The step has baked, and has its minimum candidate requests or has waited 3x its bake for them."""
    if r.step_started is None or now < r.step_started + r.bake_s:
        return False
    return step_figures(r, figures, r.slot)["requests"] >= cfg.min_requests or now >= r.step_started + 3 * r.bake_s


def judge(r: Rollout, now: float, figures: Figures, accuracy: dict[int, Any], cfg: RolloutConfig,
          verdict: Verdict, paired: Judgement | None = None) -> dict[str, Any]:
    """Analyse the step in progress (candidate against live; ``paired``: on the requests both answered);
    the result is appended to ``r.results``."""
    live_acc = accuracy.get(r.live_version) if r.live_version is not None else None
    extra = {} if paired is None else {"paired": paired}
    passed, reasons, found = verdict(step_figures(r, figures, other(r.slot)), step_figures(r, figures, r.slot),
                                     live_acc, accuracy.get(r.version), cfg, **extra)
    result = {"weight": r.steps[r.step], "passed": passed, "reasons": reasons, **found, "time": now}
    r.results.append(result)
    return result

