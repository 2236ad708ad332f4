"""Terminal views (rich tables) of the typed status: one traffic table for `streamfit status`,
`streamfit traffic set`, `streamfit rollback` and the demo's live view; the quality table.

Example:
    >>> import io
    >>> from rich.console import Console
    >>> t = TrafficStatus.model_validate({"slots": {"blue": 1, "green": 2}, "weights": {"blue": 75, "green": 25},
    ...                                   "revision": 3, "live_slot": "blue", "flips": 1})
    >>> console = Console(width=100, record=True, file=io.StringIO())
    >>> console.print(traffic_table(t))
    >>> text = console.export_text()
    >>> "revision 3, flips 1" in text and "75" in text and "p99 ms" in text
    True
"""

from __future__ import annotations

from rich.table import Table

from streamfit.names import SLOTS
from streamfit.status import MonitorReport, TrafficStatus


def _ms(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}"


def traffic_table(t: TrafficStatus) -> Table:
    """Slots, versions, weights, the rollout step, and per-slot requests, errors, p50/p99, accuracy (a regression
    version's RMSE and MAE: the column is then "live quality")."""
    title = f"traffic (revision {t.revision}, flips {t.flips})"
    if t.rollout is not None:
        title += f" — rollout {t.rollout.headline()}"
    table = Table(title=title)
    accs = {slot: t.accuracy_of(slot) for slot in SLOTS}
    quality = "accuracy" if all(a is None or a.accuracy is not None for a in accs.values()) else "live quality"
    for col in ("slot", "version", "weight %", "live", "requests", "errors", "p50 ms", "p99 ms", quality):
        table.add_column(col, justify="left" if col in ("slot", "live") else "right")
    for slot in SLOTS:
        s, acc = t.figures(slot), accs[slot]
        table.add_row(slot, str(t.slots.get(slot)), str(t.weight(slot)), "●" if t.live_slot == slot else "",
                      str(s.requests), str(s.errors), _ms(s.p50_ms), _ms(s.p99_ms), acc.text() if acc else "")
    return table


def replica_lines(t: TrafficStatus) -> list[str]:
    """``replica <id>: holds blue v1, green v2`` for each live Router replica."""
    return [f"replica {rid}: holds " + ", ".join(f"{s} v{v}" for s, v in held.items())
            for rid, held in t.replicas.items()]


def quality_table(m: MonitorReport) -> Table:
    """Data quality and drift figures (``GET /monitor``)."""
    q, d = m.quality, m.drift
    table = Table(title=f"data quality and drift (live v{d.version})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("rows accepted / rejected", f"{q.accepted} / {q.rejected}  {q.top_reasons(n=100)}")
    table.add_row("null rate", q.nulls())
    table.add_row("watermark lag", "" if q.watermark_lag_s is None else f"{q.watermark_lag_s:.1f} s")
    table.add_row("feature PSI (top)", d.top_psi(6))
    table.add_row("prediction PSI", "" if d.prediction_psi is None else f"{d.prediction_psi:.2f}")
    if d.task_text():  # regression and multiclass: the class mix's chi-square, the error drift detector
        table.add_row("prediction shift / error drift", d.task_text())
    table.add_row("drift alarm", d.alarm or "none")
    table.add_row("freshness (drift refits as changes)", m.freshness.text())
    return table
