"""Judging a candidate on the same labelled requests as the live version, without Ray.

The paired rule (McNemar's exact test, one-sided, with ``max_accuracy_drop``), the prediction
log's pairing of served and shadow answers, the Router's shadow copies, and the machine's shadow
stage, fast path and candidate queue; then the acceptance scenario at the core level with real
boosters: the Router (``RouterCore`` + the backend's prediction logging), the prediction log, the
machine and the registry's audit log, driven by a clock the test moves."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from streamfit.config import RolloutConfig
from streamfit.names import Phase
from streamfit.registry import Registry
from streamfit.actors.monitoring import PredictionLog
from streamfit.actors.rollout.controller import Effects
from streamfit.actors.rollout.judging import Pairs, fast_path_due, judge_pairs, sign_test
from streamfit.actors.rollout.machine import RolloutMachine
from streamfit.actors.rollout.replicas import ReplicaTracker
from streamfit.serve.backend import RayBackend
from streamfit.serve.router import RemoteSlot, RouterCore, take_shadow_copy
from streamfit.serve.slots import ModelSlot

CFG = RolloutConfig(min_labels=30)


# -- the paired rule --------------------------------------------------------------------------------

def test_the_sign_test_is_exact_and_one_sided():
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == pytest.approx(1 / 8)
    assert sign_test(0, 10) == 1.0 and sign_test(10, 10) == pytest.approx(1 / 1024)


def test_a_better_candidate_on_few_pairs_is_not_rolled_back():
    j = judge_pairs(Pairs(n=10, live_only=0, cand_only=8, both=1), CFG)
    assert j.decision == "too_few" and "only 10 paired" in j.reason


def test_a_candidate_better_than_a_failing_live_version_is_never_worse():
    for n, cand_only in [(30, 15), (100, 40), (1000, 400)]:
        j = judge_pairs(Pairs(n=n, live_only=0, cand_only=cand_only, both=n // 3), CFG)
        assert j.decision == "better", j
        assert j.figures["candidate_accuracy"] > j.figures["live_accuracy"] and j.figures["p_worse"] == 1.0


def test_a_clearly_worse_candidate_is_rolled_back_with_its_figures():
    j = judge_pairs(Pairs(n=200, live_only=40, cand_only=10, both=120), CFG)
    assert j.decision == "worse"
    assert j.figures["n"] == 200 and j.figures["live_accuracy"] == 0.8 and j.figures["candidate_accuracy"] == 0.65
    assert j.figures["p_worse"] < 1e-4 and "McNemar exact p=" in j.reason and "on 200 requests" in j.reason


def test_worse_by_less_than_the_allowed_drop_or_without_confidence_is_even():
    small = judge_pairs(Pairs(n=1000, live_only=30, cand_only=15, both=800), CFG)  # 1.5 points < 2, though sure
    assert small.decision == "even" and small.figures["p_worse"] < 0.05
    unsure = judge_pairs(Pairs(n=40, live_only=4, cand_only=1, both=30), CFG)  # 7.5 points on 5 discordant pairs
    assert unsure.decision == "even" and unsure.figures["p_worse"] > 0.05


def test_the_fast_path_wants_a_wide_margin_with_confidence():
    assert fast_path_due(Pairs(n=100, live_only=5, cand_only=40, both=40), CFG) is not None  # 0.80 vs 0.45
    assert fast_path_due(Pairs(n=100, live_only=5, cand_only=15, both=60), CFG) is None  # better, by 10 points
    assert fast_path_due(Pairs(n=12, live_only=0, cand_only=10, both=2), CFG) is None  # too few


# -- the prediction log pairs served and shadow answers --------------------------------------------------

def test_shadow_answers_pair_with_served_ones_and_count_in_no_served_figure():
    log = PredictionLog()
    log.labels(["early"], [1.0], now=1.0)  # overtook both answers
    log.record([("early", 1, "blue", 0.9, 2.0), ("a", 1, "blue", 0.8, 2.0), ("b", 2, "green", 0.2, 2.0),
                ("early", 2, "green", 0.1, 2.0, True), ("a", 2, "green", 0.3, 2.0, True),
                ("b", 1, "blue", 0.7, 2.0, True), ("c", 1, "blue", 0.9, 2.0)])
    assert log.labels(["a", "b", "c"], [1.0, 0.0, 1.0], now=3.0) == 3
    assert (log.predictions_logged, log.shadow_logged, log.joined) == (4, 3, 4)
    assert log.accuracy_since(1, 0.0) == (3, 1.0) and log.accuracy_since(2, 0.0) == (1, 1.0)
    assert log.per_version()[2]["labelled"] == 1  # its shadow answers are nobody's served accuracy
    paired = log.paired_since(1, 2, since=0.0, newest=2)
    # early: live right, candidate wrong; a: same; b: candidate right, live wrong; c: no candidate answer.
    assert {k: paired[k] for k in ("n", "live_only", "cand_only", "both")} == \
        {"n": 3, "live_only": 2, "cand_only": 1, "both": 0}
    assert paired["newest"]["n"] == 2 and paired["live_labelled"] == 3
    assert log.accuracy_since((1, 2), 0.0)["n"] == 3  # the pair form the monitor actor forwards
    assert log.paired_since(1, 2, since=2.5)["n"] == 2  # joined at 3.0: a and b


def test_a_shadow_answer_a_flush_after_its_label_still_pairs():
    log = PredictionLog()
    log.record([("e1", 1, "blue", 0.9, 1.0)])
    log.labels(["e1"], [1.0], now=2.0)
    log.record([("e1", 2, "green", 0.2, 1.0, True)])  # from the other slot's deployment, a flush later
    paired = log.paired_since(1, 2, since=0.0)
    assert (paired["n"], paired["live_only"], log.joined) == (1, 1, 1)


# -- the Router's shadow copies --------------------------------------------------------------------------

FEATURES = ["a", "b", "c"]


def concept(n: int, seed: int, flipped: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rows and labels of a concept (``flipped``: the opposite labels, as after an abrupt drift)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    y = ((x[:, 0] + 0.5 * x[:, 1] > 0) != flipped).astype(float)
    return x, y


def train(flipped: bool, seed: int = 0) -> xgb.Booster:
    """A booster trained on the concept (or the flipped one): ~95 % right on it, ~5 % on the other."""
    x, y = concept(3000, seed, flipped)
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                     xgb.DMatrix(x, label=y, feature_names=FEATURES), 30)


GOOD, FLIPPED = train(False), train(True, seed=1)


def router(judging: bool = True) -> RouterCore:
    core = RouterCore(FEATURES, seed=0)
    core.slots = {"blue": ModelSlot("blue", 1, GOOD, FEATURES), "green": ModelSlot("green", 2, FLIPPED, FEATURES)}
    core.desired_versions, core.weights, core.judging = {"blue": 1, "green": 2}, {"blue": 100, "green": 0}, judging
    return core


def backend() -> Any:
    """The part of the Router's backend that logs predictions (its batch goes to the monitor on a flush)."""
    return SimpleNamespace(_prediction_log=[])


def test_each_request_with_event_ids_is_scored_in_shadow_by_the_other_slot():
    async def go() -> list:
        core, be = router(), backend()
        x, _ = concept(3, seed=5)
        slot, version, probs = await core.apredict(x)
        RayBackend.log_predictions(be, [(f"e{i}", version, slot, float(p), 7.0) for i, p in enumerate(probs)])
        assert take_shadow_copy() is None  # taken once
        _, _, _ = await core.apredict(x, pin="blue")  # a pinned request tests one slot: no copy
        RayBackend.log_predictions(be, [("p0", 1, "blue", 0.5, 8.0)])
        _, _, _ = await core.apredict(x)  # rows and event ids that do not line up: nothing to judge
        RayBackend.log_predictions(be, [("q0", 1, "blue", 0.5, 9.0)])
        return be._prediction_log

    rows = asyncio.run(go())
    shadow = [r for r in rows if len(r) == 6]
    assert [r[:3] for r in shadow] == [("e0", 2, "green"), ("e1", 2, "green"), ("e2", 2, "green")]
    assert all(r[4] == 7.0 and r[5] is True for r in shadow) and len(rows) == 3 + 3 + 2


def test_no_copy_unless_judging_and_a_failing_shadow_never_fails_the_request():
    async def go(core: RouterCore) -> list:
        be = backend()
        slot, version, probs = await core.apredict(concept(2, seed=6)[0])
        RayBackend.log_predictions(be, [("e0", version, slot, float(probs[0]), 1.0),
                                        ("e1", version, slot, float(probs[1]), 1.0)])
        return be._prediction_log

    assert len(asyncio.run(go(router(judging=False)))) == 2
    broken = router()
    broken.slots["green"] = SimpleNamespace(name="green", version=2, predict=lambda x: 1 / 0)
    assert len(asyncio.run(go(broken))) == 2 and broken.shadow["judge_errors"] == 1


def test_a_remote_slot_is_scored_in_shadow_after_the_answer():
    class Handle:
        class predict:  # noqa: N801  (a DeploymentHandle's method)
            @staticmethod
            async def remote(x):
                await asyncio.sleep(0)
                return {"version": 2, "probs": [0.25] * len(x)}

    async def go() -> list:
        core = RouterCore(FEATURES, remote={"blue": Handle(), "green": Handle()})
        await core.apply({"slots": {"blue": 1, "green": 2}, "weights": {"blue": 100, "green": 0}, "revision": 1,
                          "rollout": {"phase": "baking", "shadow": True}}, lambda s, v: None)
        assert core.judging and isinstance(core.slots["green"], RemoteSlot)
        be = backend()
        slot, version, probs = await core.apredict(concept(1, seed=7)[0])
        RayBackend.log_predictions(be, [("e0", version, slot, float(probs[0]), 1.0)])
        for _ in range(20):
            await asyncio.sleep(0)
        return be._prediction_log

    assert asyncio.run(go())[-1] == ("e0", 2, "green", 0.25, 1.0, True)


# -- the acceptance scenario at the core level, with real boosters ----------------------------------------

class Deployment:
    """One Router replica with real boosters, its backend's prediction logging, the monitor's prediction log,
    the rollout machine and its effects on a real registry; ``now`` is the test's clock."""

    def __init__(self, root: str, cfg: RolloutConfig) -> None:
        self.registry, self.fx = Registry(root), Effects(root)
        self.m = RolloutMachine(cfg, 30.0, self.fx.store.load(), self.registry.aliases())
        self.core, self.be, self.log = RouterCore(FEATURES, seed=1), backend(), PredictionLog()
        self.tracker, self.now, self.sent = ReplicaTracker(ttl_s=60.0), time.time(), 0

    def register(self, booster: xgb.Booster) -> int:
        return self.registry.register(booster, {"features": FEATURES})

    def _load(self, slot: str, version: int) -> ModelSlot:
        booster, _ = self.registry.load(version)
        return ModelSlot(slot, version, booster, FEATURES)

    def carry_out(self, transitions: list) -> None:
        self.fx.carry_out(self.m.state.snapshot(), transitions)

    async def tick(self, requests: int = 20, flipped: bool = False) -> None:
        """The replica follows the desired state and serves requests whose labels (of the concept now
        in force) arrive a second later; the controller steps the machine with what it would gather."""
        await self.core.apply(self.m.state.snapshot(), self._load)
        self.tracker.report("r1", self.core.report(), self.now)
        x, y = concept(requests, seed=10_000 + self.sent, flipped=flipped)
        ids = [f"ev{self.sent + i}" for i in range(requests)]
        for i in range(requests):
            slot, version, probs = await self.core.apredict(x[i:i + 1])
            RayBackend.log_predictions(self.be, [(ids[i], version, slot, float(probs[0]), self.now)])
        self.sent += requests
        self.log.record(self.be._prediction_log)  # the flush to the monitor
        self.be._prediction_log = []
        self.now += 1.0
        self.log.labels(ids, y.tolist(), now=self.now)
        want, pair = self.m.analysis_wanted(self.now, self.tracker), self.m.paired_wanted()
        accuracy = {v: self.log.accuracy_since(v, want[1]) for v in want[0]} if want else None
        paired = self.log.paired_since(*pair, newest=self.m.cfg.fast_path_rows) if pair else None
        self.carry_out(self.m.step(self.now, self.tracker, accuracy, paired))

    async def run(self, command: str, *args: Any, flipped: bool = False, **kwargs: Any) -> Any:
        self.carry_out(getattr(self.m, command)(*args, now=self.now, **kwargs))
        for _ in range(120):
            await self.tick(flipped=flipped)
            if self.m.rollout is None:
                return self.m.state.rollout
        raise AssertionError(f"rollout never ended: {self.m.state.rollout}")

    def roll_out_after(self, live: xgb.Booster, candidate: xgb.Booster, reason: str = "") -> tuple[Any, int, int]:
        """``live`` goes live with a flip, then ``candidate`` comes from the trainer: (its rollout, live, candidate)."""
        v_live, v_cand = self.register(live), self.register(candidate)

        async def go() -> Any:
            assert (await self.run("start", v_live, mode="flip")).phase == Phase.PROMOTED
            return await self.run("deploy", v_cand, reason=reason)

        return asyncio.run(go()), v_live, v_cand

    def audit(self, version: int) -> list[dict[str, Any]]:
        return [e for e in self.registry.audit_log() if e.get("version") == version]


JUDGED = RolloutConfig(steps=[5, 25, 50, 100], bake_s=5.0, min_requests=10, min_labels=30, shadow_max_s=20.0)


def test_a_candidate_that_beats_a_failing_live_version_is_promoted_on_the_fast_path(tmp_path):
    d = Deployment(str(tmp_path), JUDGED)
    r, _, fresh = d.roll_out_after(FLIPPED, GOOD, "refit after drift")  # the concept flipped: live is failing
    assert r.phase == Phase.PROMOTED and d.registry.aliases()["live"] == fresh, r.outcome
    shadow = r.results[0]
    assert shadow["weight"] == 0 and shadow["paired"]["decision"] == "better"
    assert shadow["paired"]["candidate_accuracy"] > 0.85 > 0.15 > shadow["paired"]["live_accuracy"]
    assert r.fast_path is not None and r.steps == JUDGED.fast_path_steps and r.bake_s == JUDGED.fast_path_bake_s
    assert "paired accuracy" in r.outcome and "better" in r.outcome
    events = {e["event"]: e for e in d.audit(fresh)}
    assert "live failing on the newest" in events["fast_path"]["reason"] and events["fast_path"]["n"] >= 30
    assert "McNemar exact p=" in events["shadow_judging"]["reason"] and events["shadow_judging"]["decision"] == "better"
    assert "paired accuracy" in events["promote"]["reason"]
    assert "rollback" not in events and "rejected" not in events


def test_a_candidate_worse_than_a_healthy_live_version_is_rolled_back_before_it_takes_traffic(tmp_path):
    d = Deployment(str(tmp_path), JUDGED)
    good, bad = d.register(GOOD), d.register(FLIPPED)
    seen: list[dict[str, int]] = []

    async def go() -> Any:
        await d.run("start", good, mode="flip")
        d.carry_out(d.m.deploy(bad, now=d.now, reason="refit on bad data"))
        while d.m.rollout is not None:
            await d.tick()
            seen.append(dict(d.m.state.weights))
        return d.m.state.rollout

    r = asyncio.run(go())
    assert r.phase == Phase.ROLLED_BACK and r.outcome.startswith("shadow judging: paired accuracy"), r.outcome
    assert "worse" in r.outcome and "McNemar exact p=" in r.outcome
    assert all(w[r.slot] == 0 for w in seen)  # no client ever got its answers
    assert d.registry.aliases()["live"] == good and d.m.state.live_version() == good
    rejected = [e for e in d.audit(bad) if e["event"] == "rejected"]
    assert rejected and rejected[-1]["reason"] == r.outcome
    judged = [e for e in d.audit(bad) if e["event"] == "shadow_judging"][-1]
    assert judged["decision"] == "worse" and judged["n"] >= 30 and judged["live_accuracy"] > 0.85


def test_a_candidate_as_good_as_live_goes_through_every_step_judged_on_pairs(tmp_path):
    r, _, _ = Deployment(str(tmp_path), JUDGED).roll_out_after(GOOD, train(False, seed=3))
    assert r.phase == Phase.PROMOTED and r.fast_path is None, r.outcome
    assert [x["weight"] for x in r.results] == [0, 5, 25, 50]
    assert all(x["judged_on"].startswith("paired labelled accuracy") for x in r.results)
    assert r.results[-1]["paired"]["n"] > r.results[1]["paired"]["n"] >= 30  # the evidence accumulates


# -- the candidate queue ----------------------------------------------------------------------------------

def test_the_newest_candidate_replaces_a_queued_one_and_supersedes_one_judged_in_shadow(tmp_path):
    d = Deployment(str(tmp_path), JUDGED)
    v1, v2, v3, v4, v5 = (d.register(GOOD) for _ in range(5))

    async def go() -> None:
        await d.run("start", v1, mode="flip")
        d.carry_out(d.m.deploy(v2, now=d.now))
        while not (d.m.rollout.phase == Phase.BAKING and d.m.state.weights[d.m.rollout.slot] == 0):
            await d.tick(requests=0)  # no labels: the shadow stage waits for its pairs
        d.carry_out(d.m.deploy(v3, now=d.now))  # v2 has no traffic yet: v3 takes its place
        assert d.m.state.history[-1]["phase"] == "superseded" and d.m.rollout.version == v3
        while d.m.state.weights[d.m.rollout.slot] == 0:
            await d.tick()
        d.carry_out(d.m.deploy(v4, now=d.now))  # v3 takes traffic: queued behind it
        d.carry_out(d.m.deploy(v5, now=d.now))  # and v5 replaces v4 in the queue
        assert d.m.queued.version == v5 and d.m.rollout.version == v3

    asyncio.run(go())
    dropped = [e for e in d.audit(v4) if e["event"] == "candidate_dropped"]
    assert dropped and dropped[0]["reason"] == f"superseded in the queue by v{v5}"


def test_without_labelled_requests_the_shadow_stage_ends_after_a_bake_and_records_nothing(tmp_path):
    d = Deployment(str(tmp_path), JUDGED)
    v1, v2 = d.register(GOOD), d.register(GOOD)

    async def go() -> float:
        d.carry_out(d.m.start(v1, now=d.now, mode="flip"))
        while d.m.rollout is not None:
            await d.tick(requests=0)
        d.carry_out(d.m.deploy(v2, now=d.now))
        started = d.now
        while d.m.state.weights[d.m.rollout.slot] == 0:
            await d.tick(requests=0)
        return d.now - started

    waited = asyncio.run(go())
    assert JUDGED.bake_s <= waited <= JUDGED.bake_s + 3 and d.m.rollout.results == []
    assert not [e for e in d.audit(v2) if e["event"] == "shadow_judging"]


def test_a_step_waits_for_its_pairs_while_labels_flow_rather_than_judge_on_the_prediction_shift(tmp_path):
    cfg = JUDGED.model_copy(update={"min_labels": 150, "shadow_max_s": 2.0})
    r, _, _ = Deployment(str(tmp_path), cfg).roll_out_after(GOOD, train(False, seed=4))
    shadow, first = r.results[0], r.results[1]
    assert shadow["paired"]["decision"] == "too_few"  # the stage timed out: steps go on, waiting for pairs
    assert first["judged_on"] == "paired labelled accuracy" and first["paired"]["n"] >= 150
    assert r.phase == Phase.PROMOTED
