"""The rollout as a plain state machine: operator commands and ``step`` return the transitions they made.

A rollout of a candidate version goes ``loading`` (every replica loads it into the idle slot
and checks it reproduces the registry's predictions) → ``baking`` one canary step after
another (analysed against the live version on that step's requests), or ``paused`` before a
step until approved → ``promoted``, or ``rolled_back`` / ``aborted`` / ``superseded`` with all
traffic back on the live version in one step. A rollout judged in shadow (``shadow_stage``)
first bakes at 0 % while both versions answer the same labelled requests, is judged on those
pairs at every step (``judging``), and takes the fast path when live is failing.

Everything happens in ``step(now, replicas, analysis)`` and in the commands, each checked
against the current phase before it changes anything. Only the rollout held in the state is
driven, so one that was aborted or superseded can do nothing later. The machine keeps the
``live``/``previous`` aliases agreeing with the split, asking for each change as ``SetAlias``.

Example:
    >>> from streamfit.config import RolloutConfig
    >>> from streamfit.actors.rollout.replicas import ReplicaTracker
    >>> m, reps = RolloutMachine(RolloutConfig(mode="flip")), ReplicaTracker()
    >>> _ = m.start(1, now=0.0)
    >>> reps.report("r1", {"held": {"blue": 1}}, now=0.5)
    >>> [t.version for t in m.step(1.0, reps) if type(t).__name__ == "SetAlias"], m.state.rollout.phase
    ([1], <Phase.PROMOTED: 'promoted'>)
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from streamfit.config import RolloutConfig
from streamfit.names import SLOTS, Phase, other
from streamfit.actors.rollout.analysis import canary_verdict
from streamfit.actors.rollout.bookkeeping import Bookkeeping
from streamfit.actors.rollout.canary_step import due, extended_out, judge, labels_short, missing_evidence
from streamfit.actors.rollout.judging import judge_pairs, pairs_of
from streamfit.actors.rollout.shadow_stage import (SKIPPED, fast_path, in_shadow_stage, shadow_result, shadow_verdict,
                                                   take_fast_path)
from streamfit.actors.rollout.replicas import ReplicaTracker
from streamfit.actors.rollout.serving_state import Rollout, ServingState, check_weights
from streamfit.actors.rollout.transitions import Audit, Candidate, Changed, FlipWait, Queued, Transition, WaitDone

DRIFT_TRIGGERS = ("drift", "drift_followup")  # refits the trainer makes because the concept changed


class RolloutMachine(Bookkeeping):
    """The serving state and the rollout in progress, moved only by commands and ``step``."""

    def __init__(self, cfg: RolloutConfig | None = None, flip_timeout_s: float = 60.0,
                 state: ServingState | None = None, aliases: dict[str, int] | None = None,
                 verdict: Callable[..., tuple[bool, list[str], dict[str, Any]]] = canary_verdict) -> None:
        super().__init__(state or ServingState(), aliases)
        self.cfg = cfg or RolloutConfig()
        self.flip_timeout_s = flip_timeout_s
        if self.state.shadow_share == 0.0:
            self.state.shadow_share = self.cfg.shadow_share
        self._verdict = verdict
        self._begun: tuple[str, int] | None = None  # (rollout id, step) whose weights are set and baking
        self._clock_in: dict[str, float] = {}  # rollout id -> when this machine first drove its loading
        self._shadow_since: dict[str, float] = {}  # rollout id -> when its shadow stage began here
        self._paired: dict[str, Any] | None = None  # this step's paired figures (``paired_wanted``)

    # -- reading -------------------------------------------------------------------------
    def live_version(self) -> int | None:
        """The version serving (the one a rollout in progress started from)."""
        return self.rollout.live_version if self.rollout else self.state.live_version()

    def analysis_wanted(self, now: float, replicas: ReplicaTracker) -> tuple[list[int], float] | None:
        """(versions, since) whose labelled accuracy the next ``step`` needs, when a step is due for analysis."""
        r = self.rollout
        if r is None or not self._due(r, now, replicas):
            return None
        return [v for v in (r.live_version, r.version) if v is not None], r.step_started or r.started

    def paired_wanted(self) -> tuple[int, int, float] | None:
        """(live, candidate, since) whose paired labelled figures the next ``step`` wants (a rollout judged in shadow)."""
        r = self.rollout
        return (r.live_version, r.version, r.started) if r is not None and r.shadow and r.live_version else None

    # -- commands ------------------------------------------------------------------------
    def start(self, version: int, now: float, steps: list[int] | None = None, bake_s: float | None = None,
              reason: str = "", actor: str = "operator", mode: str | None = None) -> list[Transition]:
        """An operator's rollout of ``version`` into the idle slot (supersedes the one in progress)."""
        self._check_startable(version)
        self._drop_queued(f"rollout of v{version} started by {actor}")
        self._start(version, now, steps, bake_s, reason, actor, mode)
        return self._drain()

    def deploy(self, version: int, now: float, reason: str = "", actor: str = "trainer",
               trigger: str | None = None) -> list[Transition]:
        """A trainer's candidate: rolled out now, or queued behind the rollout (or rollback) in progress;
        ``trigger`` is the refit's trigger (drift, volume …), given apart from the reason's text."""
        r = self.rollout
        if self.waiting is not None or (r and self.cfg.on_new_candidate == "wait" and not self._replaceable(r, trigger)):
            self._drop_queued(f"superseded in the queue by v{version}")
            self.queued = Candidate(version, reason, actor)
            self._emit(Queued(version))
            return self._drain()
        self._check_startable(version)
        self._drop_queued(f"superseded in the queue by v{version}")  # an older candidate never goes after a newer one
        self._start(version, now, None, None, reason, actor, None)
        return self._drain()

    def promote(self, now: float, actor: str = "operator") -> list[Transition]:
        """Approve a paused step, or skip the remaining steps and promote as soon as the candidate is loaded."""
        r = self._active()
        r.approved = True
        if r.phase != Phase.PAUSED:
            r.step, r.outcome = len(r.steps) - 1, f"promoted by {actor}"
        self._emit(Changed(f"promote v{r.version}"), Audit("rollout_promote", actor, fields={"version": r.version}))
        return self._drain()

    def approve(self, now: float, actor: str = "operator") -> list[Transition]:
        """Let a paused step go on."""
        if self._active().phase != Phase.PAUSED:
            raise ValueError("no paused step to approve")
        return self.promote(now, actor)

    def abort(self, now: float, actor: str = "operator", reason: str = "aborted") -> list[Transition]:
        """Stop the rollout: all traffic back to the live version in one step."""
        r = self._active()
        self._drop_queued(f"rollout aborted by {actor}")
        self._finish(r, Phase.ABORTED, f"{reason} by {actor}", now, rollback=True)
        return self._drain()

    def rollback(self, now: float, actor: str = "operator", reason: str = "rollback") -> list[Transition]:
        """Abort the rollout in progress; else all traffic to the previous version, loading it first if needed
        (then ``waiting`` is set and a ``WaitDone`` transition ends it)."""
        r = self.rollout
        if r is None and self.aliases.get("previous") is None:
            raise ValueError("no previous version to roll back to")
        self._drop_queued(f"rollback by {actor}")
        if r is not None:
            self._finish(r, Phase.ABORTED, f"{reason} by {actor}", now, rollback=True)
            return self._drain()
        self._end_wait(f"superseded by another rollback by {actor}")
        previous = self.aliases["previous"]
        live = self.state.live_slot()
        target = other(live)
        if self.state.slots[target] == previous and self.loaded[target] == previous:
            self._flip_to(target, actor, reason)
            return self._drain()
        if self.state.weights[target] > 0:  # a hand-set split: no traffic on the slot about to be reloaded
            self.state.flip(live, count=False)
            self._emit(Changed("traffic off the rollback's slot"))
            self._sync_aliases(actor, reason)
        self._put(target, previous)
        self._emit(Changed(f"v{previous} staged for a rollback"))
        self.waiting = FlipWait(uuid.uuid4().hex[:8], target, previous, now + self.flip_timeout_s, actor, reason)
        return self._drain()

    def set_traffic(self, weights: dict[str, int], now: float, actor: str = "operator") -> list[Transition]:
        """Set the split by hand (it stops a rollout in progress where it is)."""
        for s, w in weights.items():
            if w > 0 and self.state.slots.get(s) is None:
                raise ValueError(f"slot {s} holds no version")
        new = check_weights(weights)
        for s in SLOTS:
            if new[s] > 0 and self.loaded[s] != self.state.slots[s]:
                raise ValueError(f"slot {s}: v{self.state.slots[s]} is not loaded on every replica yet")
        self._drop_queued(f"manual traffic change by {actor}")
        self._end_wait(f"superseded by a manual traffic change by {actor}")
        if self.rollout is not None:
            self._finish(self.rollout, Phase.ABORTED, f"manual traffic change by {actor}", now, rollback=False)
        self.state.set_weights(new)
        self._emit(Changed("traffic"), Audit("traffic", actor, fields={"weights": dict(self.state.weights)}))
        self._sync_aliases(actor, "manual traffic change")
        return self._drain()

    def set_shadow(self, share: float, now: float, actor: str = "operator") -> list[Transition]:
        """Copy a share of requests to the idle slot (answers compared, never returned)."""
        self.state.shadow_share = max(0.0, min(1.0, float(share)))
        self.state.revision += 1
        self._emit(Changed("shadow"), Audit("shadow", actor, fields={"share": self.state.shadow_share}))
        return self._drain()

    def fail(self, now: float, error: str) -> list[Transition]:
        """Roll back the rollout in progress after an unexpected error (never leave traffic on a half-checked candidate)."""
        if self.rollout is not None:
            self._finish(self.rollout, Phase.ROLLED_BACK, f"rollout error: {error}", now, rollback=True)
        return self._drain()

    # -- time ----------------------------------------------------------------------------
    def step(self, now: float, replicas: ReplicaTracker, analysis: Accuracy | None = None,
             paired: dict[str, Any] | None = None) -> list[Transition]:
        """Move on as far as the replicas' reports, the clock and ``analysis`` (labelled accuracy per version
        since the step started, as asked by ``analysis_wanted``; None if not gathered) allow; ``paired``: the
        prediction log's paired figures as asked by ``paired_wanted`` (None: not gathered, no shadow stage)."""
        self._paired = paired
        for s in SLOTS:
            v = self.state.slots[s]
            if v is not None and replicas.all_hold(s, v, now):
                self.loaded[s] = v
        if self.waiting is not None:
            self._step_wait(self.waiting, now, replicas)
        r = self.rollout
        if r is not None and (r.phase != Phase.LOADING or self._candidate_ready(r, now, replicas)):
            while r.active and self._step_once(r, now, replicas, analysis):
                pass
        return self._drain()

    def _step_wait(self, w: FlipWait, now: float, replicas: ReplicaTracker) -> None:
        if self.loaded[w.slot] == w.version:
            self.waiting = None
            self._flip_to(w.slot, w.actor, w.reason)
            self._emit(WaitDone(w.id, None))
        else:
            failure = replicas.load_failure(w.slot, w.version, now)
            if failure is None and now <= w.deadline:
                return
            self._end_wait(f"v{w.version} could not be loaded: "
                           f"{failure or f'not loaded on every replica within {self.flip_timeout_s:.0f}s'}")
        self._start_queued(now)

    def _candidate_ready(self, r: Rollout, now: float, replicas: ReplicaTracker) -> bool:
        began = self._clock_in.setdefault(r.id, now)
        if self.loaded[r.slot] != r.version:
            failure = replicas.load_failure(r.slot, r.version, now)
            if failure is None and now > began + self.flip_timeout_s:
                failure = f"not loaded on every replica within {self.flip_timeout_s:.0f}s"
            if failure is not None:
                self._finish(r, Phase.ROLLED_BACK, f"candidate refused: {failure}", now, rollback=True)
            return False
        ok, why = replicas.verification(r.slot, r.version, now)
        if not ok:
            self._finish(r, Phase.ROLLED_BACK, f"candidate failed verification: {why}", now, rollback=True)
            return False
        if r.live_version is None:  # nothing live yet: nothing to compare with
            r.step = len(r.steps) - 1
        r.phase = Phase.BAKING
        self._emit(Changed(f"v{r.version} loaded"))
        return True

    def _step_once(self, r: Rollout, now: float, replicas: ReplicaTracker, analysis: Accuracy | None) -> bool:
        """Begin the current step or judge it; True if the rollout moved on and may move again at once."""
        moved = self._judge_in_shadow(r, now)
        if moved is not None:
            return moved
        if self._begun != (r.id, r.step):
            return self._begin_step(r, now, replicas)
        if analysis is None or not self._due(r, now, replicas):
            return False
        passed, reasons = self._analyse(r, now, replicas, analysis)
        if not passed:
            self._finish(r, Phase.ROLLED_BACK, "canary analysis: " + "; ".join(reasons), now, rollback=True)
            return False
        r.step += 1
        self._emit(Changed(f"v{r.version} passed a step"))
        return True

    def _judge_in_shadow(self, r: Rollout, now: float) -> bool | None:
        """The shadow stage, then the fast path: None to go on with the step, else whether the rollout moved."""
        weight = self.state.weights[r.slot]
        if in_shadow_stage(r, weight) and r.phase != Phase.PAUSED:
            # Labels may start with the rollout's traffic: a bake's time for the first to come.
            j = shadow_verdict(self._paired, now - self._shadow_since.setdefault(r.id, now), self.cfg, r.bake_s)
            if j is None:
                return False
            if j.decision != SKIPPED:
                r.results.append(shadow_result(j, now))
                self._emit(Changed(f"v{r.version} judged in shadow"), Audit(
                    "shadow_judging", "controller", j.reason, {"version": r.version, "decision": j.decision,
                                                               **j.figures}))
            if j.decision == "worse":
                self._finish(r, Phase.ROLLED_BACK, f"shadow judging: {j.reason}", now, rollback=True)
                return False
        fast = fast_path(r, self._paired, self.cfg)
        if fast is None:
            return None
        take_fast_path(r, weight, self.cfg)
        self._begun = None  # the step in progress is replaced: begin the next one now
        self._emit(Changed(f"v{r.version} on the fast path"),
                   Audit("fast_path", "controller", fast.reason, {"version": r.version, **r.fast_path, **fast.figures}))
        return True

    def _shadow_only(self, r: Rollout) -> bool:
        """Loaded and judged in shadow, no traffic yet: a newer candidate may take its place at no cost."""
        return r.phase == Phase.BAKING and in_shadow_stage(r, self.state.weights[r.slot])

    def _replaceable(self, r: Rollout, trigger: str | None) -> bool:
        """A newer candidate takes ``r``'s place: ``r`` is still in its shadow stage, or a drift refit's candidate
        arrives while ``r`` has not proven itself better (no fast path) and did not replace another itself —
        after a drift the live version and an unproven candidate trained before it are both stale, and
        waiting a whole canary for the stale one is what keeps requests on old concepts. Once in a row, so
        frequent drift refits cannot starve every rollout."""
        if self._shadow_only(r):
            return True
        return (self.cfg.drift_supersedes and trigger in DRIFT_TRIGGERS and r.fast_path is None
                and r.replaced is None and r.phase != Phase.PAUSED)

    def _begin_step(self, r: Rollout, now: float, replicas: ReplicaTracker) -> bool:
        if r.step >= len(r.steps):
            self._promote_now(r, now)
            return False
        weight = r.steps[r.step]
        if r.phase == Phase.PAUSED and not r.approved:
            return False
        if r.phase != Phase.PAUSED and weight in self.cfg.pause_before and not r.approved \
                and r.live_version is not None:
            r.phase = Phase.PAUSED
            self._emit(Changed(f"v{r.version} paused before {weight}%"))
            return False
        r.phase, r.approved = Phase.BAKING, False
        if weight == 100:
            self._promote_now(r, now)
            return False
        self.state.set_weights({r.slot: weight, other(r.slot): 100 - weight})
        r.step_started, r.baseline = now, replicas.stats(now)
        self._begun = (r.id, r.step)
        self._emit(Changed(f"v{r.version} at {weight}%"))
        return False

    def _due(self, r: Rollout, now: float, replicas: ReplicaTracker) -> bool:
        if not (r.phase == Phase.BAKING and self._begun == (r.id, r.step) and due(r, now, replicas.stats(now), self.cfg)):
            return False
        # Labels flow but too few pairs yet: wait for them (up to evidence_bakes) rather than judge on the prediction shift.
        return not labels_short(self._paired if r.shadow else None, self.cfg) or extended_out(r, now, self.cfg)

    def _analyse(self, r: Rollout, now: float, replicas: ReplicaTracker, analysis: Accuracy) -> tuple[bool, list[str]]:
        paired = judge_pairs(pairs_of(self._paired), self.cfg) if r.shadow and self._paired is not None else None
        figures = replicas.stats(now)
        lacking = missing_evidence(r, figures, self._paired if r.shadow else None, self.cfg)
        res = judge(r, now, figures, analysis, self.cfg, self._verdict, paired, lacking)
        passed_anyway = f"{res['no_evidence']} (on_no_evidence: pass)" if "no_evidence" in res and res["passed"] else ""
        self._emit(Audit("canary_step", "controller",
                         "; ".join(res["reasons"]) or passed_anyway or (paired.reason if paired else ""),
                         {"version": r.version, "weight": res["weight"], "passed": res["passed"],
                          **({"paired": res["paired"]} if paired else {})}))
        return res["passed"], res["reasons"]

    # -- endings -------------------------------------------------------------------------
    def _promote_now(self, r: Rollout, now: float) -> None:
        self.state.flip(r.slot, count=r.live_version is not None)
        evidence = [x["paired"]["reason"] for x in r.results if x.get("paired", {}).get("decision") in ("even", "better")]
        r.phase, r.outcome = Phase.PROMOTED, r.outcome or "; ".join(["passed every step", *evidence[-1:]])
        r.step = len(r.steps)
        self._emit(Changed(f"v{r.version} promoted"))
        self._set_live(r.version, r.live_version, r.actor, r.reason)
        self._emit(Audit("promote", r.actor, r.outcome, {"version": r.version}))
        self._record(r, now)
        self._start_queued(now)

    def _finish(self, r: Rollout, phase: Phase, why: str, now: float, rollback: bool) -> None:
        """End a rollout that did not promote: traffic back to live in one step, reason audited."""
        r.phase, r.outcome = phase, why
        if rollback and r.live_version is not None:
            self.state.flip(other(r.slot), count=False)
        elif rollback and self.state.slots[r.slot] == r.version:  # a first version that never went live
            self.state.slots[r.slot], self.loaded[r.slot] = None, None
            self.state.revision += 1
        self._emit(Changed(f"v{r.version} {phase}"),
                   Audit("rollback" if rollback else str(phase), "controller", why, {"version": r.version}))
        if phase != Phase.SUPERSEDED:
            self._emit(Audit("rejected", "controller", why, {"version": r.version}))
        self._record(r, now)
        if phase != Phase.SUPERSEDED:
            self._start_queued(now)

    # -- plumbing ------------------------------------------------------------------------
    def _start(self, version: int, now: float, steps: list[int] | None, bake_s: float | None, reason: str,
               actor: str, mode: str | None) -> None:
        self._end_wait(f"superseded by a rollout of v{version}")
        replaced = None
        if self.rollout is not None:
            replaced = None if self._shadow_only(self.rollout) else self.rollout.version
            self._finish(self.rollout, Phase.SUPERSEDED, f"superseded by v{version}", now, rollback=True)
        live = self.state.live_slot()
        if not self.state.settled() and self.state.slots[live] is not None:
            # A hand-set split: take the traffic off the slot about to be restaged.
            self.state.flip(live, count=False)
            self._sync_aliases(actor, f"rollout of v{version}")
        use_steps = [100] if (mode or self.cfg.mode) == "flip" else list(steps or self.cfg.steps)
        live_version = self.state.live_version()
        slot = self.state.idle_slot() if self.state.slots[live] is not None else live
        self._put(slot, version)
        r = Rollout(version=version, slot=slot, live_version=live_version, steps=use_steps,
                    bake_s=self.cfg.bake_s if bake_s is None else bake_s, reason=reason, actor=actor, started=now,
                    shadow=self.cfg.shadow_judging and live_version is not None and use_steps != [100],
                    replaced=replaced)
        self.state.rollout = r
        self._clock_in[r.id] = now
        self._emit(Changed(f"rollout of v{version}"),
                   Audit("rollout_start", actor, reason, {"version": version, "slot": slot, "steps": use_steps}))

    def _start_queued(self, now: float) -> None:
        q, self.queued = self.queued, None
        if q is not None and q.version != self.live_version():
            self._start(q.version, now, None, None, q.reason, q.actor, None)

    def _check_startable(self, version: int) -> None:
        if version == self.live_version():
            raise ValueError(f"v{version} is already live")
