"""How a pipeline start picks its ports: outside the ephemeral range, picked again at each start unless the user set them."""

from __future__ import annotations

from streamfit.scripts.pipeline import free_port


def test_free_ports_are_picked_outside_the_kernels_ephemeral_range(monkeypatch):
    """bind(0) and outgoing connections take ephemeral ports: one picked there is soon taken again (a loaded
    run lost HAProxy's metrics port that way), so the ports streamfit picks for Serve lie below that range."""
    from streamfit.scripts import ports

    monkeypatch.setattr(ports, "ephemeral_range", lambda: (32768, 60999))  # Linux's default, whatever this kernel says
    picked = {free_port() for _ in range(50)}
    assert all(ports.QUIET_FLOOR <= p < 32768 for p in picked), sorted(picked)
    assert len(picked) > 1  # random, so two starts in one moment do not race for one port


def test_a_kernel_with_no_room_below_its_ephemeral_range_still_gets_a_bindable_port(monkeypatch):
    import socket

    from streamfit.scripts import ports

    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free right after it was picked


def test_serve_side_ports_picked_for_an_earlier_start_are_picked_again_and_the_users_are_kept(monkeypatch):
    """A side port streamfit picked earlier (in this process, or a parent's environment) may be taken by now."""
    import streamfit.scripts.pipeline as pipeline

    ports = iter(range(40000, 40100))
    monkeypatch.setattr(pipeline, "free_port", lambda: next(ports))
    for name in (*pipeline.SERVE_SIDE_PORTS, pipeline.PICKED_PORTS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "9999")  # the user's choice
    first = pipeline.serve_environment(fast_ingress=True)
    for name, value in first.items():
        monkeypatch.setenv(name, value)  # what start_ray does; a child process inherits it
    second = pipeline.serve_environment(fast_ingress=True)
    assert first["RAY_SERVE_HAPROXY_STATS_PORT"] == second["RAY_SERVE_HAPROXY_STATS_PORT"] == "9999"
    for name in ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
                 "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"):
        assert first[name] != second[name], name  # picked again, not inherited
