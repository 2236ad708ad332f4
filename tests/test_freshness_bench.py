"""`streamfit bench freshness --json` as a user runs it, small: the live system on a real local Ray + Serve and
the offline replay of the same stream, in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_freshness_reports_served_against_offline_on_the_same_stream(tmp_path):
    exe = str(Path(sys.executable).with_name("streamfit"))
    # One concept change in a 12,000-event stream; the run ends with the stream, however long a loaded machine
    # takes, within a generous bound.
    proc = subprocess.run(
        [exe, "bench", "freshness", "--changes", "1", "--drift-every", "6000", "--request-rate", "30",
         "--max-duration", "600", "--workdir", str(tmp_path / "bench"), "--json"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["events"] == 12_000 and res["requests"] > 0
    assert 0 <= res["stale_share"] <= 1
    # How many requests are compared, and how accurate they were, depends on how fast a loaded machine served
    # them: the figures must be there and consistent, not large.
    assert res["requests_compared"] > 0 and res["ratio"] >= 0
    assert 0 <= res["served_accuracy"] <= 1 and 0 < res["offline_accuracy"] <= 1
    assert res["ratio"] == round(res["served_accuracy"] / res["offline_accuracy"], 4) or \
        abs(res["ratio"] - res["served_accuracy"] / res["offline_accuracy"]) < 1e-3
    assert res["concept_changes"] == len(res["changes"]) == 1
    change = res["changes"][0]
    assert change["seconds"] >= 0 and (change["version"] is not None) == change["reached"]
    assert res["p50_s"] == res["max_s"] == change["seconds"]
    # The monitor's live estimate rides along (no ground truth there: drift refits mark the changes).
    assert {"served_accuracy", "stale_share", "p50_s"} <= set(res["monitor"])
