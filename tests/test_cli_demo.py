"""The demo as a user runs it: the `streamfit` console script in its own process, on its own local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _streamfit() -> str:
    return str(Path(sys.executable).with_name("streamfit"))


def test_demo_ends_by_itself_with_a_summary(tmp_path):
    out = tmp_path / "summary.json"
    # The demo streams until its first traffic flip (a promoted refit), however long a loaded machine takes,
    # within a generous bound: no count has to be reached within a fixed time.
    proc = subprocess.run(
        [_streamfit(), "demo", "--duration", "20", "--until-flips", "1", "--max-duration", "420", "--port", "0",
         "--workdir", str(tmp_path / "demo"), "--summary-json", str(out)],
        capture_output=True, text=True, timeout=720, env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "streamfit demo — summary" in proc.stdout
    summary = json.loads(out.read_text())
    for key in ("events_ingested", "versions_trained", "traffic_flips", "requests_served", "requests_failed"):
        assert key in summary
    assert summary["events_ingested"] > 10_000
    assert summary["versions_trained"] >= 2
    assert summary["traffic_flips"] >= 1
    assert summary["requests_served"] > 0
    assert summary["requests_failed"] == 0
    # Every request is a raw event of the stream (the Router joins the entity's live features) ...
    assert summary["requests_served_raw"] == summary["requests_served"]
    # ... scored before the stream has it, so its label later compares the served vector with the point-in-time one.
    skew = summary["skew"]
    assert skew["compared_rows"] > 0
    assert 0 <= skew["rows_differing"] <= skew["compared_rows"]
    assert skew["share_differing"] == skew["rows_differing"] / skew["compared_rows"]
    assert (skew["worst_feature"] is None) == (skew["rows_differing"] == 0)
    assert "skew (served vs point-in-time)" in proc.stdout and "rows compared" in proc.stdout
    # Freshness: the answers scored against the stream's labels, and a replay of the same policy on the same events.
    fresh = summary["freshness"]
    assert fresh["requests"] > 0 and 0 <= summary["stale_share"] <= 1
    assert fresh["requests_compared"] > 0 and 0 < summary["served_accuracy"] <= 1 and 0 < summary["offline_accuracy"] <= 1
    assert abs(summary["accuracy_gap"] - (summary["served_accuracy"] - summary["offline_accuracy"])) < 1e-3
    assert "served accuracy (request-weighted)" in proc.stdout and "offline accuracy" in proc.stdout
    registry = tmp_path / "demo" / "registry" / "versions"
    assert len(list(registry.iterdir())) == summary["versions_trained"]


def test_bad_config_fails_at_start_naming_the_field(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("trainer:\n  refit_every_rows: lots\nserving:\n  prot: 8000\n")
    proc = subprocess.run([_streamfit(), "run", "-c", str(cfg)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert "trainer.refit_every_rows" in proc.stdout
    assert "serving.prot" in proc.stdout
