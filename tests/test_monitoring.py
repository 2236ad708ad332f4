"""Monitoring on a real local Ray: bad rows, a shifted feature and flipped labels each move their own
figure and not the others; the drift alarm triggers a refit; Prometheus sees the metrics with tags."""

from __future__ import annotations

import os
import shutil
import subprocess

import httpx
import numpy as np
import pandas as pd
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from streamfit.config import config_from_dict
from streamfit.actors.stream.sources import FramesSource, SyntheticSource
from streamfit.scripts.pipeline import Pipeline, free_port, wait_until

FIELDS = ["x0", "x1", "x2"]


def _phase(frames: list[pd.DataFrame], kind: str) -> list[pd.DataFrame]:
    out = []
    for i, f in enumerate(frames):
        f = f.copy()
        ev = f["kind"] == "event"
        if kind == "bad":  # a tenth of the events lose a required field
            idx = f.index[ev][::10]
            f.loc[idx, "x2"] = np.nan
        elif kind == "shift":
            f.loc[ev, "x1"] = f.loc[ev, "x1"] + 3.0
        elif kind == "flip":
            lab = f["kind"] == "label"
            f.loc[lab, "label"] = 1.0 - f.loc[lab, "label"]
        out.append(f)
    return out


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    metrics_port = free_port()
    os.environ["RAY_metrics_report_interval_ms"] = "1000"
    cfg = config_from_dict({
        "stream": {"entities": 100, "batch_size": 1000, "label_delay_events": 200, "bad_row_rate": 0.0,
                   "drift_every": 10_000_000, "max_events_per_s": 20000},
        "registry": {"uri": str(root / "registry")},
        "checkpoints": {"uri": str(root / "ckpt"), "interval_s": 60},
        "serving": {"port": 0, "metrics_port": metrics_port},
        # The gate is not under test here: the drift refit is registered whatever its holdout score (in CI a
        # candidate from 800 shifted rows lost to v1 by a hair and the status page had no drift version).
        "trainer": {"refit_every_rows": None, "drift_detector": None, "min_rows_between": 0, "gate_margin": 10.0},
        "rollout": {"mode": "flip"},
        "monitor": {"window_rows": 1500, "min_rows": 300, "psi_alarm": 0.5, "sample_s": 0.5,
                    "alarm_cooldown_s": 1000},
    })
    p = Pipeline.start(cfg)
    p.metrics_port = metrics_port
    yield p
    p.stop()


def _figures(p: Pipeline) -> dict:
    coord = ray.get(p.coordinator.stats.remote())
    drift = ray.get(p.monitor.drift.remote())
    acc = ray.get(p.monitor.stats.remote())["stream_accuracy"]
    live = p.registry.aliases().get("live")
    return {"rejected": coord["rejected"], "reasons": coord["reasons"], "psi": drift["psi"],
            "accuracy": acc.get(live, {}).get("accuracy"), "live": live, "alarm": drift.get("alarm")}


def _rejects(fig: dict) -> dict:
    """Rejections by reason, leaving out labels whose event was rejected earlier (they follow it)."""
    return {k: v for k, v in fig["reasons"].items() if k != "label_unmatched"}


def _feed(p: Pipeline, frames: list[pd.DataFrame]) -> None:
    ray.get(p.coordinator.set_source.remote(FramesSource(frames)))
    ray.get(p.coordinator.run.remote(None), timeout=300)
    # The coordinator sends labelled rows to the monitor without waiting: wait until all arrived.
    sent = ray.get(p.coordinator.stats.remote())["training_rows"]
    assert wait_until(lambda: ray.get(p.monitor.rows_observed.remote()) >= sent, timeout_s=300), sent


def test_each_injected_fault_moves_its_own_figure_and_the_alarm_refits(pipe):
    src = SyntheticSource(pipe.cfg.stream, pipe.cfg.features)
    frames = [src.read(i)[0] for i in range(40)]
    _feed(pipe, frames[:8])
    out = ray.get(pipe.trainer.request_refit.remote("first model"))
    assert out["version"] == 1
    assert wait_until(lambda: pipe.registry.aliases().get("live") == 1, timeout_s=300)
    assert wait_until(lambda: ray.get(pipe.monitor.drift.remote())["version"] == 1, timeout_s=300)  # it follows v1
    _feed(pipe, frames[8:12])  # clean rows measured against v1's reference
    base = _figures(pipe)
    assert base["accuracy"] is not None and base["accuracy"] > 0.75
    assert base["psi"] and max(base["psi"][f] for f in FIELDS) < 0.25, base["psi"]
    assert base["alarm"] is None
    assert base["rejected"] == 0

    _feed(pipe, _phase(frames[12:16], "bad"))
    bad = _figures(pipe)
    assert bad["reasons"].get("missing:x2", 0) >= 300  # the reject counter moved …
    assert abs(bad["accuracy"] - base["accuracy"]) < 0.05  # … accuracy did not …
    assert max(bad["psi"][f] for f in FIELDS) < 0.25  # … nor the inputs' distribution

    _feed(pipe, _phase(frames[16:22], "flip"))
    flip = _figures(pipe)
    assert flip["accuracy"] < base["accuracy"] - 0.3  # live accuracy moved …
    assert _rejects(flip) == _rejects(bad)  # … rejects did not …
    assert max(flip["psi"][f] for f in FIELDS) < 0.25  # … nor the raw inputs' PSI
    refits_before = len(ray.get(pipe.trainer.stats.remote())["refits"])

    _feed(pipe, _phase(frames[22:28], "shift"))
    assert wait_until(lambda: ray.get(pipe.monitor.stats.remote())["refit_requests"], timeout_s=300), \
        ray.get(pipe.monitor.stats.remote())["last_error"]
    shift = ray.get(pipe.monitor.stats.remote())
    alarm = shift["refit_requests"][0]["alarm"]
    assert alarm.startswith("x1"), alarm  # the shifted feature raised the alarm …
    assert _rejects(_figures(pipe)) == _rejects(bad)  # … rejects did not move
    # The refit the alarm asked for runs on the trainer: wait for its record, however slow a loaded machine is.
    assert wait_until(lambda: len(ray.get(pipe.trainer.stats.remote())["refits"]) > refits_before, timeout_s=300), \
        ray.get(pipe.trainer.stats.remote())["rejected"][-3:]
    refits = ray.get(pipe.trainer.stats.remote())["refits"]
    assert refits[-1]["reason"] == "drift"  # the alarm triggered a refit


def test_prometheus_scrape_has_streamfit_metrics_with_tags(pipe):
    url = f"http://127.0.0.1:{pipe.metrics_port}/metrics"

    def families():
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            return {}
        return {f.name: f for f in text_string_to_metric_families(text)}

    wanted = ("streamfit_rows_rejected", "streamfit_feature_psi", "streamfit_live_accuracy",
              "streamfit_traffic_weight_percent", "streamfit_skew_rows_compared", "streamfit_skew_share")
    def samples_in(fams, name):
        return [s for n, f in fams.items() if name in n for s in f.samples]

    def scraped():
        """Every wanted family, with a PSI series per feature (a family may be listed before its series)."""
        fams = families()
        psi = {s.labels.get("feature") for s in samples_in(fams, "streamfit_feature_psi")}
        return fams if all(any(w in n for n in fams) for w in wanted) and psi >= set(FIELDS) else None

    assert wait_until(lambda: scraped() is not None, timeout_s=300), sorted(n for n in families() if "streamfit" in n)
    fams = scraped()

    def samples(name):  # in the scrape the wait settled on
        return samples_in(fams, name)

    assert any(s.labels.get("reason") == "missing:x2" and s.value >= 300 for s in samples("streamfit_rows_rejected"))
    assert {s.labels.get("feature") for s in samples("streamfit_feature_psi")} >= set(FIELDS)
    assert any(s.labels.get("version") for s in samples("streamfit_live_accuracy"))
    assert {s.labels.get("slot") for s in samples("streamfit_traffic_weight_percent")} == {"blue", "green"}
    # Nothing was scored from raw events here: the skew gauges are there, at zero, for every feature.
    assert [s.value for s in samples("streamfit_skew_rows_compared")] and \
        all(s.value == 0 for s in samples("streamfit_skew_rows_compared"))
    assert {s.labels.get("feature") for s in samples("streamfit_skew_share")} >= set(FIELDS)
    # Ray Serve's own request metrics come with them.
    assert any(n.startswith("ray_serve") for n in fams)


def _chromium(*args: str, tmp) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Debian's chromium is not installed (make test installs it)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp / 'chrome-profile'}", "--virtual-time-budget=3000"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def test_status_page_in_headless_chromium(pipe, tmp_path):
    httpx.put(f"{pipe.url}/traffic", json={"shadow_share": 0.0}, timeout=60)  # a harmless read-write check
    assert wait_until(lambda: len(ray.get(pipe.monitor.timeseries.remote())) >= 5, timeout_s=300)
    url = f"{pipe.url}/"
    dom = _chromium("--dump-dom", url, tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    traffic = httpx.get(f"{pipe.url}/traffic", timeout=60).json()
    live = traffic["slots"][traffic["live_slot"]]
    assert f'id="live-version">v{live}<' in page
    assert f"blue {traffic['weights']['blue']}% / green {traffic['weights']['green']}%" in page
    assert page.count('class="chart"') == 5 and page.count("<polyline") >= 3  # the charts have lines
    assert 'id="freshness">freshness of what requests are served' in page
    assert "drift" in page and 'class="reason">drift<' in page  # the refit the drift alarm caused
    assert 'id="skew">serving/training skew: no scored event has its label yet' in page
    report = httpx.get(f"{pipe.url}/monitor", timeout=60).json()
    assert report["skew"]["compared_rows"] == 0 and set(FIELDS) <= set(report["skew"]["features"])
    fresh = report["freshness"]
    assert {"served_accuracy", "served_accuracy_recent", "stale_share", "requests", "changes", "p50_s", "max_s"} <= set(fresh)
    assert fresh["stale_share"] is None or 0 <= fresh["stale_share"] <= 1
    shot = tmp_path / "status-page.png"
    out = _chromium(f"--screenshot={shot}", "--window-size=1280,1800", url, tmp=tmp_path)
    assert out.returncode == 0 and shot.exists() and shot.stat().st_size > 20_000, out.stderr[-2000:]
