"""A port picked free and taken before Serve's proxy binds it (by another process, or a Ray worker on a loaded
machine: the demo failed so in a loaded CI run) does not fail the start: streamfit starts Serve on another."""

from __future__ import annotations

import socket
import sys

import httpx
import pytest

import streamfit.scripts.pipeline as pipeline
from streamfit.config import config_from_dict
from streamfit.scripts.pipeline import Pipeline


@pytest.fixture
def held_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_serving_on_port_0_moves_to_another_port_when_the_picked_one_is_taken(tmp_path, monkeypatch, held_port):
    free = pipeline.free_port
    handed: list[int] = []

    def first_pick_taken() -> int:
        if sys._getframe(1).f_code.co_name != "start_serving":
            return free()  # Serve's side ports, the metrics port …: not the proxy's
        port = held_port if not handed else free()  # the proxy's first pick is the taken one
        handed.append(port)
        return port

    monkeypatch.setattr(pipeline, "free_port", first_pick_taken)
    cfg = config_from_dict({"registry": {"uri": str(tmp_path / "registry")},
                            "checkpoints": {"uri": str(tmp_path / "ckpt")}, "serving": {"port": 0, "fast_ingress": False}})  # Serve's own proxy: it binds the port itself
    p = Pipeline.start(cfg)
    try:
        assert handed[0] == held_port and p.port == handed[-1] != held_port  # the taken port was tried, then another one
        assert httpx.get(f"{p.url}/traffic", timeout=60).status_code == 200
    finally:
        p.stop()


def test_a_taken_haproxy_side_port_starts_the_local_ray_again_on_fresh_picks(tmp_path, monkeypatch, held_port):
    """HAProxy's metrics and stats ports are fixed for a Ray session (read from the environment at start): when
    the one picked is taken before HAProxy binds it, only a new local Ray on fresh picks can start Serve."""
    free = pipeline.free_port
    side_picks: list[int] = []

    def first_side_pick_taken() -> int:
        if sys._getframe(1).f_code.co_name != "serve_environment":
            return free()
        port = held_port if not side_picks else free()  # HAProxy's metrics port, the first side port picked
        side_picks.append(port)
        return port

    monkeypatch.setattr(pipeline, "free_port", first_side_pick_taken)
    for name in (*pipeline.SERVE_SIDE_PORTS, pipeline.PICKED_PORTS):
        monkeypatch.delenv(name, raising=False)
    cfg = config_from_dict({"registry": {"uri": str(tmp_path / "registry")},
                            "checkpoints": {"uri": str(tmp_path / "ckpt")},
                            "serving": {"port": 0, "fast_ingress": True}})
    p = Pipeline.start(cfg)
    try:
        assert side_picks[0] == held_port and len(side_picks) > len(pipeline.SERVE_SIDE_PORTS)  # started again
        assert held_port not in {int(v) for v in (pipeline.os.environ[n] for n in pipeline.SERVE_SIDE_PORTS)}
        assert httpx.get(f"{p.url}/traffic", timeout=60).status_code == 200
    finally:
        p.stop()
    for name in (*pipeline.SERVE_SIDE_PORTS, pipeline.PICKED_PORTS):
        monkeypatch.delenv(name, raising=False)  # start_ray set them in os.environ; later modules pick their own
