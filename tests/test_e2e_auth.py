"""Scoped tokens on a real local Ray + Serve over HTTP (issue 13, items 6 and 7): the default config serves
ingest only with a token, the ingest token ingests but cannot change traffic, and the CLI works out of the
box with the admin token ``streamfit run`` generated into its file (never printed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streamfit.config import config_from_dict
from streamfit.scripts.pipeline import Pipeline

INGEST = "e2e-ingest-token"
T0 = 1_700_000_000.0
EVENTS = {"events": [{"event_id": f"a-{i}", "entity": "alice", "event_time": T0 + i, "x0": 1.0, "x1": 0.0, "x2": 0.0}
                     for i in range(3)]}

@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    saved = {k: os.environ.get(k) for k in ("STREAMFIT_ADMIN_TOKEN", "STREAMFIT_INGEST_TOKEN", "XDG_CONFIG_HOME")}
    os.environ.pop("STREAMFIT_ADMIN_TOKEN", None)
    os.environ["STREAMFIT_INGEST_TOKEN"] = INGEST  # the Router replicas inherit it from the Ray started here
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    cfg = config_from_dict({"stream": {"source": "http"}, "registry": {"uri": str(root / "registry")},
                            "checkpoints": {"uri": str(root / "ckpt")}, "serving": {"port": 0},
                            "features": {"windows_s": [60]}})
    try:
        p = Pipeline.start(cfg)
        yield p
        p.stop()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_ingest_needs_its_token_and_the_ingest_token_changes_no_traffic(pipe):
    with httpx.Client(base_url=pipe.url, timeout=60) as c:
        assert c.post("/ingest", json=EVENTS).status_code == 401
        assert c.post("/ingest", json=EVENTS, headers={"Authorization": "Bearer nope"}).status_code == 403
        ok = c.post("/ingest", json=EVENTS, headers={"Authorization": f"Bearer {INGEST}"})
        assert ok.status_code == 200 and ok.json()["accepted"] == 3
        denied = c.put("/traffic", json={"shadow_share": 0.1}, headers={"Authorization": f"Bearer {INGEST}"})
        assert denied.status_code == 403 and "admin" in denied.json()["detail"]
        assert c.get("/traffic").status_code == 200  # read: open by default
        assert c.get("/healthz").json()["auth_failures"]["ingest"] == {"missing": 1, "wrong": 1}


def test_the_cli_uses_the_generated_admin_token_file_out_of_the_box(pipe):
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "streamfit" / "admin-token"
    assert path.stat().st_mode & 0o077 == 0
    env = {k: v for k, v in os.environ.items() if k != "STREAMFIT_ADMIN_TOKEN"}
    cli = str(Path(sys.executable).with_name("streamfit"))
    out = subprocess.run([cli, "traffic", "set", "--shadow", "0.1", "--url", pipe.url], capture_output=True,
                         text=True, timeout=60, env={**env, "COLUMNS": "200"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert path.read_text().strip() not in out.stdout + out.stderr
    audit = [e for e in pipe.registry.audit_log() if e["actor"] == "admin token"]
    assert audit, pipe.registry.audit_log()[-3:]
