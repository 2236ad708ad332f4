"""Scoped tokens on the HTTP API (issue 13, items 6 and 7), over the real app with FastAPI's TestClient
(no Ray): which scope each endpoint needs, 401/403/503, the actor the audit log gets, failed auth
counted, pinned requests kept out of the canary analysis, and the admin token file the CLI reads."""

from __future__ import annotations

import asyncio
import stat
import warnings

import numpy as np
import pytest
import xgboost as xgb

from fastapi.security import HTTPAuthorizationCredentials

from streamfit.config import AuthConfig, FeaturesConfig
from streamfit.errors import ConfigError
from streamfit.serve.api import Backend, build_api
from streamfit.serve.auth import Authorizer
from streamfit.serve.lookup import LookupAnswer
from streamfit.serve.router import RouterCore
from streamfit.serve.slots import ModelSlot
from streamfit.tokens import check_open_scopes, ensure_admin_token, scope_tokens, token_notice

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CFG = FeaturesConfig.model_validate({"fields": [{"name": "x0"}], "windows_s": [60], "aggregates": [],
                                     "label_history": {"enabled": False}})
NAMES = CFG.feature_names()
ADMIN, INGEST, READ = "admin-secret", "ingest-secret", "read-secret"


def _booster() -> xgb.Booster:
    x = np.random.default_rng(0).normal(size=(100, len(NAMES)))
    return xgb.train({"max_depth": 2, "objective": "binary:logistic"},
                     xgb.DMatrix(x, label=(x[:, 0] > 0).astype(float), feature_names=NAMES), 3)


BST = _booster()


class Recording(Backend):
    """Records what reached it: ingested rows, logged predictions, control commands with their actor."""

    def __init__(self) -> None:
        self.ingested, self.logged, self.commands = [], [], []

    async def ingest(self, rows):
        self.ingested.append(rows)
        return len(rows), 0

    def log_predictions(self, rows):
        self.logged += rows

    async def control(self, command, **kwargs):
        self.commands.append((command, kwargs))
        return VIEW

    async def traffic(self):
        return VIEW

    def models(self):
        return {"versions": [], "aliases": {}}

    async def lookup(self, rows, record):
        n = len(rows.entity)
        feats = np.column_stack([rows.x[:, 0]] + [np.zeros(n)] * (len(NAMES) - 1))
        return LookupAnswer(feats, NAMES, np.full(n, 100.0), np.full(n, 100.0), [""] * n)


def _core() -> RouterCore:
    core = RouterCore(NAMES, seed=0)
    for slot, version in (("blue", 1), ("green", 2)):
        core.slots[slot] = ModelSlot(slot, version, BST, list(NAMES))
        core.desired_versions[slot] = version
    return core


VIEW = {"slots": {"blue": 1, "green": 2}, "weights": {"blue": 90, "green": 10}, "revision": 3, "live_slot": "blue",
        "flips": 0}
ROW = {n: 0.5 for n in NAMES}
EVENT = {"entity": "u1", "x0": 0.5}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- written first: these fail on the code before scoped tokens ------------------------------

def test_ingest_without_a_token_is_401_naming_the_scope():
    backend = Recording()
    client = TestClient(build_api(_core(), backend, CFG, admin_token=ADMIN, ingest_enabled=True))
    r = client.post("/ingest", json={"events": [{"kind": "event", "event_id": "e1", "entity": "u1",
                                                 "event_time": 100.0, "x0": 1.0}]})
    assert r.status_code == 401 and "ingest" in r.json()["detail"]
    assert backend.ingested == []


def test_scoring_with_event_ids_needs_the_ingest_scope():
    backend = Recording()
    client = TestClient(build_api(_core(), backend, CFG, admin_token=ADMIN))
    r = client.post("/predict", json={"features": ROW, "event_id": "e1"})
    assert r.status_code == 401 and "ingest" in r.json()["detail"]
    raw = client.post("/predict", json={"event": {**EVENT, "event_id": "e2"}})
    assert raw.status_code == 401
    assert backend.logged == []
    assert client.post("/predict", json={"features": ROW}).status_code == 200  # plain scoring stays open


def test_pinning_a_slot_needs_the_admin_token():
    client = TestClient(build_api(_core(), Recording(), CFG, admin_token=ADMIN))
    pin = {"X-Streamfit-Slot": "green"}
    assert client.post("/predict", json={"features": ROW}, headers=pin).status_code == 401
    assert client.post("/predict", json={"features": ROW}, headers={**pin, **_bearer("nope")}).status_code == 403
    r = client.post("/predict", json={"features": ROW}, headers={**pin, **_bearer(ADMIN)})
    assert r.status_code == 200 and r.json()["slot"] == "green"


def test_pinned_requests_never_count_in_the_canary_analysis():
    core = _core()
    core.weights = {"blue": 100, "green": 0}
    core.judging = True
    x = np.array([[0.5] * len(NAMES)])
    asyncio.run(core.apredict(x, pin="green"))
    core.predict(x, pin="green")
    assert core.report()["stats"]["green"]["requests"] == 0
    asyncio.run(core.apredict(x))
    assert core.report()["stats"]["blue"]["requests"] == 1


def test_a_pinned_request_with_event_ids_is_not_logged_for_live_accuracy():
    backend = Recording()
    client = TestClient(build_api(_core(), backend, CFG, admin_token=ADMIN))
    headers = {"X-Streamfit-Slot": "green", **_bearer(ADMIN)}
    assert client.post("/predict", json={"features": ROW, "event_id": "e1"}, headers=headers).status_code == 200
    assert client.post("/predict", json={"event": {**EVENT, "event_id": "e2"}}, headers=headers).status_code == 200
    assert backend.logged == []


def test_control_commands_carry_the_token_scope_as_actor_never_the_token():
    backend = Recording()
    client = TestClient(build_api(_core(), backend, CFG, admin_token=ADMIN))
    assert client.post("/rollback", headers=_bearer(ADMIN)).status_code == 200
    assert client.put("/traffic", json={"green": 10}, headers=_bearer(ADMIN)).status_code == 200
    actors = {kwargs.get("actor") for _, kwargs in backend.commands}
    assert actors == {"admin token"} and ADMIN not in str(backend.commands)


def test_failed_auth_is_counted_on_healthz():
    client = TestClient(build_api(_core(), Recording(), CFG, admin_token=ADMIN))
    client.post("/retrain")
    client.post("/retrain", headers=_bearer("nope"))
    failures = client.get("/healthz").json()["auth_failures"]
    assert failures == {"admin": {"missing": 1, "wrong": 1}}


def test_the_cli_reads_the_generated_admin_token_file(monkeypatch, tmp_path):
    from streamfit.scripts.control import ControlClient

    monkeypatch.delenv("STREAMFIT_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("STREAMFIT_ADMIN_TOKEN_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "streamfit").mkdir()
    (tmp_path / "streamfit" / "admin-token").write_text("from-the-file\n")
    assert ControlClient("http://127.0.0.1:1").token == "from-the-file"


# -- the scope rules ------------------------------------------------------------------------

def _scoped(open_scopes=(), predict_scope="none", **tokens) -> tuple[TestClient, Recording]:
    backend = Recording()
    auth = Authorizer(tokens, open_scopes, predict_scope)
    return TestClient(build_api(_core(), backend, CFG, ingest_enabled=True, auth=auth)), backend


INGEST_BODY = {"events": [{"kind": "event", "event_id": "e1", "entity": "u1", "event_time": 100.0, "x0": 1.0}]}


def test_each_scope_includes_the_ones_below_it():
    client, backend = _scoped(read=READ, ingest=INGEST, admin=ADMIN)
    for path in ("/traffic", "/models"):
        assert [client.get(path, headers=_bearer(t)).status_code for t in (READ, INGEST, ADMIN)] == [200] * 3, path
    assert [client.get(p).status_code for p in ("/", "/monitor", "/features/u1")] == [401] * 3
    assert client.get("/features/u1", headers=_bearer(READ)).status_code == 501  # past the check: no shards here
    assert client.post("/ingest", json=INGEST_BODY, headers=_bearer(INGEST)).status_code == 200
    assert client.post("/ingest", json=INGEST_BODY, headers=_bearer(ADMIN)).status_code == 200
    r = client.post("/ingest", json=INGEST_BODY, headers=_bearer(READ))
    assert r.status_code == 403 and "needs the ingest scope" in r.json()["detail"] and "read scope" in r.json()["detail"]
    r = client.put("/traffic", json={"green": 10}, headers=_bearer(INGEST))
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert len(backend.ingested) == 2 and backend.commands == []


def test_a_scope_with_a_token_is_closed_even_when_listed_open():
    client, _ = _scoped(open_scopes=["read"], read=READ)
    r = client.get("/traffic")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert "read scope" in r.json()["detail"] and "STREAMFIT_READ_TOKEN" in r.json()["detail"]
    assert client.get("/traffic", headers=_bearer("nope")).status_code == 403
    assert client.get("/traffic", headers=_bearer(READ)).status_code == 200


def test_a_scope_without_a_token_is_open_only_when_listed():
    closed, backend = _scoped(open_scopes=[])
    r = closed.post("/ingest", json=INGEST_BODY)
    assert r.status_code == 503 and "auth.open_scopes" in r.json()["detail"] and backend.ingested == []
    assert closed.get("/traffic").status_code == 503
    opened, backend = _scoped(open_scopes=["read", "ingest"], admin=ADMIN)
    assert opened.post("/ingest", json=INGEST_BODY).status_code == 200
    assert opened.post("/predict", json={"features": ROW, "event_id": "e9"}).status_code == 200
    assert opened.post("/rollback").status_code == 401  # admin has a token: never open


def test_healthz_and_plain_scoring_stay_open_and_plain_scoring_can_need_read():
    client, _ = _scoped(read=READ, ingest=INGEST, admin=ADMIN)
    assert client.get("/healthz").status_code == 200
    assert client.post("/predict", json={"features": ROW}).status_code == 200
    assert client.post("/predict", json={"event": EVENT}).status_code == 200
    r = client.post("/predict", json={"event": EVENT, "return_features": True})  # features are read data
    assert r.status_code == 401 and "read" in r.json()["detail"]
    strict, _ = _scoped(predict_scope="read", read=READ)
    assert strict.post("/predict", json={"features": ROW}).status_code == 401
    assert strict.post("/predict", json={"features": ROW}, headers=_bearer(READ)).status_code == 200


def test_an_open_scope_names_a_valid_token_in_the_audit_and_ignores_a_wrong_one():
    auth = Authorizer({"admin": ADMIN}, open_scopes=["read"])
    assert auth.check("read", None) == "anonymous"
    assert auth.check("read", HTTPAuthorizationCredentials(scheme="Bearer", credentials="stale")) == "anonymous"
    assert auth.check("read", HTTPAuthorizationCredentials(scheme="Bearer", credentials=ADMIN)) == "admin token"
    assert auth.failures() == {}


def test_a_refit_asked_over_http_is_audited_with_the_token_scope():
    class Refits(Recording):
        def __init__(self):
            super().__init__()
            self.audited = []

        async def audit(self, event, actor, reason):
            self.audited.append((event, actor, reason))

        async def retrain(self, reason):
            return {"version": 7}

    backend = Refits()
    client = TestClient(build_api(_core(), backend, CFG, auth=Authorizer({"admin": ADMIN})))
    assert client.post("/retrain", json={"reason": "new data"}, headers=_bearer(ADMIN)).status_code == 200
    assert backend.audited == [("retrain", "admin token", "new data")]


def test_failed_auth_reaches_the_backend_counter():
    failed = []

    class Counting(Recording):
        def auth_failed(self, scope, reason):
            failed.append((scope, reason))

    client = TestClient(build_api(_core(), Counting(), CFG, ingest_enabled=True,
                                  auth=Authorizer({"read": READ, "admin": ADMIN})))
    client.post("/ingest", json=INGEST_BODY, headers=_bearer(READ))
    client.get("/models")
    assert failed == [("ingest", "scope"), ("read", "missing")]


# -- tokens from the environment, files, and the generated admin token ------------------------

def test_tokens_come_from_the_environment_or_their_files(tmp_path):
    secret = tmp_path / "ingest"
    secret.write_text("from-a-file\n")
    env = {"STREAMFIT_READ_TOKEN": "r", "STREAMFIT_INGEST_TOKEN_FILE": str(secret)}
    assert scope_tokens(env) == {"read": "r", "ingest": "from-a-file"}
    auth = Authorizer.from_config(AuthConfig(open_scopes=[]), env)
    assert auth.check("ingest", HTTPAuthorizationCredentials(scheme="Bearer", credentials="from-a-file")) \
        == "ingest token"
    with pytest.raises(ConfigError, match="STREAMFIT_ADMIN_TOKEN_FILE"):
        scope_tokens({"STREAMFIT_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})


def test_run_generates_the_admin_token_once_into_a_file_only_the_user_reads(tmp_path, capsys):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    path = ensure_admin_token(env)
    assert path == tmp_path / "streamfit" / "admin-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = env["STREAMFIT_ADMIN_TOKEN"]
    assert len(token) >= 32 and path.read_text().strip() == token
    assert token not in token_notice(path) and str(path) in token_notice(path)
    again = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert ensure_admin_token(again) == path and again["STREAMFIT_ADMIN_TOKEN"] == token  # reused, not replaced
    assert ensure_admin_token({"STREAMFIT_ADMIN_TOKEN": "set"}) is None  # one set by the operator is kept
    assert token not in capsys.readouterr().out


def test_the_cli_sends_the_admin_token_for_reads_unless_a_read_token_is_set(monkeypatch, tmp_path):
    from streamfit.scripts.control import ControlClient, ControlError

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in ("ADMIN", "READ"):
        monkeypatch.delenv(f"STREAMFIT_{name}_TOKEN", raising=False)
        monkeypatch.delenv(f"STREAMFIT_{name}_TOKEN_FILE", raising=False)
    with pytest.raises(ControlError, match="STREAMFIT_ADMIN_TOKEN.*admin-token"):
        ControlClient("http://127.0.0.1:1").promote()
    monkeypatch.setenv("STREAMFIT_ADMIN_TOKEN", "a")
    assert ControlClient().read_token == "a"
    monkeypatch.setenv("STREAMFIT_READ_TOKEN", "r")
    assert (ControlClient().token, ControlClient().read_token) == ("a", "r")


@pytest.mark.parametrize("host, address, allowed", [
    ("127.0.0.1", None, True), ("0.0.0.0", None, False), ("127.0.0.1", "auto", False)])
def test_run_on_a_network_refuses_an_open_ingest_scope_unless_told(host, address, allowed):
    auth = AuthConfig(open_scopes=["read", "ingest"])
    if allowed:
        check_open_scopes(auth, host, address, environ={})
    else:
        with pytest.raises(ConfigError, match="auth.open_scopes: ingest .*allow_open_on_network"):
            check_open_scopes(auth, host, address, environ={})
    check_open_scopes(auth, host, address, allow=True, environ={})
    check_open_scopes(auth, host, address, environ={"STREAMFIT_INGEST_TOKEN": "t"})  # a token closes it
    check_open_scopes(AuthConfig(open_scopes=["read", "ingest"], allow_open_on_network=True), host, address,
                      environ={})
    check_open_scopes(AuthConfig(), host, address, environ={})  # read open: allowed anywhere


def test_streamfit_run_on_a_network_host_refuses_open_ingest_naming_the_field(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from streamfit.scripts import cli

    monkeypatch.delenv("STREAMFIT_INGEST_TOKEN", raising=False)
    monkeypatch.delenv("STREAMFIT_INGEST_TOKEN_FILE", raising=False)
    cfg = tmp_path / "open.yaml"
    cfg.write_text("serving:\n  host: 0.0.0.0\nauth:\n  open_scopes: [read, ingest]\n")
    out = CliRunner().invoke(cli.app, ["run", "-c", str(cfg)], env={"COLUMNS": "300"})
    assert out.exit_code == 2 and "auth.open_scopes: ingest" in out.output and "--allow-open-scopes" in out.output


def test_an_admin_token_that_cannot_be_written_is_a_config_error_naming_the_variable(tmp_path):
    (tmp_path / "streamfit").write_text("a file where the directory should be")
    with pytest.raises(ConfigError, match="STREAMFIT_ADMIN_TOKEN.*admin-token"):
        ensure_admin_token({"XDG_CONFIG_HOME": str(tmp_path)})
