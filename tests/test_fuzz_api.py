"""Property-based fuzzing of every HTTP endpoint (issue 13, acceptance) on a real local Ray + Serve.

schemathesis reads the Router's ``/openapi.json`` and drives each operation over real HTTP with generated
requests: schema-valid ones, schema-violating ones, and what the schema cannot describe (raw events with
typed, mistyped and missing columns for ``/ingest`` and ``/predict``; the slot pin and routing-key headers).
Each operation is fuzzed four times: with no token, then with the read, the ingest and the admin token.
Every answer must be below 500; a 401/403 names the scope the request needs, and a token of that scope
never gets one; a caller without a scope changes nothing that scope guards, read before and after: the
split, slot versions and rollout (``/traffic``), the registry's aliases, versions and audit log, the rows
the ingest buffer accepted, the trainer's refit attempts, and the predictions logged for live accuracy.

Deterministic (``derandomize``, no example database) and bounded: ``FUZZ_EXAMPLES`` (default 50) examples
per operation and token.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import requests
import schemathesis
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from streamfit.config import config_from_dict
from streamfit.names import INGEST_NAME, NAMESPACE
from streamfit.scripts.pipeline import Pipeline, wait_until

TOKENS = {"read": "fuzz-read-token", "ingest": "fuzz-ingest-token", "admin": "fuzz-admin-token"}
RANK = {None: -1, "open": -1, "read": 0, "ingest": 1, "admin": 2}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
PIN, ROUTING = "X-Streamfit-Slot", "X-Routing-Key"
NOW = float(int(time.time()))  # event times near the processing clock (older or newer are rejected)

# The scope each operation needs ("open": none); /predict's depends on its body and the pin header.
ENDPOINTS = {
    ("POST", "/predict"): None, ("GET", "/"): "read", ("GET", "/healthz"): "open", ("GET", "/readyz"): "open",
    ("GET", "/models"): "read",
    ("GET", "/traffic"): "read", ("GET", "/monitor"): "read", ("GET", "/features/{entity}"): "read",
    ("POST", "/ingest"): "ingest", ("PUT", "/traffic"): "admin", ("POST", "/rollout"): "admin",
    ("POST", "/rollout/promote"): "admin", ("POST", "/rollout/abort"): "admin", ("POST", "/rollback"): "admin",
    ("POST", "/retrain"): "admin",
}
# The part of the state each scope guards: a caller below it must leave that part as it was.
GUARDED = {"traffic": "admin", "registry": "admin", "trainer": "admin", "ingest": "ingest", "predictions": "ingest"}
PASSES = [None, "read", "ingest", "admin"]  # admin last: it may change anything


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    names = [f"STREAMFIT_{s.upper()}_TOKEN" for s in TOKENS]
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({f"STREAMFIT_{s.upper()}_TOKEN": t for s, t in TOKENS.items()})  # replicas inherit them
    cfg = config_from_dict({"stream": {"source": "http"}, "registry": {"uri": str(root / "registry")},
                            "checkpoints": {"uri": str(root / "ckpt")},
                            # A slow actor answers 503 by design; on a loaded machine that is no client's mistake.
                            "serving": {"port": 0, "lookup_timeout_s": 30.0, "actor_timeout_s": 30.0},
                            "features": {"windows_s": [60]}})
    try:
        p = Pipeline.start(cfg)
        try:
            _first_version_live(p)
            yield p
        finally:
            p.stop()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _register(p: Pipeline, seed: int) -> int:
    names = p.cfg.features.feature_names()
    x = np.random.default_rng(seed).normal(size=(500, len(names)))
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                    xgb.DMatrix(x, label=(x[:, 0] > 0).astype(float), feature_names=names), 5)
    meta = {"features": names, "schema_hash": p.cfg.features.schema_hash(), "trigger": "test",
            "verify": {"x": x[:8].tolist(), "p": bst.inplace_predict(x[:8]).tolist()}}
    return p.registry.register(bst, meta)


def _first_version_live(p: Pipeline) -> None:
    """v1 live and loaded by the replica (so scoring answers), v2 registered (so the admin pass can roll out)."""
    v1 = _register(p, 1)
    ray.get(p.controller.start_rollout.remote(v1, actor="test", mode="flip"))

    def loaded() -> bool:
        t = ray.get(p.controller.status.remote())
        held = [r.get(t["live_slot"]) for r in t.get("replicas", {}).values()]
        return (t["slots"][t["live_slot"]] == v1 and held and all(h == v1 for h in held)
                and p.registry.aliases().get("live") == v1 and not (t.get("rollout") or {}).get("phase") in
                ("loading", "baking", "paused"))

    assert wait_until(loaded, timeout_s=120), ray.get(p.controller.status.remote())
    _register(p, 2)


@pytest.fixture(scope="module")
def schema(pipe):
    return schemathesis.openapi.from_url(f"{pipe.url}/openapi.json")


# -- the state a scope guards ----------------------------------------------------------------

def _state(p: Pipeline) -> dict[str, Any]:
    t = ray.get(p.controller.status.remote())
    rollout = t.get("rollout") or {}
    trainer = ray.get(p.trainer.stats.remote())
    ingest = ray.get(ray.get_actor(INGEST_NAME, namespace=NAMESPACE).stats.remote())
    return {
        "traffic": {**{k: t.get(k) for k in ("slots", "weights", "revision", "live_slot", "flips", "shadow_share")},
                    "rollout": {k: rollout.get(k) for k in ("id", "version", "phase", "step", "approved")},
                    "history": len(t.get("history", []))},
        "registry": {"aliases": p.registry.aliases(), "versions": [m["version"] for m in p.registry.list_versions()],
                     "audit": len(p.registry.audit_log())},
        "trainer": {"attempts": len(trainer["refits"]) + len(trainer["rejected"]), "rows_seen": trainer["rows_seen"]},
        "ingest": {"accepted": ingest["next_position"], "committed": ingest["committed"]},
        "predictions": ray.get(p.monitor.stats.remote())["predictions_logged"],
    }


_markers = itertools.count()


def _predictions_flushed(p: Pipeline) -> None:
    """Wait until every prediction the Router logged so far reached the monitor: a marker prediction (its
    label sent first, so its arrival is a join) is logged after them, and a replica flushes in order."""
    marker = f"fuzz-marker-{next(_markers)}-{os.getpid()}"
    joined = ray.get(p.monitor.stats.remote())["joined"]
    ray.get(p.monitor.labels.remote([marker], [1.0]))
    row = {n: 0.0 for n in p.cfg.features.feature_names()}
    r = requests.post(f"{p.url}/predict", json={"features": row, "event_id": marker}, timeout=60,
                      headers={"Authorization": f"Bearer {TOKENS['ingest']}"})
    assert r.status_code == 200, r.text
    assert wait_until(lambda: ray.get(p.monitor.stats.remote())["joined"] > joined, timeout_s=60)


def _router_traceback() -> str:
    """The last traceback in the Router replicas' logs: what a 5xx was, for the failure message."""
    try:
        logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"  # no public accessor
        text = "\n".join(f.read_text(errors="replace") for f in sorted(logs.glob("replica_*Router*.log")))
    except Exception as err:  # only a diagnostic: never hide the failure itself
        return f"(no replica log: {err})"
    at = text.rfind("Traceback (most recent call last)")
    return text[at:][:6000] if at >= 0 else "(no traceback in the replica logs)"


# -- what the schema cannot describe ---------------------------------------------------------

JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
NUMBER = st.floats(-1e6, 1e6) | st.integers(-10**6, 10**6)
ID = st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=12)


@st.composite
def _spoilt(draw: st.DrawFn, valid: st.SearchStrategy, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """A valid dict (most often), or one with a key or two dropped, mistyped, or added (``extra``)."""
    d = dict(draw(valid))
    spoils = draw(st.sampled_from([0, 0, 0, 1, 2]))
    for key in draw(st.lists(st.sampled_from(sorted(d) + list(extra)), min_size=spoils, max_size=spoils, unique=True)):
        if key in d and draw(st.booleans()):
            del d[key]
        else:
            d[key] = draw(JUNK)
    return d


def _event(names: list[str], need_id: bool, ids: st.SearchStrategy = ID) -> st.SearchStrategy:
    """A raw event: an entity, a time near now, the config's fields; ``event_id`` always or sometimes."""
    ident = {"event_id": ids}
    return st.fixed_dictionaries({"entity": st.sampled_from(["alice", "bob"]) | ID,
                                  "event_time": st.floats(-3600, 60).map(lambda dt: NOW + dt),
                                  **{n: NUMBER for n in names}, **(ident if need_id else {})},
                                 optional={} if need_id else ident)


def _custom_body(path: str, fields: list[str], features: list[str]) -> st.SearchStrategy | None:
    """Bodies the schema leaves open (``/ingest``'s events) or describes too loosely for valid ones to be
    generated often (``/predict``): valid, or spoilt in one or two places."""
    if path == "/ingest":
        def rows(ids: st.SearchStrategy) -> st.SearchStrategy:
            label = st.fixed_dictionaries({"kind": st.just("label"), "event_id": ids, "entity": st.just("alice"),
                                           "event_time": st.just(NOW), "label": st.sampled_from([0, 1])})
            row = _spoilt(_event(fields, True, ids) | label, ("kind", "_partition", "unknown"))
            return st.fixed_dictionaries({"events": st.lists(row, min_size=1, max_size=8)})

        return st.sampled_from([ID, st.integers(0, 10**9)]).flatmap(rows)  # a client's ids: text, or numbers
    if path == "/predict":
        event = _spoilt(_event(fields, False), ("unknown",))
        row = _spoilt(st.fixed_dictionaries({n: NUMBER for n in features}))
        flags = {"ingest": st.booleans(), "return_features": st.booleans(), "routing_key": ID}
        rows = st.lists(row, min_size=1, max_size=4)
        return st.one_of(st.fixed_dictionaries({"event": event}, optional=flags),
                         st.fixed_dictionaries({"events": st.lists(event, min_size=1, max_size=4)}, optional=flags),
                         st.fixed_dictionaries({"features": row}, optional={"event_id": ID, "routing_key": ID}),
                         st.fixed_dictionaries({"rows": rows}, optional={"event_ids": st.lists(ID, max_size=4)}))
    return None


HEADER_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12)  # what requests sends


def _predict_scope(body: Any, pinned: bool) -> str:
    """The scope a valid /predict request needs (the rule of ``serve.api.predict_scope``, on the JSON)."""
    if pinned:
        return "admin"
    body = body if isinstance(body, dict) else {}
    events = [body["event"]] if isinstance(body.get("event"), dict) else (body.get("events") or [])
    if (body.get("ingest") or body.get("event_id") is not None or body.get("event_ids")
            or any(isinstance(e, dict) and e.get("event_id") is not None for e in events)):
        return "ingest"
    return "read" if body.get("return_features") else "open"


def _described(req: requests.PreparedRequest, who: str | None) -> str:
    """The request as sent, to reproduce it (the token named by its scope)."""
    headers = {k: (f"Bearer <{who} token>" if k == "Authorization" else v) for k, v in req.headers.items()
               if k not in ("User-Agent", "Accept-Encoding", "Accept", "Connection", "X-Schemathesis-TestCaseId")}
    body = req.body.decode(errors="replace") if isinstance(req.body, bytes) else req.body
    return f"{req.method} {req.url} {headers}\n{str(body)[:3000]}"


def _check(who: str | None, needed: str, r: requests.Response, what: str) -> None:
    """The auth properties of one answer: a 401/403 names the scope needed; enough scope is never refused;
    too little never succeeds."""
    if r.status_code in (401, 403):
        detail = str(r.json().get("detail"))
        named = re.search(r"needs the (read|ingest|admin) scope", detail)
        assert named and named.group(1) == needed, f"{what}\n-> {r.status_code} {detail}"
        assert RANK[who] < RANK[needed], f"{what}\n-> refused a token of the {who} scope: {detail}"
    if 200 <= r.status_code < 300:
        assert RANK[who] >= RANK[needed], f"{what}\n-> {r.status_code} without the {needed} scope: {r.text[:300]}"


# -- the fuzz ------------------------------------------------------------------------------

def _strategies(op: Any, path: str) -> list[st.SearchStrategy]:
    """schemathesis' cases for ``op``: schema-valid and schema-violating."""
    modes = [op.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    if ENDPOINTS[op.method.upper(), path] != "open":  # the probes have no body, parameter or token to get wrong
        modes.append(op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    return modes


def _fuzz_one(case: Any, data: Any, who: str | None, needed: str | None, custom: st.SearchStrategy | None,
              session: requests.Session) -> requests.Response:
    """Send one generated request (with ``who``'s token, or none) and check its answer."""
    body = case.body
    if custom is not None and data.draw(st.sampled_from([True, True, False]), label="custom body"):
        # Sent as bytes: Python's json (the server's) reads NaN and Infinity, which requests refuses to write.
        body = data.draw(custom, label="body")
        case.body, case.media_type = json.dumps(body).encode(), "application/json"
    mine = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
    if case.path == "/predict":
        pin = data.draw(st.sampled_from([None, "blue", "green", "purple", ""]), label="pin")
        key = data.draw(st.none() | HEADER_TEXT, label="routing key")
        mine.update({k: v for k, v in ((PIN, pin), (ROUTING, key)) if v is not None})
    # Sent here, not by case.call: it drops a header its negative mode removed, even one set again (the token).
    request = case.as_transport_kwargs()
    request["headers"] = {**{k: v for k, v in request["headers"].items()
                             if k.lower() not in ("authorization", PIN.lower(), ROUTING.lower())}, **mine}
    r = session.request(**request, timeout=120)
    what = _described(r.request, who)
    if r.status_code >= 500:
        raise AssertionError(f"{what}\n-> {r.status_code} {r.text[:1000]}\n{_router_traceback()}")
    case.validate_response(r, checks=[not_a_server_error])  # the same property, as schemathesis words it
    _check(who, needed or _predict_scope(body, PIN in mine and r.status_code != 422), r, what)
    return r


def test_every_operation_of_the_schema_is_fuzzed(schema):
    ops = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert ops == set(ENDPOINTS)


def test_the_state_read_sees_every_guarded_part_change(pipe):
    """The no-change checks are not vacuous: each part of ``_state`` moves when its scope acts."""
    before = _state(pipe)
    admin, ingest = ({"Authorization": f"Bearer {TOKENS[s]}"} for s in ("admin", "ingest"))
    event = {"event_id": "fuzz-probe", "entity": "alice", "event_time": NOW,
             **{f.name: 1.0 for f in pipe.cfg.features.fields}}
    r = requests.post(f"{pipe.url}/ingest", json={"events": [event]}, headers=ingest, timeout=60)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    for share in (0.05, 0.0):
        r = requests.put(f"{pipe.url}/traffic", json={"shadow_share": share}, headers=admin, timeout=60)
        assert r.status_code == 200, r.text
    assert requests.post(f"{pipe.url}/retrain", headers=admin, timeout=120).status_code == 200
    _predictions_flushed(pipe)
    after = _state(pipe)
    assert [part for part in GUARDED if after[part] == before[part]] == [], (before, after)


@pytest.mark.parametrize("who, method, path", [(who, m, p) for who in PASSES for (m, p) in ENDPOINTS],
                         ids=lambda v: v if isinstance(v, str) else "no-token" if v is None else "")
def test_fuzz(pipe, schema, who, method, path):
    custom = _custom_body(path, [f.name for f in pipe.cfg.features.fields], pipe.cfg.features.feature_names())
    before = _state(pipe)
    session = requests.Session()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(_strategies(schema[path][method], path)), data=st.data())
    def fuzz(case, data):
        _fuzz_one(case, data, who, ENDPOINTS[method, path], custom, session)

    fuzz()
    if who == "admin":
        return
    if path == "/predict" and RANK[who] < RANK["ingest"]:
        _predictions_flushed(pipe)
        before["predictions"] += 1  # the marker
    after = _state(pipe)
    for part, scope in GUARDED.items():
        if RANK[who] < RANK[scope]:
            assert after[part] == before[part], f"{part} changed by {method} {path} without the {scope} scope"
