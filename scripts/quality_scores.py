"""How ``streamfit bench quality`` scores a stream of another task (regression, multiclass, or binary with
categorical fields), judges it, and prints it.

A replay's labels per task (``labels_of``): 0/1 (binary), the class index (multiclass), the value
(regression). The XGBoost methods leave the booster's own output per row (p(1), k class
probabilities, a value); River's ARF and the trivial baselines leave a hard prediction (a class, a
value). ``task_scores`` gives the task's metrics (``streamfit.task.task_metrics``) over the scored
rows: accuracy (and for the XGBoost methods log loss, plus AUC for binary) or RMSE and MAE. A row
a method had no model for yet counts as wrong (accuracy), as predicting every class alike (log
loss), or as predicting 0 (regression: what River's ARF regressor predicts before it has learnt).

``task_verdict`` says whether the default policy beats every trivial baseline and reaches River's
ARF (at least its accuracy, at most its RMSE) and at what share of ARF's CPU seconds — issue 15's
acceptance bar, which ``accepted`` checks at a third of them.

Measured (session 6, 20,000-row streams, 4 concept changes, seeds 7/1/2; CPU seconds of each replay by
``time.process_time``, niced beside a loaded CI run, load average 4-9): the default policy beats the
baselines and ARF everywhere — friedman RMSE 3.43/3.14/3.56 against ARF 4.92/4.70/4.93 and the running
mean 5.62/5.47/5.71, at 0.088/0.095/0.077 of ARF's CPU; rbf accuracy 73.0/72.4/73.5 % against ARF
52.0/51.1/53.2 % and majority 27.8/27.2/27.1 %, at 0.42/0.42/0.39 (over the third: two thirds of it is
``xgb.train``, 300 trees a refit for 5 classes); agrawal 88.7/88.9/85.6 % against ARF 81.6/80.4/80.1 %
and majority 73.0/72.3/72.2 %, at 0.34/0.34/0.31.

Example:
    >>> import numpy as np
    >>> y = np.array([0.0, 1.0, 2.0, 1.0])
    >>> probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [np.nan] * 3, [0.1, 0.1, 0.8]])
    >>> task_scores(Task.MULTICLASS, y, probs, hard=False, scored=np.ones(4, bool))
    {'accuracy': 0.5, 'logloss': 0.99525}
    >>> task_scores(Task.REGRESSION, np.array([1.0, 3.0]), np.array([2.0, 3.0]), hard=True, scored=np.ones(2, bool))
    {'rmse': 0.70711, 'mae': 0.5}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from streamfit.schema import LABEL
from streamfit.task import Task, higher_is_better, predicted_class, task_metrics

CPU_BAR = 1 / 3  # the default policy's CPU seconds, at most this share of River ARF's (issue 15)


def primary_metric(task: Task) -> str:
    """The metric the verdict judges a task by: accuracy for classes, RMSE for values."""
    return "rmse" if Task(task) is Task.REGRESSION else "accuracy"


def labels_of(rows: pd.DataFrame, task: Task) -> np.ndarray:
    """The replay's labels as the learners see them: 0/1 or class indices as ints, values as floats."""
    y = rows[LABEL].to_numpy(dtype=float)
    task = Task(task)
    if task is Task.REGRESSION:
        return y
    return (y >= 0.5).astype(int) if task is Task.BINARY else y.astype(int)


def correct_of(task: Task, y: np.ndarray, pred: np.ndarray, hard: bool) -> np.ndarray:
    """Whether each row was predicted right (classification; a row without a prediction is wrong)."""
    task = Task(task)
    if task is Task.REGRESSION:
        return np.zeros(len(y), dtype=bool)
    if hard:
        return pred == y
    if task is Task.MULTICLASS:
        has = ~np.isnan(pred).any(axis=1)
        return has & (predicted_class(np.nan_to_num(pred)) == y)
    return ~np.isnan(pred) & ((pred >= 0.5) == (y >= 0.5))


def task_scores(task: Task, y: np.ndarray, pred: np.ndarray, hard: bool, scored: np.ndarray) -> dict[str, float]:
    """The task's metrics over the ``scored`` rows, rounded to 5 digits (see the module docstring)."""
    task = Task(task)
    if not scored.any():
        return {m: float("nan") for m in (["rmse", "mae"] if task is Task.REGRESSION else ["accuracy"])}
    y, pred = y[scored], pred[scored]
    if task is Task.REGRESSION:
        got = task_metrics(task, y, np.nan_to_num(pred, nan=0.0))
        return {k: round(float(got[k]), 5) for k in ("rmse", "mae")}
    out = {"accuracy": round(float(correct_of(task, y, pred, hard).mean()), 5)}
    if not hard:
        k = pred.shape[1] if pred.ndim == 2 else 2
        filled = np.where(np.isnan(pred), 1.0 / k, pred)
        got = task_metrics(task, y, filled)
        out.update({m: round(float(v), 5) for m, v in got.items() if m not in ("accuracy", "n")})
    return out


def arf_inputs(rows: pd.DataFrame, names: list[str], categorical: list[str]) -> list[dict[str, Any]]:
    """River's rows: each finite number by name, and each categorical field's text (River splits on it as a
    nominal attribute); missing values are left out."""
    numeric = [n for n in names if n not in categorical]
    x = rows[numeric].to_numpy(dtype=float)
    finite = np.isfinite(x)
    dicts = [{numeric[j]: v for j, v in zip(np.flatnonzero(finite[i]), x[i, finite[i]].tolist())}
             for i in range(len(rows))]
    for c in categorical:
        for d, v in zip(dicts, rows[c].tolist()):
            if isinstance(v, str):
                d[c] = v
    return dicts


def task_verdict(res: dict[str, Any]) -> dict[str, Any] | None:
    """The default policy against every trivial baseline and River's ARF on the task's metric, and its CPU
    seconds as a share of ARF's (``accepted``: beats the baselines, reaches ARF, at most ``CPU_BAR`` of it)."""
    scores = {**res["methods"], **res["baselines"]}
    if "default" not in scores or "river_arf" not in scores or not res["baselines"]:
        return None
    metric = primary_metric(res["task"])
    sign = 1.0 if higher_is_better(metric) else -1.0
    d = scores["default"][metric]
    best = max(res["baselines"], key=lambda b: sign * res["baselines"][b][metric])
    beats = all(sign * (d - v[metric]) > 0 for v in res["baselines"].values())
    reaches = sign * (d - scores["river_arf"][metric]) >= 0
    share = round(scores["default"]["seconds"] / max(scores["river_arf"]["seconds"], 1e-9), 3)
    return {"metric": metric, "default": d, "best_baseline": best, "baseline": res["baselines"][best][metric],
            "river_arf": scores["river_arf"][metric], "beats_baselines": beats, "reaches_arf": reaches,
            "cpu_share_of_arf": share, "accepted": beats and reaches and share <= CPU_BAR}


def _cell(metric: str, v: float) -> str:
    return f"{100 * v:.2f} %" if metric == "accuracy" else f"{v:.4f}"


def print_task_stream(r: dict[str, Any], console: Any) -> None:
    """One task stream's table: every method's and baseline's metrics, refits and CPU seconds, then the verdict."""
    from rich.table import Table

    metrics = list(dict.fromkeys(m for v in [*r["methods"].values(), *r["baselines"].values()] for m in v
                                 if m not in ("refits", "seconds")))
    console.print(f"[bold]prequential {r['task']}[/] — {r['dataset']}; {r['scored_rows']:,} of {r['rows']:,} "
                  f"rows scored (those after the first fit, on {r['warmup_rows']:,} rows, went live)")
    t = Table()
    for col in ("method", *metrics, "refits", "CPU s (replay)"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for m, v in [*r["methods"].items(), *r["baselines"].items()]:
        t.add_row(m, *(_cell(k, v[k]) if k in v else "—" for k in metrics), str(v.get("refits", "—")),
                  f"{v['seconds']:.1f}")
    console.print(t)
    v = task_verdict(r)
    if v is not None:
        console.print(f"default {v['metric']} {_cell(v['metric'], v['default'])}: "
                      f"{'beats' if v['beats_baselines'] else 'does not beat'} the baselines (best: "
                      f"{v['best_baseline']} {_cell(v['metric'], v['baseline'])}), "
                      f"{'reaches' if v['reaches_arf'] else 'does not reach'} River ARF "
                      f"({_cell(v['metric'], v['river_arf'])}) at [bold]{v['cpu_share_of_arf']:.2f}x[/] its CPU time")


def print_task_summary(streams: dict[str, dict[str, Any]], console: Any) -> None:
    """Several task streams: one line each (the task's metric for default, the best baseline and ARF)."""
    from rich import box
    from rich.table import Table

    t = Table(title="default against the baselines and River ARF, per task", box=box.SIMPLE_HEAD,
              padding=(0, 0, 0, 1), pad_edge=False, show_edge=False)
    for col in ("stream", "task", "metric", "default", "baseline", "ARF", "CPU/ARF", "bar"):
        t.add_column(col, justify="left" if col in ("stream", "task", "metric") else "right", no_wrap=True)
    for name, r in streams.items():
        v = task_verdict(r)
        if v is None:
            continue
        m = v["metric"]
        t.add_row(name, r["task"], m, _cell(m, v["default"]), _cell(m, v["baseline"]), _cell(m, v["river_arf"]),
                  f"{v['cpu_share_of_arf']:.2f}x", "met" if v["accepted"] else "not met")
    console.print(t)
