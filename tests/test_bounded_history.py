"""A long-running trainer and monitor keep bounded refit records: the newest attempts, and totals by reason that
outlive them (Prometheus' refit counts), through a restart too."""

from __future__ import annotations

from streamfit.actors.monitoring.freshness import SEEN_KEPT, FreshnessTracker
from streamfit.actors.training import TrainerCore
from streamfit.config import TrainerConfig
from test_trainer_policy import FEATURES, OFF, rows


def test_the_trainer_keeps_its_newest_attempts_and_counts_every_accepted_refit():
    core = TrainerCore(TrainerConfig(**{**OFF, "refit_every_rows": 200, "gate_margin": 1.0}), FEATURES, None)
    core.history_kept = 3
    for i in range(8):
        core.add_rows(rows(200, start=200.0 * i, seed=i))
    accepted = core.versions
    assert accepted >= 6
    stats = core.stats()
    assert len(stats["refits"]) + len(stats["rejected"]) == 3  # the newest three attempts
    assert stats["refit_counts"] == {"volume": accepted}  # every accepted refit, not only the kept ones
    restarted = TrainerCore(TrainerConfig(**{**OFF, "refit_every_rows": 200}), FEATURES, None)
    restarted.restore(core.snapshot())
    assert restarted.stats()["refit_counts"] == {"volume": accepted}
    old = core.snapshot()
    del old["refit_counts"]  # a snapshot from before the counts: those its history holds
    restarted.restore(old)
    assert restarted.stats()["refit_counts"] == {"volume": len(stats["refits"])}


def test_the_monitor_remembers_a_bounded_number_of_refits():
    f = FreshnessTracker(window_s=60.0, trained_through=lambda _v: None)
    for n in range(3 * SEEN_KEPT // 1000):
        batch = [{"reason": "drift", "event_time": float(1000 * n + i), "version": 1000 * n + i, "accepted": True}
                 for i in range(1000)]
        f.observe(float(n), None, {"refits": batch, "rejected": []})
    assert len(f.seen_refits) <= SEEN_KEPT and len(f.refit_time) <= SEEN_KEPT
