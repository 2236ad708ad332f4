"""The body of ``POST /ingest`` is checked before any frame is built (issue 13 item 3).

Written first, against the code before the check: there, 4,000 events with distinct keys (a
~200 KB body) built a 4,000 x 4,000 frame (~260 MB traced) on the Router's event loop, an
unknown key nested 600 deep was accepted (200), an ``events`` value nested 600 deep and a
``/predict`` event nested as deep answered 500, and a client's ``_partition`` column reached
the ingest log. Now: the first unknown key is a 422 naming it, found with one dict lookup per
key (tracemalloc: well under 1 MB), every value is a JSON scalar, text is length-limited, and
requests over the event or byte cap are 413.
"""

from __future__ import annotations

import json
import tracemalloc
import warnings

import pandas as pd
import pytest

from streamfit.config import FeaturesConfig, HttpSourceConfig
from streamfit.schema import BASE_COLUMNS, LABEL
from streamfit.serve.api import Backend, build_api
from streamfit.serve.auth import Authorizer
from streamfit.serve.bodies import BodyError, ID_CHARS, ingest_body, ingest_columns
from streamfit.serve.router import RouterCore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CFG = FeaturesConfig()
ALLOWED = BASE_COLUMNS + [LABEL] + [f.name for f in CFG.fields]
GOOD = {"event_id": "e1", "entity": "u1", "event_time": 100.0, "x0": 1.0, "x1": 2.0, "x2": 3.0}


class Recording(Backend):
    """Keeps every frame the API forwards to the ingest log."""

    def __init__(self) -> None:
        self.ingested: list[pd.DataFrame] = []

    async def ingest(self, rows):
        self.ingested.append(rows)
        return len(rows), 0


def _client(limits: HttpSourceConfig | None = None) -> tuple[TestClient, Recording]:
    backend = Recording()
    app = build_api(RouterCore(CFG.feature_names()), backend, CFG, ingest_enabled=True, ingest_limits=limits,
                    auth=Authorizer({}, open_scopes=["read", "ingest"]))
    return TestClient(app, raise_server_exceptions=False), backend


def _distinct_keys(n: int = 4000) -> list[dict]:
    return [{"event_id": f"e{i}", "entity": "u1", "event_time": 100.0, f"k{i}": 1} for i in range(n)]


def test_distinct_keys_are_refused_cheaply_by_the_check():
    events = _distinct_keys()
    tracemalloc.start()
    try:
        with pytest.raises(BodyError) as err:
            ingest_columns(events, ALLOWED, max_events=10_000, max_chars=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.status == 422 and err.value.detail[0]["loc"] == ["body", "events", 0, "k0"]
    assert peak < 200_000, peak  # the frame the code before built from them: ~260 MB


def test_distinct_keys_over_http_are_a_422_naming_the_key_and_build_nothing():
    client, backend = _client()
    body = json.dumps({"events": _distinct_keys()}).encode()
    client.post("/ingest", content=json.dumps({"events": [GOOD]}))  # warm up: routes, models, imports
    backend.ingested.clear()
    tracemalloc.start()
    try:
        r = client.post("/ingest", content=body, headers={"content-type": "application/json"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "events", 0, "k0"]
    assert "unknown key 'k0'" in r.json()["detail"][0]["msg"]
    assert backend.ingested == []
    assert peak < 30_000_000, peak  # the body and its parse (~200 KB of JSON); the code before: ~260 MB


@pytest.mark.parametrize("key", ["_partition", "_entity_hash", "_anything", "extra"])
def test_internal_and_unknown_columns_are_refused_never_forwarded(key):
    client, backend = _client()
    r = client.post("/ingest", json={"events": [GOOD, {**GOOD, "event_id": "e2", key: 3}]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "events", 1, key]
    assert backend.ingested == []


def test_only_schema_columns_are_forwarded_and_bad_values_stay_row_rejections():
    client, backend = _client()
    events = [GOOD, {**GOOD, "event_id": "e2", "x0": "abc"}, {"kind": "label", "event_id": "e1", "entity": "u1",
                                                             "event_time": 101.0, "label": 1}]
    r = client.post("/ingest", json={"events": events})
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == [{"index": 1, "event_id": "e2", "reason": "non_numeric:x0"}]
    df, = backend.ingested
    assert set(df.columns) <= set(ALLOWED) and len(df) == 2
    assert df["kind"].tolist() == ["event", "label"]


@pytest.mark.parametrize("field", ["entity", "event_id", "x0", "kind"])
def test_text_over_the_limit_is_a_422_naming_the_key(field):
    client, backend = _client(HttpSourceConfig(max_id_chars=16))
    r = client.post("/ingest", json={"events": [{**GOOD, field: "z" * 17}]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "events", 0, field]
    assert client.post("/ingest", json={"events": [{**GOOD, "entity": "z" * 16}]}).status_code == 200


def test_the_default_text_limit_is_256():
    client, _ = _client()
    assert client.post("/ingest", json={"events": [{**GOOD, "event_id": "i" * 256}]}).status_code == 200
    assert client.post("/ingest", json={"events": [{**GOOD, "event_id": "i" * 257}]}).status_code == 422


@pytest.mark.parametrize("value", [[1.0], {"a": 1}, [[[]]]])
def test_a_value_that_is_not_a_json_scalar_is_a_422(value):
    client, backend = _client()
    r = client.post("/ingest", json={"events": [{**GOOD, "x0": value}]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "events", 0, "x0"]
    assert backend.ingested == []


@pytest.mark.parametrize("depth", [600, 900, 5000])
@pytest.mark.parametrize("where", ["value", "unknown_key", "events"])
def test_deeply_nested_json_is_a_4xx_never_a_500(depth, where):
    client, backend = _client()
    nested = "[" * depth + "]" * depth
    event = json.dumps(GOOD)[:-1]
    body = {"value": '{"events": [%s, "x0": %s}]}' % (event[1:] and event, nested),
            "unknown_key": '{"events": [%s, "k": %s}]}' % (event, nested),
            "events": '{"events": %s}' % nested}[where]
    r = client.post("/ingest", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert backend.ingested == []


@pytest.mark.parametrize("depth", [600, 900])
def test_deeply_nested_predict_body_is_a_422(depth):
    client, _ = _client()
    nested = "[" * depth + "]" * depth
    r = client.post("/predict", content='{"event": {"entity": "u", "x0": %s}}' % nested,
                    headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text[:200]


def test_too_many_events_or_bytes_are_413():
    client, backend = _client(HttpSourceConfig(max_events=3, max_body_bytes=800))
    assert client.post("/ingest", json={"events": [GOOD] * 3}).status_code == 200
    r = client.post("/ingest", json={"events": [GOOD] * 4})
    assert r.status_code == 413 and "at most 3" in r.json()["detail"]
    big = json.dumps({"events": [{**GOOD, "entity": "u" * 200}] * 3}).encode()
    assert len(big) > 800
    assert client.post("/ingest", content=big, headers={"content-type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: the cap holds as the body streams in
        for i in range(0, len(big), 500):
            yield big[i:i + 500]

    assert client.post("/ingest", content=chunks(), headers={"content-type": "application/json"}).status_code == 413
    assert len(backend.ingested) == 1


@pytest.mark.parametrize("body", [b"{}", b'{"rows": []}', b'{"events": []}', b'{"events": [1]}',
                                  b'{"events": [{}], "more": 1}', b"[]", b"not json", b'"\xff"'])
def test_malformed_bodies_are_422(body):
    client, backend = _client()
    r = client.post("/ingest", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert backend.ingested == []


def test_an_event_without_keys_is_a_rejected_row_as_before():
    client, _ = _client()
    r = client.post("/ingest", json={"events": [GOOD, {}]})
    assert r.status_code == 200, r.text
    assert [(x["index"], x["reason"]) for x in r.json()["rejected"]] == [(1, "missing:event_id")]


def test_openapi_documents_the_strict_ingest_body():
    client, _ = _client(HttpSourceConfig(max_events=7, max_id_chars=9))
    op = client.get("/openapi.json").json()["paths"]["/ingest"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    events = schema["properties"]["events"]
    assert schema["additionalProperties"] is False and events["maxItems"] == 7
    assert events["items"]["additionalProperties"] is False
    assert set(events["items"]["properties"]) == set(ALLOWED)
    assert {"type": "string", "maxLength": 9} in events["items"]["properties"]["entity"]["anyOf"]
    assert {"413", "429"} <= set(op["responses"])


def test_predict_event_ids_are_length_limited():
    client, _ = _client()
    rows = [dict(zip(CFG.feature_names(), [0.0] * len(CFG.feature_names())))] * 2
    r = client.post("/predict", json={"rows": rows, "event_ids": ["a", "b" * (ID_CHARS + 1)]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "event_ids", 1]


def test_ingest_body_parses_and_checks_in_one_call():
    cols = ingest_body(json.dumps({"events": [GOOD, {"entity": "u2", "kind": "label"}]}).encode(), ALLOWED, 10, 256)
    assert cols["entity"] == ["u1", "u2"] and cols["x0"] == [1.0, None] and cols["kind"] == [None, "label"]
