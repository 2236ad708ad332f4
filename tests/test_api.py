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


# -- raw events (scored on the entity's live features, from a fake shard lookup) -------------

from streamfit.config import FeaturesConfig  # noqa: E402
from streamfit.serve.lookup import LookupAnswer, ShardUnavailable  # noqa: E402
from streamfit.serve.auth import Authorizer  # noqa: E402

RAW_CFG = FeaturesConfig.model_validate({
    "fields": [{"name": "x0", "min": -50, "max": 50}, {"name": "x1", "required": False}],
    "windows_s": [60], "aggregates": [{"field": "x0", "ops": ["mean"]}], "label_history": {"enabled": False}})
RAW_NAMES = RAW_CFG.feature_names()  # x0, x1, count_1m, x0_mean_1m, age_s
CLOCK = 1_000.0


def _raw_booster() -> xgb.Booster:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, len(RAW_NAMES)))
    return xgb.train({"max_depth": 2, "objective": "binary:logistic", "eta": 0.5},
                     xgb.DMatrix(x, label=(x[:, 0] + x[:, 3] > 0).astype(float), feature_names=RAW_NAMES), 5)


RAW_BST = _raw_booster()


class LookupBackend(FakeBackend):
    """A shard lookup that answers the columns in reverse order (the API must reorder them): the raw fields,
    count = 2, mean = x0 / 2, no age; times more than 60 s from the clock are refused, entities starting
    with 'down' are on a shard that cannot answer."""

    def __init__(self):
        super().__init__()
        self.lookups, self.ingested, self.logged = [], [], []

    async def lookup(self, rows, record):
        self.lookups.append((rows, record))
        if any(e.startswith("down") for e in rows.entity):
            raise ShardUnavailable(1, "no answer within 1 s")
        t = np.where(np.isnan(rows.event_time), CLOCK, rows.event_time)
        x0, x1 = rows.x[:, 0], rows.x[:, 1]
        feats = np.column_stack([x0, x1, np.full(len(t), 2.0), x0 / 2, np.full(len(t), np.nan)])
        reasons = ["event_time_future" if v > CLOCK + 60 else "event_time_past" if v < CLOCK - 60
                   else "out_of_range:x0" if abs(x) > 50 else "" for v, x in zip(t, x0)]
        return LookupAnswer(feats[:, ::-1], RAW_NAMES[::-1], t, np.full(len(t), CLOCK), reasons)

    async def ingest(self, rows):
        self.ingested.append(rows)
        return len(rows), 0

    def log_predictions(self, rows):
        self.logged += rows


def _raw_client(ingest: bool = False, max_batch_events: int = 5) -> tuple[TestClient, LookupBackend]:
    core = RouterCore(RAW_NAMES, seed=0)
    core.slots["blue"] = ModelSlot("blue", 4, RAW_BST, list(RAW_NAMES))
    core.desired_versions["blue"] = 4
    backend = LookupBackend()
    # open scopes: these tests are about scoring (the scope rules are in test_auth_scopes.py)
    app = build_api(core, backend, RAW_CFG, ingest_enabled=ingest, max_batch_events=max_batch_events,
                    auth=Authorizer({}, open_scopes=["read", "ingest"]))
    return TestClient(app, raise_server_exceptions=False), backend


EVENT = {"entity": "card-1", "event_time": CLOCK - 5, "x0": 3.0, "x1": 1.0}


def _expected(x0: float, x1: float) -> float:
    row = np.array([[x0, x1, 2.0, x0 / 2, np.nan]])
    return float(RAW_BST.inplace_predict(row)[0])


def test_raw_event_is_scored_on_the_lookup_row_in_feature_order():
    client, backend = _raw_client()
    r = client.post("/predict", json={"event": {**EVENT, "event_id": "e1"}, "return_features": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["probability"] == pytest.approx(_expected(3.0, 1.0), rel=1e-6)
    assert body["prediction"] == int(body["probability"] >= 0.5)
    assert (body["version"], body["model_version"], body["slot"]) == (4, 4, "blue")
    assert body["features_as_of"] == CLOCK and body["event_id"] == "e1"
    assert body["features"] == {"age_s": None, "x0_mean_1m": 1.5, "count_1m": 2.0, "x1": 1.0, "x0": 3.0}
    (rows, record), = backend.lookups
    assert record is True and rows.event_id == ["e1"]  # scored with an id: the served vector is recorded
    assert [(i, v, s) for i, v, s, _, _ in backend.logged] == [("e1", 4, "blue")]
    assert backend.ingested == []  # scoring alone never reaches the stream


def test_raw_event_without_time_or_id_or_optional_field():
    client, backend = _raw_client()
    r = client.post("/predict", json={"event": {"entity": "card-2", "x0": 1.0}})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"prediction", "probability", "version", "model_version", "slot", "features_as_of"}
    (rows, record), = backend.lookups
    assert record is False and np.isnan(rows.event_time[0]) and np.isnan(rows.x[0, 1])


def test_raw_batch_answers_each_event_and_lists_the_rejected():
    client, _ = _raw_client()
    events = [EVENT, {**EVENT, "x0": 99.0}, {**EVENT, "x0": -2.0, "x1": 0.5}]
    r = client.post("/predict", json={"events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rejected"] == [{"index": 1, "reason": "out_of_range:x0"}]
    assert [p["index"] for p in body["predictions"]] == [0, 2]
    assert body["predictions"][1]["probability"] == pytest.approx(_expected(-2.0, 0.5), rel=1e-6)


@pytest.mark.parametrize("event, loc", [
    ({**EVENT, "x9": 1.0}, ["body", "event", "x9"]),  # unknown field
    ({k: v for k, v in EVENT.items() if k != "entity"}, ["body", "event", "entity"]),
    ({**EVENT, "entity": ""}, ["body", "event", "entity"]),
    ({**EVENT, "entity": 7}, ["body", "event", "entity"]),  # typed: an entity is a string
    ({**EVENT, "entity": "e" * 201}, ["body", "event", "entity"]),
    ({k: v for k, v in EVENT.items() if k != "x0"}, ["body", "event", "x0"]),  # a required field
    ({**EVENT, "x0": "3"}, ["body", "event", "x0"]),  # numbers are JSON numbers
    ({**EVENT, "x1": True}, ["body", "event", "x1"]),
    ({**EVENT, "event_time": "yesterday"}, ["body", "event", "event_time"]),
    ({**EVENT, "event_id": ""}, ["body", "event", "event_id"]),
], ids=["unknown", "no-entity", "empty-entity", "int-entity", "long-entity", "no-field", "string-number", "bool",
        "bad-time", "empty-id"])
def test_bad_raw_event_is_422_naming_the_field(event, loc):
    client, backend = _raw_client()
    r = client.post("/predict", json={"event": event})
    assert r.status_code == 422, r.text
    assert loc in _locs(r)
    assert backend.lookups == []


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("key", ["x0", "x1", "event_time"])
def test_non_finite_raw_value_is_422_naming_it(token, key):
    client, backend = _raw_client()
    body = '{"events": [{"entity": "a", "x0": 1.0}, {"entity": "b", "x0": 1.0, "%s": %s}]}' % (key, token)
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert ["body", "events", 1, key] in _locs(r)
    assert backend.lookups == []


@pytest.mark.parametrize("t, reason", [(CLOCK + 86_400, "event_time_future"), (CLOCK - 86_400, "event_time_past")])
def test_event_time_far_from_the_stream_is_422_naming_event_time(t, reason):
    client, _ = _raw_client()
    r = client.post("/predict", json={"event": {**EVENT, "event_time": t}})
    assert r.status_code == 422, r.text
    assert _locs(r) == [["body", "event", "event_time"]] and reason in r.text
    r = client.post("/predict", json={"events": [{**EVENT, "event_time": t}]})
    assert r.status_code == 422 and r.json()["detail"]["rejected"] == [{"index": 0, "reason": reason}]


def test_oversized_batch_is_422_saying_the_limit():
    client, backend = _raw_client(max_batch_events=5)
    r = client.post("/predict", json={"events": [EVENT] * 6})
    assert r.status_code == 422
    assert ["body", "events"] in _locs(r) and "at most 5" in r.text
    assert client.post("/predict", json={"events": [EVENT] * 5}).status_code == 200
    assert client.post("/predict", json={"events": []}).status_code == 422


@pytest.mark.parametrize("payload, words", [
    ({"event": EVENT, "features": dict(zip(RAW_NAMES, [0.0] * 5))}, "exactly one"),
    ({"event": EVENT, "events": [EVENT]}, "exactly one"),
    ({"event": EVENT, "event_id": "e1"}, "carries its own"),
    ({"features": dict(zip(RAW_NAMES, [0.0] * 5)), "ingest": True}, "go with raw events"),
    ({"rows": [dict(zip(RAW_NAMES, [0.0] * 5))], "return_features": True}, "go with raw events"),
])
def test_raw_and_precomputed_do_not_mix(payload, words):
    client, _ = _raw_client()
    r = client.post("/predict", json=payload)
    assert r.status_code == 422 and words in r.text


def test_a_shard_that_cannot_answer_is_503_with_retry_after():
    client, _ = _raw_client()
    r = client.post("/predict", json={"events": [EVENT, {**EVENT, "entity": "down-1"}]})
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) >= 1 and "shard 1" in r.json()["detail"]
    assert client.post("/predict", json={"event": EVENT}).status_code == 200


def test_ingest_needs_the_http_source():
    client, backend = _raw_client(ingest=False)
    r = client.post("/predict", json={"event": {**EVENT, "event_id": "e1"}, "ingest": True})
    assert r.status_code == 409 and "stream.source: http" in r.json()["detail"]
    assert backend.lookups == [] and backend.ingested == []


def test_ingest_needs_an_event_id():
    client, backend = _raw_client(ingest=True)
    r = client.post("/predict", json={"events": [{**EVENT, "event_id": "e1"}, EVENT], "ingest": True})
    assert r.status_code == 422 and ["body", "events", 1, "event_id"] in _locs(r)
    assert backend.ingested == []


def test_ingest_sends_the_scored_events_through_the_ingest_path():
    client, backend = _raw_client(ingest=True)
    events = [{**EVENT, "event_id": "e1"}, {**EVENT, "event_id": "e2", "x0": 80.0},
              {"entity": "card-3", "x0": 2.0, "event_id": "e3"}]
    r = client.post("/predict", json={"events": events, "ingest": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ingested"] == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert body["rejected"] == [{"index": 1, "reason": "out_of_range:x0"}]  # not scored, not ingested
    df, = backend.ingested
    assert df["event_id"].tolist() == ["e1", "e3"] and (df["kind"] == "event").all()
    assert df["event_time"].tolist() == [CLOCK - 5, CLOCK]  # an event without a time enters at the stream's clock
    assert df["x0"].tolist() == [3.0, 2.0] and np.isnan(df["x1"].iloc[1])
    single = client.post("/predict", json={"event": {**EVENT, "event_id": "e4"}, "ingest": True}).json()
    assert single["ingested"]["accepted"] == 1 and single["event_id"] == "e4"


def test_raw_events_without_a_features_config_are_unknown(loaded):
    client, _ = loaded
    r = client.post("/predict", json={"event": EVENT})
    assert r.status_code == 422 and ["body", "event"] in _locs(r)


def test_raw_event_before_any_model_is_503():
    core = RouterCore(RAW_NAMES)
    empty = TestClient(build_api(core, LookupBackend(), RAW_CFG), raise_server_exceptions=False)
    assert empty.post("/predict", json={"event": EVENT}).status_code == 503


def test_openapi_documents_raw_events():
    client, _ = _raw_client()
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["Event"]["required"]) == {"entity", "x0"}
    assert {"EventPrediction", "EventBatchPrediction"} <= set(schemas)


def test_an_ingest_log_that_cannot_take_the_event_is_503_and_logs_nothing():
    client, backend = _raw_client(ingest=True)

    async def down(rows):
        raise RuntimeError("ingest actor restarting")

    backend.ingest = down
    r = client.post("/predict", json={"event": {**EVENT, "event_id": "e1"}, "ingest": True})
    assert r.status_code == 503 and "Retry-After" in r.headers and "retry" in r.json()["detail"]
    assert backend.logged == []
