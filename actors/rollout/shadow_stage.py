"""Before a candidate's first step it is judged in shadow; when live is failing, the rollout takes the fast path.

While a rollout judges in shadow (``Rollout.shadow``), the Routers copy every request with an
event id to the other slot and the monitor pairs both answers once labels arrive. The
*shadow stage* holds the candidate at 0 % until it has ``min_labels`` pairs (or ``shadow_max_s``
has passed); a candidate worse with confidence is rolled back before any client saw it. The
*fast path*, checked on every tick with the newest pairs, replaces the remaining steps with
``fast_path_steps`` baked ``fast_path_bake_s`` each when live is far below the candidate.

Example:
    >>> from streamfit.config import RolloutConfig
    >>> from streamfit.actors.rollout.serving_state import Rollout
    >>> r = Rollout(version=2, slot="green", live_version=1, steps=[5, 25, 50, 100], bake_s=20.0, reason="",
    ...             actor="trainer", shadow=True)
    >>> in_shadow_stage(r, candidate_weight=0)
    True
    >>> shadow_verdict({"n": 3, "live_only": 0, "cand_only": 2, "both": 1, "live_labelled": 50}, 1.0,
    ...                RolloutConfig()) is None  # too few pairs yet: wait
    True
    >>> shadow_verdict({"n": 0, "live_labelled": 0}, 25.0, RolloutConfig(), grace_s=20.0).decision  # no labels come
    'skipped'
    >>> take_fast_path(r, 5, RolloutConfig()); r.steps, r.bake_s
    ([100], 5.0)
"""

from __future__ import annotations

from typing import Any

from streamfit.config import RolloutConfig
from streamfit.actors.rollout.judging import Judgement, fast_path_due, judge_pairs, pairs_of
from streamfit.actors.rollout.serving_state import Rollout

SKIPPED = "skipped"


def in_shadow_stage(r: Rollout, candidate_weight: int) -> bool:
    """Judged in shadow and not yet past the stage: no traffic on the candidate, no verdict of the stage yet."""
    return (r.shadow and r.live_version is not None and r.step == 0 and candidate_weight == 0
            and r.fast_path is None and not any(x.get("shadow") for x in r.results))


def shadow_verdict(paired: dict[str, Any] | None, waited_s: float, cfg: RolloutConfig,
                   grace_s: float = 0.0) -> Judgement | None:
    """How the shadow stage ends: a judgement of the pairs, 'skipped' when nothing will pair (no monitor, or
    no labelled request of the live version after ``grace_s``), or None while it waits for ``min_labels`` pairs."""
    if paired is None or (not paired.get("live_labelled") and waited_s >= grace_s):
        return Judgement(SKIPPED, "no labelled requests to pair", {})
    j = judge_pairs(pairs_of(paired), cfg)
    if j.decision == "too_few" and waited_s < cfg.shadow_max_s:
        return None
    return j


def shadow_result(j: Judgement, now: float) -> dict[str, Any]:
    """The stage's entry in ``Rollout.results`` (weight 0: no traffic)."""
    return {"weight": 0, "shadow": True, "passed": j.decision != "worse",
            "reasons": [j.reason] if j.decision == "worse" else [], "paired": {"decision": j.decision,
                                                                              "reason": j.reason, **j.figures},
            "judged_on": f"paired labelled {j.figures.get('metric', 'accuracy')} (shadow)", "time": now}


def fast_path(r: Rollout, paired: dict[str, Any] | None, cfg: RolloutConfig) -> Judgement | None:
    """The judgement that sends ``r`` down the fast path now (once per rollout, never while paused)."""
    if not r.shadow or r.fast_path is not None or paired is None or r.phase == "paused":
        return None
    return fast_path_due(pairs_of(paired.get("newest")), cfg)


def take_fast_path(r: Rollout, candidate_weight: int, cfg: RolloutConfig) -> None:
    """Fewer, shorter steps from the step in progress on: ``fast_path_steps`` above the candidate's share."""
    r.steps = r.steps[:r.step] + [w for w in cfg.fast_path_steps if w > candidate_weight]
    r.bake_s = cfg.fast_path_bake_s
    r.fast_path = {"from_weight": candidate_weight, "steps": list(r.steps[r.step:]), "bake_s": r.bake_s}
