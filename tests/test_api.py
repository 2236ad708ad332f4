"""Unit tests of serve/api.py with FastAPI's TestClient (no Ray)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xgboost as xgb

from streamfit.serve.api import Backend, build_api


class FakeBackend(Backend):
    """Only what these tests need; the rest answers 501."""

    def __init__(self, traffic=None, retrain=None):
        self._traffic = traffic
        self._retrain = retrain

    def models(self):
        return MODELS

    async def traffic(self):
        if self._traffic is None:
            raise NotImplementedError
        return self._traffic

    async def retrain(self, reason):
        if self._retrain is None:
            raise NotImplementedError
        return self._retrain(reason)
from streamfit.serve.router import RouterCore
from streamfit.serve.slots import ModelSlot

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FEATURES = ["a", "b", "c"]
MODELS = {"versions": [{"version": 1, "aliases": ["live"], "features": FEATURES}]}


def _booster() -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(float)
    return xgb.train({"max_depth": 2, "objective": "binary:logistic", "eta": 0.5},
                     xgb.DMatrix(x, label=y, feature_names=FEATURES), 5)


BST = _booster()


def _client(loaded: bool) -> tuple[TestClient, RouterCore]:
    core = RouterCore(FEATURES, seed=0)
    if loaded:
        core.slots["green"] = ModelSlot("green", 3, BST, list(FEATURES))
        core.desired_versions["green"] = 3
        core.weights = {"blue": 0, "green": 100}
    # raise_server_exceptions=False: a server error shows as the 500 a user would get
    return TestClient(build_api(core, FakeBackend()), raise_server_exceptions=False), core


@pytest.fixture
def empty():
    return _client(loaded=False)[0]


@pytest.fixture
def loaded():
    return _client(loaded=True)


def _locs(resp) -> list[list]:
    return [d["loc"] for d in resp.json()["detail"]]


ROW = {"a": 1.0, "b": 2.0, "c": 3.0}


# -- input validation (no model needed: bad input is a 422 even before any model loads) ------


def test_missing_feature_is_422_naming_it(loaded):
    client, _ = loaded
    r = client.post("/predict", json={"features": {"a": 1.0, "c": 3.0}})
    assert r.status_code == 422
    assert ["body", "features", "b"] in _locs(r)


def test_missing_feature_in_batch_row_names_row_and_field(loaded):
    client, _ = loaded
    r = client.post("/predict", json={"rows": [ROW, {"a": 1.0, "b": 2.0}]})
    assert r.status_code == 422
    assert ["body", "rows", 1, "c"] in _locs(r)


def test_non_numeric_string_is_422_naming_it(loaded):
    client, _ = loaded
    r = client.post("/predict", json={"features": {**ROW, "b": "lots"}})
    assert r.status_code == 422
    assert _locs(r) == [["body", "features", "b"]]


def test_unknown_extra_field_is_422_naming_it(loaded):
    client, _ = loaded
    r = client.post("/predict", json={"features": {**ROW, "d": 4.0}})
    assert r.status_code == 422
    assert _locs(r) == [["body", "features", "d"]]
    r = client.post("/predict", json={"features": ROW, "model": "v9"})
    assert r.status_code == 422
    assert ["body", "model"] in _locs(r)


@pytest.mark.parametrize("token", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_non_finite_number_is_422(loaded, token):
    # Python's json (used by FastAPI to parse bodies) accepts the non-standard tokens
    # Infinity / -Infinity / NaN; they must be refused as bad input, not crash the handler.
    client, core = loaded
    body = '{"features": {"a": %s, "b": 2.0, "c": 3.0}}' % token
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert ["body", "features", "a"] in _locs(r)
    assert sum(st.requests for st in core.stats_by_slot.values()) == 0


def test_non_finite_string_is_422(loaded):
    client, _ = loaded
    r = client.post("/predict", json={"features": {**ROW, "c": "inf"}})
    assert r.status_code == 422
    assert _locs(r) == [["body", "features", "c"]]


def test_non_finite_in_batch_is_422(loaded):
    client, _ = loaded
    body = '{"rows": [{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": NaN, "c": 3}]}'
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert ["body", "rows", 1, "b"] in _locs(r)


@pytest.mark.parametrize("payload", [{"features": ROW, "rows": [ROW]}, {}, {"features": None, "rows": None}],
                         ids=["both", "neither", "both-null"])
def test_exactly_one_of_features_or_rows(loaded, payload):
    client, _ = loaded
    r = client.post("/predict", json=payload)
    assert r.status_code == 422
    assert "exactly one" in r.text


def test_empty_batch_is_422(loaded):
    client, _ = loaded
    r = client.post("/predict", json={"rows": []})
    assert r.status_code == 422
    assert ["body", "rows"] in _locs(r)


def test_malformed_json_is_4xx_not_500(loaded):
    client, _ = loaded
    r = client.post("/predict", content="{not json", headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


# -- no model yet ---------------------------------------------------------------------------


def test_503_before_any_model_is_loaded(empty):
    r = empty.post("/predict", json={"features": ROW})
    assert r.status_code == 503
    assert "no model" in r.json()["detail"]
    r = empty.post("/predict", json={"rows": [ROW, ROW]})
    assert r.status_code == 503


def test_healthz_before_model(empty):
    r = empty.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["ready"] is False
    assert body["held"] == {"blue": None, "green": None}


# -- with a loaded slot ---------------------------------------------------------------------


def test_single_row_prediction(loaded):
    client, core = loaded
    expected = float(BST.predict(xgb.DMatrix(np.array([[1.0, 2.0, 3.0]]), feature_names=FEATURES))[0])
    r = client.post("/predict", json={"features": ROW})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"prediction", "probability", "model_version", "slot"}
    assert body["model_version"] == 3 and body["slot"] == "green"
    assert body["probability"] == pytest.approx(expected, rel=1e-6)
    assert body["prediction"] == int(expected >= 0.5)
    assert core.stats_by_slot["green"].requests == 1


def test_feature_order_in_request_does_not_matter(loaded):
    client, _ = loaded
    a = client.post("/predict", json={"features": {"a": -2.0, "b": 0.5, "c": 9.0}}).json()
    b = client.post("/predict", json={"features": {"c": 9.0, "b": 0.5, "a": -2.0}}).json()
    assert a["probability"] == b["probability"]


def test_batch_prediction_one_per_row(loaded):
    client, _ = loaded
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3)) * 3
    rows = [dict(zip(FEATURES, map(float, r))) for r in x]
    expected = BST.predict(xgb.DMatrix(x, feature_names=FEATURES))
    r = client.post("/predict", json={"rows": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == 3 and body["slot"] == "green"
    assert len(body["predictions"]) == len(body["probabilities"]) == 7
    assert np.allclose(body["probabilities"], expected, rtol=1e-6)
    assert body["predictions"] == [int(p >= 0.5) for p in expected]
    # both classes occur, so the prediction really follows the row
    assert set(body["predictions"]) == {0, 1}


def test_integer_features_are_accepted(loaded):
    client, _ = loaded
    r = client.post("/predict", json={"features": {"a": 1, "b": 2, "c": 3}})
    assert r.status_code == 200
    assert r.json()["probability"] == pytest.approx(client.post("/predict", json={"features": ROW}).json()["probability"])


def test_healthz_with_model(loaded):
    client, _ = loaded
    client.post("/predict", json={"features": ROW})
    body = client.get("/healthz").json()
    assert body["ready"] is True
    assert body["held"] == {"blue": None, "green": 3}
    assert body["weights"] == {"blue": 0, "green": 100}
    assert body["served"] == {"blue": 0, "green": 1}


def test_models_route(loaded):
    client, _ = loaded
    r = client.get("/models")
    assert r.status_code == 200
    assert r.json() == MODELS


# A status as the rollout controller reports it (typed by streamfit.status.TrafficStatus).
TRAFFIC = {"slots": {"blue": 1, "green": 2}, "weights": {"blue": 95, "green": 5}, "revision": 7, "live_slot": "blue",
           "flips": 1, "shadow_share": 0.0, "rollout": None, "history": [], "replicas": {"r1": {"blue": 1, "green": 2}},
           "slot_stats": {}, "shadow": {"compared": 0, "agreed": 0}, "deploys": [], "live_accuracy": {},
           "rollout_config": {"steps": [5, 25, 50, 100]}}


def test_traffic_route_answers_501_without_a_backend_and_the_state_with_one():
    core = RouterCore(FEATURES)
    client = TestClient(build_api(core, FakeBackend()))
    assert client.get("/traffic").status_code == 501
    client = TestClient(build_api(core, FakeBackend(traffic=TRAFFIC)))
    assert client.get("/traffic").json() == TRAFFIC


def test_retrain_needs_the_admin_token():
    calls = []
    backend = FakeBackend(retrain=lambda reason: calls.append(reason) or {"version": 3})
    client = TestClient(build_api(RouterCore(FEATURES), backend, admin_token="s3cret"))
    assert client.post("/retrain").status_code == 401
    assert client.post("/retrain", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.post("/retrain", headers={"Authorization": "Basic s3cret"}).status_code == 401
    r = client.post("/retrain", json={"reason": "new data"}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.json() == {"version": 3}
    assert calls == ["new data"]
    off = TestClient(build_api(RouterCore(FEATURES), backend, admin_token=None))
    assert off.post("/retrain", headers={"Authorization": "Bearer s3cret"}).status_code == 503


def test_openapi_lists_feature_fields(loaded):
    client, _ = loaded
    spec = client.get("/openapi.json").json()
    assert "/predict" in spec["paths"]
    row = spec["components"]["schemas"]["FeatureRow"]
    assert set(row["required"]) == set(FEATURES)
