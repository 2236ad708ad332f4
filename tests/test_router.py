"""Unit tests of serve/router.py RouterCore and serve/slots.py ModelSlot (no Ray)."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest
import xgboost as xgb

from streamfit.serve.router import NoModelError, RouterCore
from streamfit.serve.slots import FeatureMismatchError, ModelSlot

FEATURES = ["a", "b", "c"]


def _booster(seed: int = 0) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(100, 3))
    y = (x[:, 0] > 0).astype(float)
    return xgb.train({"max_depth": 2, "objective": "binary:logistic"},
                     xgb.DMatrix(x, label=y, feature_names=FEATURES), 3)


BST = _booster()


def _slot(name: str, version: int) -> ModelSlot:
    return ModelSlot(name, version, BST, list(FEATURES))


def _core(blue=None, green=None, weights=(100, 0), desired=None, seed=123) -> RouterCore:
    core = RouterCore(FEATURES, seed=seed)
    core.slots = {"blue": _slot("blue", blue) if blue else None, "green": _slot("green", green) if green else None}
    core.desired_versions = dict(desired) if desired else {"blue": blue, "green": green}
    core.weights = {"blue": weights[0], "green": weights[1]}
    return core


def _split(core: RouterCore, n: int = 10_000) -> Counter:
    return Counter(core.choose().name for _ in range(n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_split_20_80(seed):
    core = _core(blue=1, green=2, weights=(20, 80), seed=seed)
    c = _split(core)
    assert abs(c["blue"] / 10_000 - 0.20) <= 0.02, c
    assert abs(c["green"] / 10_000 - 0.80) <= 0.02, c


def test_weight_zero_gets_no_traffic_and_100_gets_all():
    core = _core(blue=1, green=2, weights=(0, 100))
    assert _split(core, 2000) == Counter({"green": 2000})
    core.weights = {"blue": 100, "green": 0}
    assert _split(core, 2000) == Counter({"blue": 2000})


def test_same_seed_same_choices():
    a = _core(blue=1, green=2, weights=(50, 50), seed=7)
    b = _core(blue=1, green=2, weights=(50, 50), seed=7)
    assert [a.choose().name for _ in range(200)] == [b.choose().name for _ in range(200)]


def test_slot_holding_a_stale_version_gets_no_traffic():
    # green still holds v2 while the desired state already asks for v3 in green (being loaded):
    # whatever the weights say, only blue (ready) answers -- the flip loses no request.
    core = _core(blue=1, green=2, weights=(0, 100), desired={"blue": 1, "green": 3})
    assert core.ready_slots() == ["blue"]
    got = [core.choose() for _ in range(1000)]
    assert {(s.name, s.version) for s in got} == {("blue", 1)}
    # once green holds v3, it takes the traffic its weight gives it
    core.slots["green"] = _slot("green", 3)
    assert _split(core, 1000) == Counter({"green": 1000})


def test_flip_sequence_never_raises():
    core = _core(blue=1, desired={"blue": 1, "green": None})
    # controller: load v2 into green, then move all traffic
    core.desired_versions = {"blue": 1, "green": 2}
    core.weights = {"blue": 0, "green": 100}
    # this replica has not loaded green yet: blue answers
    assert core.choose().version == 1
    core.slots["green"] = _slot("green", 2)
    assert core.choose().version == 2


def test_no_slot_ready_raises_no_model_error():
    with pytest.raises(NoModelError):
        RouterCore(FEATURES).choose()
    # a loaded slot whose version is not desired is not ready either
    core = _core(blue=1, desired={"blue": 2, "green": None})
    with pytest.raises(NoModelError):
        core.choose()
    with pytest.raises(NoModelError):
        core.predict(np.zeros((1, 3)))


def test_predict_counts_per_slot():
    core = _core(blue=1, green=2, weights=(50, 50), seed=3)
    for _ in range(200):
        slot, probs = core.predict(np.zeros((2, 3)))
        assert probs.shape == (2,)
    assert sum(st.requests for st in core.stats_by_slot.values()) == 200
    assert core.stats_by_slot["blue"].requests > 0 and core.stats_by_slot["green"].requests > 0


def _desired(blue, green, wb, wg, revision=1):
    return {"slots": {"blue": blue, "green": green}, "weights": {"blue": wb, "green": wg}, "revision": revision}


def test_apply_loads_missing_versions_and_takes_weights():
    calls = []

    def loader(slot, version):
        calls.append((slot, version))
        return _slot(slot, version)

    core = RouterCore(FEATURES, seed=1)
    asyncio.run(core.apply(_desired(1, None, 100, 0, revision=1), loader))
    assert calls == [("blue", 1)]
    assert core.held() == {"blue": 1, "green": None}
    assert core.choose().version == 1
    asyncio.run(core.apply(_desired(1, 2, 20, 80, revision=2), loader))
    assert calls == [("blue", 1), ("green", 2)]  # blue v1 is not reloaded
    assert core.revision == 2 and core.weights == {"blue": 20, "green": 80}
    c = _split(core)
    assert abs(c["green"] / 10_000 - 0.8) <= 0.02


def test_apply_with_failing_loader_keeps_serving_old_slot():
    core = RouterCore(FEATURES, seed=1)
    asyncio.run(core.apply(_desired(1, None, 100, 0, revision=1), lambda s, v: _slot(s, v)))

    def broken(slot, version):
        raise OSError(f"disk on fire loading {version}")

    # controller asks for v2 in green with all the traffic; this replica cannot load it
    asyncio.run(core.apply(_desired(1, 2, 0, 100, revision=2), broken))
    assert core.held() == {"blue": 1, "green": None}
    assert len(core.load_errors) == 1
    assert "green" in core.load_errors[0] and "v2" in core.load_errors[0] and "disk on fire" in core.load_errors[0]
    assert core.stats()["load_errors"] == core.load_errors
    for _ in range(200):
        slot, probs = core.predict(np.zeros((1, 3)))
        assert (slot.name, slot.version) == ("blue", 1)
    # a later successful apply recovers
    asyncio.run(core.apply(_desired(1, 2, 0, 100, revision=3), lambda s, v: _slot(s, v)))
    assert core.choose().version == 2


def test_load_errors_are_bounded():
    core = RouterCore(FEATURES)

    def broken(slot, version):
        raise RuntimeError("nope")

    for r in range(30):
        asyncio.run(core.apply(_desired(r + 1, None, 100, 0, revision=r), broken))
    assert len(core.load_errors) == 20
    assert core.load_errors[-1].startswith("blue v30")


def test_model_slot_from_registry_checks_features():
    meta = {"features": FEATURES}
    slot = ModelSlot.from_registry("blue", 4, BST, meta, FEATURES)
    assert (slot.name, slot.version, slot.features) == ("blue", 4, FEATURES)
    with pytest.raises(FeatureMismatchError):
        ModelSlot.from_registry("blue", 4, BST, meta, ["a", "b"])
    with pytest.raises(FeatureMismatchError):
        ModelSlot.from_registry("blue", 4, BST, meta, ["b", "a", "c"])  # same names, other order
    with pytest.raises(FeatureMismatchError):
        ModelSlot.from_registry("blue", 4, BST, {}, FEATURES)


def test_model_slot_predicts_like_the_booster():
    slot = _slot("blue", 1)
    x = np.random.default_rng(5).normal(size=(20, 3))
    expected = BST.predict(xgb.DMatrix(x, feature_names=FEATURES))
    got = slot.predict(x)
    assert got.shape == (20,)
    assert np.allclose(got, expected)
