"""Timeouts, load shedding and readiness of the Router (issue 13, item 14), without Ray.

The Router's backend talks to fake actors (methods with ``.remote`` returning coroutines): one
that never answers, one that died, one that is not running. Every call is bounded: what cannot
answer is a 503 with ``Retry-After`` naming it, counted — never a hang, never a 500. A replica with
no model is not ready (``/readyz``); Serve's own limits come from the config."""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import Any, Callable

import numpy as np
import pytest
import xgboost as xgb
from ray.exceptions import ActorDiedError

from streamfit.config import FeaturesConfig, ServingConfig, config_from_dict
from streamfit.errors import ConfigError
from streamfit.names import CONTROLLER_NAME, INGEST_NAME, MONITOR_NAME, TRAINER_NAME, shard_name
from streamfit.serve.api import build_api
from streamfit.serve.app import deployment_options, http_options
from streamfit.serve.auth import Authorizer
from streamfit.serve.backend import RayBackend, follow_controller, sync_once
from streamfit.serve.calls import UNAVAILABLE_HEADER, ActorCalls, Unavailable
from streamfit.serve.readiness import add_readiness, load_before_ready, readiness
from streamfit.serve.router import RemoteSlot, RouterCore, SlotUnavailable
from streamfit.serve.scoring import predict_rows
from streamfit.serve.slots import ModelSlot

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FEATURES = FeaturesConfig.model_validate({"fields": [{"name": "x0"}], "windows_s": [60],
                                          "aggregates": [{"field": "x0", "ops": ["mean"]}],
                                          "label_history": {"enabled": False}})
NAMES = FEATURES.feature_names()
BOUND_S = 30.0  # generous: only a hang would reach it
ANSWERS = {"actor_timeout_s": BOUND_S, "command_timeout_s": 2 * BOUND_S}  # for calls that must get their answer
OPEN = Authorizer({}, open_scopes=["read", "ingest", "admin"])


def _booster() -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, len(NAMES)))
    return xgb.train({"max_depth": 2, "objective": "binary:logistic", "nthread": 1},
                     xgb.DMatrix(x, label=(x[:, 0] > 0).astype(float), feature_names=NAMES), 3)


BST = _booster()


async def hang(*args: Any, **kwargs: Any) -> Any:
    await asyncio.Event().wait()


async def died(*args: Any, **kwargs: Any) -> Any:
    raise ActorDiedError()


class Method:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class FakeActor:
    """An actor handle whose every method runs ``fn`` (or the one named in ``methods``)."""

    def __init__(self, fn: Callable[..., Any], **methods: Callable[..., Any]) -> None:
        self._fn, self._methods = fn, methods

    def __getattr__(self, name: str) -> Method:
        return Method(self._methods.get(name, self._fn))


class Recorder:
    def __init__(self) -> None:
        self.counts: list[dict[str, str]] = []

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.counts.append(tags)


def _backend(actors: dict[str, Any], **serving: Any) -> tuple[RayBackend, dict[str, int]]:
    cfg = ServingConfig(**{"actor_timeout_s": 0.2, "flip_timeout_s": 0.1, "command_timeout_s": 0.3, **serving})
    backend = RayBackend(None, FEATURES, "test", 2, CONTROLLER_NAME, cfg)  # type: ignore[arg-type]
    lookups: dict[str, int] = {}

    def lookup(name: str) -> Any:
        lookups[name] = lookups.get(name, 0) + 1
        if name not in actors:
            raise ValueError(f"Failed to look up actor with name '{name}'")
        return actors[name]

    backend.actor = lookup  # type: ignore[method-assign]  # what the code before bounded calls used
    backend.calls.lookup = lookup
    backend.metrics = {"actor_unavailable": Recorder()}  # not Ray's counter: no Ray here
    return backend, lookups


def _client(backend: RayBackend, core: RouterCore | None = None) -> TestClient:
    core = core or RouterCore(NAMES)
    app = add_readiness(build_api(core, backend, FEATURES, ingest_enabled=True, auth=OPEN), core)
    return TestClient(app, raise_server_exceptions=False)


# -- the bounded call ----------------------------------------------------------------------

def test_a_call_that_never_answers_is_unavailable_after_its_timeout():
    calls = ActorCalls(lambda name: FakeActor(hang), timeout_s=0.1, retry_after_s=2.5)
    started = time.monotonic()
    with pytest.raises(Unavailable) as err:
        asyncio.run(asyncio.wait_for(calls.call("monitor", MONITOR_NAME, lambda m: m.stats.remote()), BOUND_S))
    assert time.monotonic() - started < BOUND_S
    assert err.value.status_code == 503 and err.value.headers == {"Retry-After": "3", UNAVAILABLE_HEADER: "monitor"}
    assert "the monitor is unavailable" in err.value.detail and "0.1 s" in err.value.detail
    assert calls.unavailable == {"monitor": 1}


def test_a_dead_actor_is_looked_up_again_and_an_actors_own_error_passes_through():
    handles = iter([FakeActor(died), FakeActor(lambda: _value_error())])
    looked_up = []
    calls = ActorCalls(lambda name: looked_up.append(name) or next(handles), timeout_s=BOUND_S)

    async def go() -> None:
        with pytest.raises(Unavailable, match="ActorDiedError"):
            await calls.call("controller", "ctl", lambda c: c.status.remote())
        with pytest.raises(ValueError, match="not now"):  # the actor answered: its error is not unavailability
            await calls.call("controller", "ctl", lambda c: c.status.remote())

    asyncio.run(go())
    assert looked_up == ["ctl", "ctl"] and calls.unavailable == {"controller": 1}


async def _value_error() -> None:
    raise ValueError("not now")


def test_an_actor_that_is_not_running_is_unavailable_naming_it():
    def lookup(name: str) -> Any:
        raise ValueError(f"Failed to look up actor with name '{name}'")

    with pytest.raises(Unavailable) as err:
        asyncio.run(ActorCalls(lookup, BOUND_S).call("trainer", TRAINER_NAME, lambda t: t.request_refit.remote()))
    assert err.value.headers[UNAVAILABLE_HEADER] == "trainer" and f"{TRAINER_NAME} is not running" in err.value.detail


# -- the Router's backend ------------------------------------------------------------------

@pytest.mark.parametrize("call, target", [
    (lambda b: b.traffic(), "controller"),
    (lambda b: b.monitor(), "monitor"),
    (lambda b: b.features("card-1"), "shard"),
    (lambda b: b.ingest([]), "ingest"),
    (lambda b: b.retrain("manual"), "trainer"),
    (lambda b: b.control("set_traffic", weights={"blue": 0, "green": 100}), "controller"),
])
def test_every_backend_call_to_a_silent_actor_ends_in_a_503(call, target):
    names = [CONTROLLER_NAME, MONITOR_NAME, INGEST_NAME, TRAINER_NAME, shard_name(0), shard_name(1)]
    backend, _ = _backend({n: FakeActor(hang) for n in names})
    with pytest.raises(Unavailable) as err:  # before: awaited forever (here: the outer bound's TimeoutError)
        asyncio.run(asyncio.wait_for(call(backend), BOUND_S))
    assert err.value.headers[UNAVAILABLE_HEADER] == target
    assert backend.stats()["unavailable"] == {target: 1} and backend.metrics["actor_unavailable"].counts == [{"actor": target}]


@pytest.mark.parametrize("method, path, body, target", [
    ("GET", "/traffic", None, "controller"),
    ("GET", "/monitor", None, "monitor"),
    ("GET", "/features/card-1", None, "shard"),
    ("POST", "/retrain", {"reason": "test"}, "trainer"),
    ("PUT", "/traffic", {"blue": 0, "green": 100}, "controller"),
    ("POST", "/rollout/abort", None, "controller"),
    ("POST", "/ingest", {"events": [{"kind": "event", "event_id": "e1", "entity": "card-1", "event_time": 10.0,
                                     "x0": 1.0}]}, "ingest"),
])
@pytest.mark.parametrize("state", ["died", "not running"])
def test_a_dead_or_missing_actor_answers_503_with_retry_after_never_500(method, path, body, target, state):
    names = {"controller": CONTROLLER_NAME, "monitor": MONITOR_NAME, "ingest": INGEST_NAME, "trainer": TRAINER_NAME}
    gone = [shard_name(0), shard_name(1)] if target == "shard" else [names[target]]
    backend, _ = _backend({n: FakeActor(died) for n in gone} if state == "died" else {})
    backend.audit = _noop  # type: ignore[method-assign]  # no registry here
    client = _client(backend)
    r = client.request(method, path, json=body)
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["Retry-After"] == "1" and r.headers[UNAVAILABLE_HEADER] == target
    assert "unavailable" in r.json()["detail"]
    assert client.get("/healthz").json()["unavailable"] == {target: 1}


def test_a_command_the_controller_refuses_is_still_409():
    backend, _ = _backend({CONTROLLER_NAME: FakeActor(lambda **kw: _value_error())}, **ANSWERS)
    r = _client(backend).post("/rollout/promote")
    assert r.status_code == 409 and "not now" in r.json()["detail"]
    assert backend.stats()["unavailable"] == {}


def test_the_status_page_renders_without_a_dead_monitor():
    status = {"slots": {"blue": None, "green": None}, "weights": {"blue": 100, "green": 0}, "revision": 0,
              "live_slot": "blue", "flips": 0}
    backend, _ = _backend({CONTROLLER_NAME: FakeActor(hang, status=lambda: _answer(status)),
                           MONITOR_NAME: FakeActor(died)}, **ANSWERS)
    backend.models = lambda: {"versions": [], "aliases": {}}  # type: ignore[method-assign]
    r = _client(backend).get("/")
    assert r.status_code == 200 and "streamfit" in r.text.lower()


async def _answer(value: Any) -> Any:
    return value


async def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def test_the_controllers_long_poll_is_bounded_and_the_follow_loop_goes_on():
    core = RouterCore(NAMES)
    polls: list[float] = []

    async def desired(after: int, poll_s: float) -> Any:
        polls.append(poll_s)
        await asyncio.Event().wait()

    ctl = FakeActor(hang, desired=desired)

    async def go() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sync_once(core, lambda: ctl, _load, "r1", poll_s=0.05, timeout_s=0.1), BOUND_S)
        follow = asyncio.ensure_future(follow_controller(core, lambda: ctl, _load, "r1", timeout_s=0.05))
        while len(polls) < 3:  # it keeps polling after each silent round
            await asyncio.sleep(0.01)
        follow.cancel()

    asyncio.run(asyncio.wait_for(go(), BOUND_S))


def _load(slot: str, version: int) -> ModelSlot:
    return ModelSlot(slot, version, BST, list(NAMES))


# -- slots in their own deployments ------------------------------------------------------------

class Handle:
    """A slot deployment's handle: ``predict`` answers from the booster, or never."""

    def __init__(self, silent: bool) -> None:
        self.predict = Method(self._predict)
        self.silent = silent

    async def _predict(self, x: np.ndarray) -> dict[str, Any]:
        if self.silent:
            await asyncio.Event().wait()
        return {"version": 2, "probs": BST.inplace_predict(x)}


def _remote_core(blue_silent: bool, green: int | None) -> RouterCore:
    # The silent slot is given up after 2 s; the other must answer within that even on a loaded machine.
    core = RouterCore(NAMES, remote={"blue": Handle(blue_silent), "green": Handle(False)}, remote_timeout_s=2.0)
    desired = {"slots": {"blue": 1, "green": green}, "weights": {"blue": 100, "green": 0}, "revision": 1}
    asyncio.run(core.apply(desired, _load))
    return core


def test_a_silent_slot_deployment_is_a_503_naming_the_slot():
    core = _remote_core(blue_silent=True, green=None)
    x = np.zeros((1, len(NAMES)))
    with pytest.raises(SlotUnavailable, match="no answer within 0.1 s"):
        asyncio.run(asyncio.wait_for(RemoteSlot("blue", 1, Handle(True), 0.1).apredict(x), BOUND_S))
    with pytest.raises(Unavailable) as err:
        asyncio.run(asyncio.wait_for(predict_rows(core, x, None, None), BOUND_S))
    assert err.value.status_code == 503 and err.value.headers[UNAVAILABLE_HEADER] == "slot"
    assert core.stats()["errors"]["blue"] == 1


def test_a_silent_slot_deployment_falls_back_to_the_other_ready_slot():
    core = _remote_core(blue_silent=True, green=2)
    slot, version, probs = asyncio.run(asyncio.wait_for(core.apredict(np.zeros((1, len(NAMES)))), BOUND_S))
    assert (slot, version, probs.shape) == ("green", 2, (1,))


# -- readiness -------------------------------------------------------------------------------

def test_readyz_is_503_until_the_replica_holds_a_model_and_healthz_stays_200():
    core = RouterCore(NAMES)
    client = _client(_backend({})[0], core)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and not r.json()["ready"]
    assert "no version is live yet" in r.json()["reason"]
    assert client.get("/healthz").status_code == 200 and client.get("/healthz").json()["ready"] is False
    assert client.post("/predict", json={"features": dict.fromkeys(NAMES, 0.0)}).headers["Retry-After"] == "1"
    desired = {"slots": {"blue": 3, "green": None}, "weights": {"blue": 100, "green": 0}, "revision": 1}
    core.desired_versions = dict(desired["slots"])
    assert readiness(core)["reason"] == "loading the desired version"
    asyncio.run(core.apply(desired, _load))
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True, "slots": {"blue": 3}, "revision": 1}


def test_a_replica_loads_the_live_model_before_it_takes_traffic():
    core = RouterCore(NAMES)
    desired = {"slots": {"blue": 3, "green": None}, "weights": {"blue": 100, "green": 0}, "revision": 4}
    reports: list[Any] = []
    ctl = FakeActor(hang, desired=lambda after, poll_s: _answer(desired), report=lambda rid, rep: reports.append(rid))
    ran = asyncio.run(load_before_ready(lambda: sync_once(core, lambda: ctl, _load, "r1", timeout_s=BOUND_S),
                                        2 * BOUND_S))
    assert ran and core.ready_slots() == ["blue"] and core.revision == 4 and reports == ["r1"]


@pytest.mark.parametrize("controller", ["silent", "not running"])
def test_a_replica_starts_anyway_when_the_controller_cannot_answer(controller):
    core = RouterCore(NAMES)

    def missing() -> Any:
        raise ValueError("no controller yet")

    ctl = FakeActor(hang)
    get = (lambda: ctl) if controller == "silent" else missing
    started = time.monotonic()
    ran = asyncio.run(load_before_ready(lambda: sync_once(core, get, _load, "r1", poll_s=0.05, timeout_s=0.05), 0.5))
    assert not ran and core.ready_slots() == [] and time.monotonic() - started < BOUND_S


# -- Serve's own limits, from the config -------------------------------------------------------

def test_serves_limits_come_from_the_serving_config():
    serving = ServingConfig(max_queued_requests=7, request_timeout_s=200.0, retry_after_s=2.0, port=8123)
    assert http_options(serving) == {"host": "127.0.0.1", "port": 8123, "request_timeout_s": 200.0}
    assert http_options(serving, port=9000)["port"] == 9000
    opts = deployment_options(serving)
    assert opts["max_queued_requests"] == 7 and opts["backpressure_config"] == {"status_code": 503, "retry_after_s": 2.0}
    assert opts["max_ongoing_requests"] == serving.max_ongoing_requests


def test_the_router_deployment_is_built_with_the_queue_limit():
    from ray.serve._private.build_app import build_app

    from streamfit.serve.app import build_router

    cfg = config_from_dict({"serving": {"max_queued_requests": 9, "isolated_slots": True}})
    built = build_app(build_router(cfg, "/tmp/unused", "test"), name="streamfit")
    assert {d.name: d.max_queued_requests for d in built.deployments} == {"Router": 9, "SlotBlue": 9, "SlotGreen": 9}


def test_the_default_timeouts_nest_so_an_actor_is_a_503_before_serve_answers_408():
    s = ServingConfig()
    assert s.actor_timeout_s <= s.command_timeout_s < s.request_timeout_s and s.command_timeout_s > s.flip_timeout_s
    assert s.max_queued_requests > 0


@pytest.mark.parametrize("serving, field", [
    ({"command_timeout_s": 200.0}, "serving.command_timeout_s"),  # not below request_timeout_s (180)
    ({"actor_timeout_s": 130.0}, "serving.command_timeout_s"),  # above command_timeout_s (120)
    ({"flip_timeout_s": 150.0}, "serving.command_timeout_s"),  # a rollback would outlast its command
    ({"max_queued_requests": 0}, "serving.max_queued_requests"),
])
def test_timeouts_that_do_not_nest_are_refused(serving, field):
    with pytest.raises(ConfigError, match=field):
        config_from_dict({"serving": serving})


def test_predictions_reach_the_monitor_and_are_dropped_without_one():
    recorded: list[Any] = []
    backend, _ = _backend({MONITOR_NAME: FakeActor(hang, record=lambda rows: recorded.append(rows))}, **ANSWERS)
    backend._prediction_log = [("e1", 1, "blue", 0.5, 1.0)]
    asyncio.run(backend.flush_predictions())
    assert recorded == [[("e1", 1, "blue", 0.5, 1.0)]] and backend._prediction_log == []
    missing, _ = _backend({})
    missing._prediction_log = [("e2", 1, "blue", 0.5, 1.0)]
    asyncio.run(missing.flush_predictions())  # no monitor in this deployment: dropped, never raised
    assert missing._prediction_log == [] and missing.stats()["unavailable"] == {}


def test_a_registry_that_cannot_be_read_is_a_503_naming_it():
    from streamfit.errors import RegistryError

    class Unreadable:
        def list_versions(self) -> Any:
            raise RegistryError("registry s3://bucket/r: cannot list versions: connection reset")

    backend, _ = _backend({})
    backend.registry = Unreadable()  # type: ignore[assignment]
    client = _client(backend)
    r = client.get("/models")
    assert r.status_code == 503 and r.headers[UNAVAILABLE_HEADER] == "registry" and "connection reset" in r.text
    assert client.get("/healthz").json()["unavailable"] == {"registry": 1}
