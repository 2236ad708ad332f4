"""Judging in shadow on a real local Ray + Serve over HTTP: clients send requests with event ids, their
labels reach the monitor as the stream would send them, and the rollout controller judges each candidate
(slots inside the Router, or as their own deployments: the shadow answer then comes a call later)
on the requests both versions answered — read back, as a user would, from ``/traffic`` and the registry's
audit log.

(a) The concept flipped: the live version is failing, a candidate trained on the new concept beats it on
    the same labelled requests and is promoted (on the fast path), not rolled back.
(b) A candidate trained on the wrong concept is worse than the healthy live version: rolled back in its
    shadow stage, before any client got one of its answers."""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque

import numpy as np
import pytest
import xgboost as xgb

from streamfit.config import config_from_dict
from streamfit.registry import Registry
from streamfit.scripts.load import RequestLoop
from streamfit.scripts.pipeline import Pipeline, wait_until
from test_e2e_rollout import TOKEN, _finished, _rollout, _traffic


@pytest.fixture(scope="module", params=["slots_in_router", "isolated_slots"])
def pipe(request, tmp_path_factory):
    os.environ["STREAMFIT_ADMIN_TOKEN"] = TOKEN
    root = tmp_path_factory.mktemp("judging")
    cfg = config_from_dict({
        "registry": {"uri": str(root / "registry")},
        "checkpoints": {"uri": str(root / "ckpt")},
        "serving": {"port": 0, "replicas": 1, "isolated_slots": request.param == "isolated_slots"},
        "rollout": {"steps": [10, 50, 100], "bake_s": 2.0, "min_requests": 10, "min_labels": 30,
                    "shadow_max_s": 120.0, "fast_path_bake_s": 1.0},
    })
    p = Pipeline.start(cfg)
    yield p
    p.stop()


class Concept:
    """Rows with every serving feature; the label depends on a few of them (or the opposite, ``flipped``)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.labels: deque[tuple[str, float]] = deque()  # (event id, label) of requests sent, not yet labelled
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def sample(self, n: int, seed: int, flipped: bool = False) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, len(self.names)))
        return x, ((x[:, 0] + 0.5 * x[:, 1] - 0.5 * x[:, 3] > 0) != flipped).astype(float)

    def register(self, registry: Registry, schema_hash: str, seed: int, flipped: bool) -> int:
        x, y = self.sample(4000, seed, flipped)
        bst = xgb.train({"objective": "binary:logistic", "max_depth": 4, "nthread": 1},
                        xgb.DMatrix(x, label=y, feature_names=self.names), 40)
        return registry.register(bst, {"features": self.names, "schema_hash": schema_hash, "trigger": "test",
                                       "verify": {"x": x[:16].tolist(), "p": bst.inplace_predict(x[:16]).tolist()}})

    def requests(self, seed: int):
        """Requests of the concept in force, each with an event id whose label the stream delivers later."""
        x, y = self.sample(20_000, seed)
        position = itertools.count()

        def next_row():
            i = next(position) % len(x)
            with self._lock:
                event_id = f"ev{next(self._ids)}"
            self.labels.append((event_id, float(y[i])))
            return {n: float(v) for n, v in zip(self.names, x[i])}, event_id, None

        return next_row

    def deliver_labels(self, monitor) -> None:
        """The labels of the requests sent so far, to the monitor (as the coordinator forwards the stream's)."""
        batch = [self.labels.popleft() for _ in range(len(self.labels))]
        if batch:
            ids, labels = zip(*batch)
            monitor.labels.remote(list(ids), list(labels))


class LabelledLoop(RequestLoop):
    """Requests with event ids feed live accuracy, so they need the ingest scope: sent with the admin token."""

    def _send(self, client, body):
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        super()._send(client, body)


@pytest.fixture(scope="module")
def concept(pipe):
    return Concept(pipe.cfg.features.feature_names())


def _roll_out_under_load(p, concept: Concept, version: int, reason: str, seed: int) -> tuple[dict, dict]:
    """Roll ``version`` out while clients send labelled requests; (the finished rollout, the load's counts)."""
    load = LabelledLoop(p.url, concept.requests(seed), rate=40).start()
    try:
        _rollout(p, version=version, reason=reason)
        assert wait_until(lambda: concept.deliver_labels(p.monitor) or _finished(p), timeout_s=240)
    finally:
        result = load.stop()
    return _traffic(p)["rollout"], result


def _audit(p, version: int) -> dict[str, dict]:
    return {e["event"]: e for e in p.registry.audit_log() if e.get("version") == version}


def test_a_candidate_that_beats_a_failing_live_version_is_promoted_not_rolled_back(pipe, concept):
    schema = pipe.cfg.features.schema_hash()
    stale = concept.register(pipe.registry, schema, seed=1, flipped=True)  # trained before the concept flipped
    _rollout(pipe, version=stale, mode="flip")
    assert wait_until(lambda: _finished(pipe), timeout_s=120)
    # /traffic shows the flip as soon as the controller decides it; the aliases are written right after.
    assert wait_until(lambda: pipe.registry.aliases().get("live") == stale, timeout_s=60), pipe.registry.aliases()
    fresh = concept.register(pipe.registry, schema, seed=2, flipped=False)
    r, load = _roll_out_under_load(pipe, concept, fresh, "refit after the drift", seed=3)
    assert r["phase"] == "promoted", (r["outcome"], r["results"])
    assert load["failed"] == 0, load["failures"]
    assert wait_until(lambda: pipe.registry.aliases().get("live") == fresh, timeout_s=60), pipe.registry.aliases()
    shadow = r["results"][0]
    assert shadow["weight"] == 0 and shadow["paired"]["decision"] == "better"
    assert shadow["paired"]["candidate_accuracy"] > 0.8 and shadow["paired"]["live_accuracy"] < 0.2
    assert r["fast_path"] is not None and "paired accuracy" in r["outcome"]
    audit = _audit(pipe, fresh)
    assert "McNemar exact p=" in audit["shadow_judging"]["reason"] and audit["shadow_judging"]["n"] >= 30
    assert audit["fast_path"]["reason"].startswith("live failing on the newest")
    assert "paired accuracy" in audit["promote"]["reason"] and "rejected" not in audit


def test_a_candidate_worse_than_a_healthy_live_version_is_rolled_back_before_it_takes_traffic(pipe, concept):
    live = pipe.registry.aliases()["live"]
    bad = concept.register(pipe.registry, pipe.cfg.features.schema_hash(), seed=4, flipped=True)
    r, load = _roll_out_under_load(pipe, concept, bad, "trained on the old concept", seed=5)
    assert r["phase"] == "rolled_back", (r["outcome"], r["results"])
    assert r["outcome"].startswith("shadow judging: paired accuracy") and "worse" in r["outcome"]
    assert bad not in load["versions"] and load["failed"] == 0, load  # no client got one of its answers
    assert pipe.registry.aliases()["live"] == live and _traffic(pipe)["weights"][r["slot"]] == 0
    audit = _audit(pipe, bad)
    assert audit["rejected"]["reason"] == r["outcome"] and "McNemar exact p=" in audit["rejected"]["reason"]
    assert audit["shadow_judging"]["decision"] == "worse" and audit["shadow_judging"]["live_accuracy"] > 0.8
