"""A canary step without its minimum evidence (candidate requests; pairs while labels flow) bakes again up to
``evidence_bakes`` bakes, then fails closed (``on_no_evidence: fail``, the default) with the reason audited."""

from __future__ import annotations

from test_rollout_machine import World, at, follow, world

from streamfit.config import RolloutConfig
from streamfit.names import Phase
from streamfit.actors.rollout.transitions import Audit


def _audited(w: World) -> list[Audit]:
    """Record every audit entry the machine asks for from now on."""
    seen: list[Audit] = []
    apply = w.apply

    def apply_and_keep(transitions: list) -> None:
        seen.extend(t for t in transitions if isinstance(t, Audit))
        apply(transitions)

    w.apply = apply_and_keep
    return seen


def test_a_step_with_no_candidate_requests_fails_closed_after_three_bakes():
    w = at(world(min_requests=50), Phase.BAKING)
    audits = _audited(w)
    for _ in range(4):
        follow(w, requests=0)
    assert w.m.rollout.phase == Phase.BAKING  # 5 s of a 2 s bake: still waiting for requests
    for _ in range(2):
        follow(w, requests=0)
    r = w.m.state.rollout
    assert r.phase == Phase.ROLLED_BACK, r
    assert "no evidence: only 20 candidate requests in 3 bakes (wanted 50)" in r.outcome
    assert w.m.state.weights == {"blue": 100, "green": 0} and w.aliases == {"live": 1}
    step = [a for a in audits if a.event == "canary_step"]
    assert step and step[-1].fields["passed"] is False and "no evidence" in step[-1].reason
    assert any(a.event == "rollback" and "no evidence" in a.reason for a in audits)


def test_on_no_evidence_pass_lets_the_step_pass_and_says_so_in_the_audit_log():
    w = at(world(min_requests=50, on_no_evidence="pass"), Phase.BAKING)
    audits = _audited(w)
    for _ in range(6):
        follow(w, requests=0)
    assert w.m.state.rollout.phase == Phase.PROMOTED
    step = [a for a in audits if a.event == "canary_step"]
    assert step and "no evidence" in step[0].reason and "on_no_evidence: pass" in step[0].reason


def test_the_bake_is_extended_up_to_evidence_bakes():
    w = at(world(min_requests=50, evidence_bakes=5), Phase.BAKING)
    for _ in range(8):
        follow(w, requests=0)
    assert w.m.rollout.phase == Phase.BAKING  # 9 s of a 2 s bake: up to 10 s allowed
    for _ in range(2):
        follow(w, requests=0)
    assert w.m.state.rollout.phase == Phase.ROLLED_BACK


def test_a_step_with_enough_requests_passes_at_once():
    w = at(world(min_requests=5), Phase.BAKING)
    for _ in range(3):
        follow(w, requests=10)
    assert w.m.state.rollout.phase == Phase.PROMOTED


def test_while_labels_flow_a_step_without_enough_pairs_fails_closed():
    cfg = RolloutConfig(steps=[50, 100], bake_s=2.0, min_requests=0, min_labels=100, shadow_max_s=1.0)
    w = World(cfg, paired=True)  # the monitor answers 40 pairs, 100 labelled requests of the live version
    assert w.command("start", 1)
    follow(w)
    at(w, Phase.BAKING)
    for _ in range(12):
        follow(w)
    r = w.m.state.rollout
    assert r.phase == Phase.ROLLED_BACK and "no evidence: only 40 paired labelled requests" in r.outcome, r


def test_evidence_settings_are_validated():
    assert RolloutConfig().on_no_evidence == "fail" and RolloutConfig().evidence_bakes == 3
    for bad in ({"on_no_evidence": "maybe"}, {"evidence_bakes": 0}):
        try:
            RolloutConfig(**bad)
        except ValueError:
            continue
        raise AssertionError(bad)
