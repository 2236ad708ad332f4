"""The status page at ``GET /``: server-rendered HTML with inline SVG charts (no script, no CDN).

``render(data)`` is a pure function of ``StatusPageData`` — the rollout controller's
``TrafficStatus``, the monitor's time series, drift and serving/training skew, the registry's
versions — so it is tested without Ray. ``traffic_html`` is the page's view of the traffic (the terminal's is
``streamfit.scripts.views.traffic_table``, from the same model). The page reloads itself
every few seconds.

Example:
    >>> html = render(StatusPageData.model_validate({"traffic": {"slots": {"blue": 1, "green": None},
    ...     "weights": {"blue": 100, "green": 0}, "live_slot": "blue", "flips": 0, "revision": 1}}))
    >>> "blue" in html and "<svg" in html
    True
"""

from __future__ import annotations

import html
import math
import time
from typing import Any, Optional

from pydantic import model_validator

from streamfit.names import SLOTS
from streamfit.status import Drift, Freshness, Open, Quality, SeriesPoint, Skew, TrafficStatus


class StatusPageData(Open):
    """What the page shows: the traffic status, the monitor's series, drift and skew, the registered versions."""

    traffic: TrafficStatus
    fields: list[str] = []
    versions: list[dict[str, Any]] = []
    series: list[SeriesPoint] = []
    drift: Drift = Drift()
    quality: Quality = Quality()
    skew: Optional[Skew] = None  # when not given: the newest in the series
    freshness: Optional[Freshness] = None  # when not given: the newest in the series

    @model_validator(mode="after")
    def _newest_of_the_series(self) -> "StatusPageData":
        if self.skew is None:
            self.skew = next((p.skew for p in reversed(self.series) if p.skew is not None), None)
        if self.freshness is None:
            self.freshness = next((p.freshness for p in reversed(self.series) if p.freshness is not None), None)
        return self


COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d"]
SLOT_COLORS = {"blue": "#2563eb", "green": "#16a34a"}


def _esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], unit: str = "",
               width: int = 560, height: int = 180, y_min: float | None = None, y_max: float | None = None,
               colors: dict[str, str] | None = None) -> str:
    """An SVG line chart of named (time, value) series, with its axis range and a legend."""
    pts = [(t, v) for s in series.values() for t, v in s if v is not None and math.isfinite(v)]
    pad_l, pad_b, pad_t = 48, 22, 44
    body = [f'<text x="8" y="16" class="ct">{_esc(title)}</text>']
    if not pts:
        body.append(f'<text x="{width / 2}" y="{height / 2}" class="empty" text-anchor="middle">no data yet</text>')
    else:
        t0, t1 = min(p[0] for p in pts), max(p[0] for p in pts)
        lo = min(p[1] for p in pts) if y_min is None else y_min
        hi = max(p[1] for p in pts) if y_max is None else y_max
        if hi <= lo:
            hi = lo + 1.0
        span_t = (t1 - t0) or 1.0

        def xy(t: float, v: float) -> str:
            x = pad_l + (t - t0) / span_t * (width - pad_l - 8)
            y = pad_t + (1 - (v - lo) / (hi - lo)) * (height - pad_t - pad_b)
            return f"{x:.1f},{y:.1f}"

        body.append(f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 8}" y2="{height - pad_b}" class="axis"/>')
        body.append(f'<text x="{pad_l - 4}" y="{pad_t + 4}" class="tick" text-anchor="end">{hi:.3g}</text>')
        body.append(f'<text x="{pad_l - 4}" y="{height - pad_b}" class="tick" text-anchor="end">{lo:.3g}</text>')
        body.append(f'<text x="{pad_l}" y="{height - 6}" class="tick">−{span_t:.0f} s</text>')
        body.append(f'<text x="{width - 8}" y="{height - 6}" class="tick" text-anchor="end">now {_esc(unit)}</text>')
        for i, (name, s) in enumerate(series.items()):
            color = (colors or {}).get(name, COLORS[i % len(COLORS)])
            good = [(t, v) for t, v in s if v is not None and math.isfinite(v)]
            if len(good) == 1:
                x, y = xy(*good[0]).split(",")
                body.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>')
            elif good:
                body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                            f'points="{" ".join(xy(t, v) for t, v in good)}"/>')
            body.append(f'<rect x="{8 + i * 90}" y="24" width="10" height="10" fill="{color}"/>'
                        f'<text x="{22 + i * 90}" y="33" class="tick">{_esc(name)}</text>')
    return (f'<svg class="chart" data-chart="{_esc(title)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>')


def _series(points: list[SeriesPoint], key: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        value = getattr(p, key, None)
        if isinstance(value, dict):
            for name, v in value.items():
                if v is not None:
                    out.setdefault(str(name), []).append((p.t, float(v)))
        elif value is not None:
            out.setdefault(key, []).append((p.t, float(value)))
    return out


def traffic_html(t: TrafficStatus) -> str:
    """The page's view of the traffic: a card per slot (version, weight, live accuracy) and the rollout."""
    cards = []
    for slot in SLOTS:
        v, w, live = t.slots.get(slot), t.weight(slot), slot == t.live_slot
        acc = t.accuracy_of(slot)
        cards.append(
            f'<div class="card slot {"live" if live else ""}" id="slot-{slot}">'
            f'<div class="k">{slot}{" · live" if live else ""}</div>'
            f'<div class="v">v{_esc(v) if v is not None else "–"}</div>'
            f'<div class="w"><span class="weight" style="width:{w}%;background:{SLOT_COLORS[slot]}"></span></div>'
            f'<div class="k">{w} % of traffic{" · " + acc.named() if acc else ""}</div></div>')
    r = t.rollout
    if r is None:
        return "".join(cards) + ('<div class="card wide" id="rollout"><div class="k">rollout</div>'
                                 '<div class="v">none yet</div></div>')
    steps = " → ".join(f"<b>{w}%</b>" if i == r.step and r.stepping else f"{w}%" for i, w in enumerate(r.steps))
    checks = "".join(
        f'<li class="{"ok" if s.passed else "bad"}">{s.weight}%: '
        f'{"passed" if s.passed else "; ".join(_esc(x) for x in s.reasons)}'
        f' · candidate p99 {_num(s.candidate.p99_ms if s.candidate else None, 1)} ms'
        f' · prediction PSI {_num(s.prediction_psi, 2)}</li>' for s in r.results)
    return "".join(cards) + (
        f'<div class="card wide" id="rollout"><div class="k">rollout</div>'
        f'<div class="v">v{_esc(r.version)} → {_esc(r.slot)}: {_esc(r.phase)}'
        f'{f" at {r.weight}%" if r.stepping else ""}</div>'
        f'<div>{steps}</div><div class="k">{_esc(r.outcome)} · {_esc(r.reason)}</div><ul>{checks}</ul></div>')


def skew_html(skew: Skew | None, top: int = 5) -> str:
    """The skew card: the summary line and the features that differ most (share of rows, largest gap)."""
    if skew is None:
        return '<div class="card wide" id="skew">serving/training skew: not reported</div>'
    worst = sorted(((k, f) for k, f in skew.features.items() if f.differing),
                   key=lambda kv: (-kv[1].share, -kv[1].max_abs_diff))[:top]
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{f.differing}</td><td>{f.share:.1%}</td>"
                   f"<td>{_num(f.max_abs_diff, 3)}</td></tr>" for k, f in worst)
    table = ('<table><tr><th>feature</th><th>rows differing</th><th>share</th><th>max |Δ|</th></tr>'
             f"{rows}</table>") if rows else ""
    return f'<div class="card wide" id="skew">serving/training skew: {_esc(skew.text())}{table}</div>'


def freshness_html(f: Freshness | None) -> str:
    """The freshness card: request-weighted served accuracy, stale share, seconds from a detected change to 100 %."""
    text = f.text() if f is not None else "not reported"
    return (f'<div class="card wide" id="freshness">freshness of what requests are served: {_esc(text)}'
            '<div class="k">live estimates: each drift-triggered refit marks a concept change; stale = answered by '
            'a version trained only on rows before the newest change detected by then</div></div>')


def _freshness_series(points: list[SeriesPoint]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        for name, value in (("served accuracy (recent)", p.freshness.served_accuracy_recent if p.freshness else None),
                            ("stale share (recent)", p.freshness.stale_share_recent if p.freshness else None)):
            if value is not None:
                out.setdefault(name, []).append((p.t, float(value)))
    return out


def version_metric(versions: list[dict[str, Any]]) -> str:
    """The metric the versions table and chart show: accuracy, or RMSE (MAE, pinball) when the versions' holdout
    scores have no accuracy (regression)."""
    held = [(m.get("metrics") or {}).get("holdout") or {} for m in versions]
    if not held or any("accuracy" in h for h in held):
        return "accuracy"
    return next((k for k in ("rmse", "mae", "pinball") if any(k in h for h in held)), "accuracy")


def render(data: StatusPageData, refresh_s: int = 5) -> str:
    """The whole page."""
    traffic, points, drift, quality = data.traffic, data.series, data.drift, data.quality
    accuracy = traffic.live_accuracy
    metric = version_metric(data.versions)
    rows = []
    for m in reversed(data.versions[-15:]):
        hold = (m.get("metrics") or {}).get("holdout") or {}
        acc = accuracy.get(str(m["version"]))
        rows.append(f'<tr><td>v{m["version"]}</td><td>{_esc(",".join(m.get("aliases", [])))}</td>'
                    f'<td class="reason">{_esc(m.get("trigger"))}</td><td>{_esc(m.get("strategy", ""))}</td>'
                    f'<td>{_num(hold.get(metric))}</td><td>{_num(getattr(acc, metric) if acc else None)}</td>'
                    f'<td>{_esc(m.get("rows"))}</td>'
                    f'<td>{time.strftime("%H:%M:%S", time.localtime(m.get("registered_at", 0)))}</td></tr>')
    history = "".join(f"<li>v{_esc(h.version)}: <b>{_esc(h.phase)}</b> — {_esc(h.outcome)} ({_esc(h.reason)})</li>"
                      for h in reversed(traffic.history[-8:]))

    psi_series = {f: s for f, s in _series(points, "psi").items() if not data.fields or f in data.fields}
    charts = "".join([
        line_chart("ingest rate (events/s)", _series(points, "events_per_s"), "events/s", y_min=0),
        line_chart("live accuracy by version", {f"v{k}": v for k, v in _series(points, "accuracy").items()},
                   y_min=0.0, y_max=1.0) if metric == "accuracy" else
        line_chart(f"live {metric.upper()} by version", {f"v{k}": v for k, v in _series(points, metric).items()},
                   y_min=0.0),
        line_chart("served accuracy and stale share (request-weighted)", _freshness_series(points),
                   y_min=0.0, y_max=1.0),
        line_chart("drift: PSI of input fields vs the live reference", psi_series, y_min=0),
        line_chart("model latency p99 by slot (ms)", _series(points, "p99_ms"), "ms", y_min=0, colors=SLOT_COLORS),
    ])
    alarm = drift.alarm
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_s}">
<title>streamfit — v{_esc(traffic.live_version)} live</title>
<style>
body{{font:14px system-ui,sans-serif;margin:20px;color:#111;background:#f8fafc}}
h1{{font-size:20px;margin:0 0 12px}} h2{{font-size:15px;margin:18px 0 8px}}
.row{{display:flex;gap:12px;flex-wrap:wrap}} .card{{background:#fff;border:1px solid #e2e8f0;border-radius:8px;
padding:10px 14px;min-width:220px}} .card.live{{border-color:#16a34a;box-shadow:0 0 0 2px #bbf7d0}}
.wide{{flex:1;min-width:420px}} .k{{color:#64748b;font-size:12px}} .v{{font-size:20px;font-weight:600;margin:4px 0}}
.w{{background:#e2e8f0;height:8px;border-radius:4px;overflow:hidden;margin:6px 0}} .weight{{display:block;height:8px}}
table{{border-collapse:collapse;background:#fff}} td,th{{border-bottom:1px solid #e2e8f0;padding:4px 10px;text-align:left}}
.chart{{background:#fff;border:1px solid #e2e8f0;border-radius:8px;margin:0 12px 12px 0}}
.ct{{font-size:13px;font-weight:600}} .tick{{font-size:10px;fill:#64748b}} .axis{{stroke:#cbd5e1}}
.empty{{fill:#94a3b8;font-size:12px}} li.ok{{color:#166534}} li.bad{{color:#991b1b}} .alarm{{color:#b91c1c;font-weight:600}}
</style></head><body>
<h1>streamfit · live: <span id="live-version">v{_esc(traffic.live_version)}</span> in {_esc(traffic.live_slot)} ·
split <span id="split">{traffic.split()}</span></h1>
<div class="row">{traffic_html(traffic)}</div>
<h2>charts</h2><div class="row" id="charts">{charts}</div>
<h2>data quality, drift and serving/training skew</h2>
<div class="row"><div class="card wide" id="quality">accepted {_esc(quality.accepted)} ·
rejected {_esc(quality.rejected)} ({_esc(quality.top_reasons()) or "none"}) · null rates {_esc(quality.nulls()) or "–"}
· watermark lag {_num(quality.watermark_lag_s, 1)} s</div>
<div class="card wide" id="drift">live v{_esc(drift.version)}: prediction PSI {_num(drift.prediction_psi, 2)} ·
{_esc(drift.task_text()) + " · " if drift.task_text() else ""}
{"<span class='alarm'>alarm: " + _esc(alarm) + "</span>" if alarm else "no drift alarm"}</div>
{skew_html(data.skew)}
{freshness_html(data.freshness)}</div>
<h2>versions and why they were trained</h2>
<table id="versions"><tr><th>version</th><th>aliases</th><th>refit reason</th><th>strategy</th>
<th>holdout {metric}</th><th>live {metric}</th><th>rows</th><th>registered</th></tr>{"".join(rows)}</table>
<h2>rollouts</h2><ul id="history">{history or "<li>none yet</li>"}</ul>
<p class="k">{time.strftime("%Y-%m-%d %H:%M:%S")} · refreshes every {refresh_s} s · JSON: /traffic, /models</p>
</body></html>"""
