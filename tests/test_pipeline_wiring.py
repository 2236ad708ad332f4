"""What the config accepts but the planes do not run end to end yet is refused at start, naming the field."""

from __future__ import annotations

import pytest

from streamfit.config import config_from_dict
from streamfit.errors import ConfigError
from streamfit.scripts.pipeline import check_wired


def test_a_binary_numeric_config_starts():
    check_wired(config_from_dict({}))


@pytest.mark.parametrize("cfg, field", [
    ({"model": {"task": "regression"}}, "model.task"),
    ({"model": {"task": "multiclass", "classes": ["a", "b", "c"]}}, "model.task"),
    ({"features": {"fields": [{"name": f"x{i}"} for i in range(3)] + [{"name": "country", "type": "categorical"}]}},
     "features.fields"),
])
def test_a_task_or_field_not_wired_yet_is_refused_naming_it(cfg, field):
    with pytest.raises(ConfigError, match=field):
        check_wired(config_from_dict(cfg))


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
