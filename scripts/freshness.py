"""``streamfit bench freshness``: is what requests are served as good as what the policy achieves offline?

One run, two measurements of the same seeded synthetic drifting stream (bounded to ``changes + 1``
concepts of ``drift_every`` events each; by default the embedded stream as the demo runs it: a concept
every 40,000 events, 1,000 events/s, seed 7, three changes):

- **live** — ``demo.run_live``, the demo's loop: a local Ray with the shards, the trainer, the registry,
  Serve with canary rollouts, and the stream's own raw events as request load (labels arrive later);
  every answer is kept (event id, event time, version, prediction);
- **offline** — the prequential replay of ``streamfit bench quality`` (``scripts.quality``) of the same
  trainer policy on the same source batches, in the same order, with instant rollouts: each row is
  predicted by the version live at its event time, before the trainer learns it.

Figures:

- ``served_accuracy`` / ``offline_accuracy`` — request-weighted, over the same set: the answered requests
  whose label reached the pipeline before the end and whose event came after the replay's first model
  went live (before it the replay has no prediction; the live system takes requests only once a version
  is live). Each request counts once per answer, in both. ``ratio`` = served / offline.
  ``served_accuracy_fresh`` / ``_stale`` split the served figure by whether the answering version was
  trained after the request's concept began (below).
- ``stale_share`` — share of every request answered while the stream ran, served by a version trained only on rows before the
  concept of the request's event began (ground truth: the generator's ``drift_every``; a version's
  "trained through" is the newest event time of its training rows, the registry's ``window.end``).
- per concept change: seconds from the wall time its first events were ingested (the coordinator's
  source position, interpolated between looks at the planes about a second apart) to the first moment a
  version trained after it served 100 % (``p50_s``, ``max_s``); a change never reached is counted until
  the end of the run, ``reached: false``.
  ``first_fresh_version`` and ``registered_after_s`` (seconds from the change to its registration) split
  that time into training and rollout.

Example:
    >>> ticks = [(10.0, 0, None), (12.0, 4, 1), (14.0, 8, 1)]  # (wall time, source position, version at 100 %)
    >>> wall_at_position(ticks, 6), wall_at_position(ticks, 9)
    (13.0, None)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rich.console import Console

from streamfit.config import Config
from streamfit.freshness import Change, is_stale, seconds_to_full, spread, stale_share
from streamfit.registry import Registry
from streamfit.schema import EVENT, EVENT_ID, EVENT_TIME, KIND, LABEL
from streamfit.scripts.demo import LiveRecord, Schedule, demo_config, run_live


def bench_config(changes: int, drift_every: int, events_per_s: float, seed: int) -> Config:
    """The demo's configuration on a stream of ``changes + 1`` concepts, paced at ``events_per_s``."""
    cfg = demo_config()
    cfg.stream.seed = seed
    cfg.stream.drift_every = drift_every
    cfg.stream.max_events = drift_every * (changes + 1)
    cfg.stream.max_events_per_s = events_per_s
    # The demo's refit pace fits its 40,000-event concepts; a shorter concept gets a first version within it.
    cfg.trainer.refit_every_rows = min(cfg.trainer.refit_every_rows or drift_every, drift_every * 2 // 3)
    cfg.trainer.min_rows_between = min(cfg.trainer.min_rows_between, drift_every // 5)
    return cfg


def registered(registry_uri: str) -> dict[int, tuple[float, float]]:
    """Each registered version's newest training row (event time) and registration time, from its metadata."""
    return {int(m["version"]): (float(m["window"]["end"]), float(m.get("registered_at", "nan")))
            for m in Registry(registry_uri).list_versions() if (m.get("window") or {}).get("end") is not None}


def first_registered(change: Change, versions: dict[int, tuple[float, float]]) -> tuple[Optional[int], Optional[float]]:
    """The first version registered trained after ``change`` began, and seconds from the change to its registration.

    >>> first_registered(Change(100.0, 1000.0), {1: (90.0, 990.0), 2: (120.0, 1012.5), 3: (150.0, 1020.0)})
    (2, 12.5)
    """
    fresh = sorted((at, v) for v, (end, at) in versions.items() if end >= change.start)
    return (fresh[0][1], round(fresh[0][0] - change.wall, 2)) if fresh else (None, None)


def wall_at_position(ticks: list[tuple[float, Any, Optional[int]]], target: int) -> Optional[float]:
    """When the source position reached ``target`` (linear between two looks); None if it never did."""
    prev: Optional[tuple[float, int]] = None
    for t, pos, _ in ticks:
        if int(pos) >= target:
            if prev is None or prev[1] >= target:
                return t
            t0, p0 = prev
            return t0 + (target - p0) / (int(pos) - p0) * (t - t0)
        prev = (t, int(pos))
    return None


def full_timeline(ticks: list[tuple[float, Any, Optional[int]]]) -> list[tuple[float, Optional[int]]]:
    """(wall time, version at 100 %) whenever it changed."""
    out: list[tuple[float, Optional[int]]] = []
    for t, _, v in ticks:
        if not out or out[-1][1] != v:
            out.append((t, v))
    return out


def offline_replay(cfg: Config, positions: int) -> tuple[Any, np.ndarray, float, int]:
    """The trainer policy replayed on the source batches ``0 .. positions-1`` with instant rollouts: the rows,
    whether each was predicted right, when the first model went live (event time), and the refits."""
    from streamfit.actors.stream import SyntheticSource
    from streamfit.scripts.quality import feature_pass, replay_trainer

    src = SyntheticSource(cfg.stream, cfg.features)
    replay = feature_pass((src.read(p)[0] for p in range(positions)), cfg.features)
    result, first_live = replay_trainer(replay, cfg.trainer, cfg.trainer.refit_every_rows or 1000)
    return replay.rows, result.correct, first_live, result.refits


def measure_freshness(cfg: Config, rec: LiveRecord, offline: bool = True) -> dict[str, Any]:
    """The freshness figures of a live run on the synthetic stream (see the module docstring)."""
    from streamfit.actors.stream import SyntheticSource

    s, bs = cfg.stream, cfg.stream.batch_size
    first = SyntheticSource(s, cfg.features).read(0)[0]
    start_time = float(first.loc[first[KIND] == EVENT, EVENT_TIME].iloc[0])  # event 0's time
    versions = registered(rec.registry_uri)
    trained = {v: end for v, (end, _) in versions.items()}
    positions = int(rec.ticks[-1][1]) if rec.ticks else 0
    events_read = positions * bs if s.max_events is None else min(positions * bs, s.max_events)
    ans = [a for a in rec.answers if a[4] <= rec.stream_end]  # after it, requests repeat events never labelled
    idx = np.array([int(a[0][2:]) for a in ans], dtype=np.int64)  # "ev123" -> 123
    concept_begins = (idx // s.drift_every) * s.drift_every
    starts = [start_time + b / s.events_per_second if b else None for b in concept_begins.tolist()]
    stale = [is_stale(trained.get(a[2]), start) for a, start in zip(ans, starts)]
    out: dict[str, Any] = {"requests": len(ans),
                           "stale_share": _round(stale_share(zip((a[2] for a in ans), starts), trained))}
    changes = []
    for b in range(s.drift_every, events_read, s.drift_every):
        wall = wall_at_position(rec.ticks, b // bs + 1)
        if wall is not None:
            changes.append(Change(start_time + b / s.events_per_second, wall))
    end = rec.ticks[-1][0] if rec.ticks else time.time()
    per_change = seconds_to_full(changes, trained, full_timeline(rec.ticks), end)
    for c, change in zip(per_change, changes):  # where the seconds go: to a fresh version, then to its 100 %
        c["first_fresh_version"], c["registered_after_s"] = first_registered(change, versions)
    out.update(changes=per_change, concept_changes=len(per_change), **spread([c["seconds"] for c in per_change]))
    out.update(served_accuracy=None, offline_accuracy=None, ratio=None, accuracy_gap=None, requests_compared=0)
    if offline and positions:
        rows, correct, first_live, refits = offline_replay(cfg, positions)
        where = {e: i for i, e in enumerate(rows[EVENT_ID].astype(str).tolist())}
        labels = (rows[LABEL].to_numpy(dtype=float) >= 0.5).astype(int)
        labelled = [(a, where[a[0]], st) for a, st in zip(ans, stale) if a[0] in where]
        same = [(a, i) for a, i, _ in labelled if a[1] > first_live]
        by_freshness = {key: [a[3] == labels[i] for a, i, st in labelled if a[1] > first_live and st == flag]
                        for key, flag in (("served_accuracy_fresh", False), ("served_accuracy_stale", True))}
        served = float(np.mean([a[3] == labels[i] for a, i in same])) if same else None
        off = float(np.mean([correct[i] for _, i in same])) if same else None
        scored = rows[EVENT_TIME].to_numpy(dtype=float) > first_live
        out.update(served_accuracy=_round(served), offline_accuracy=_round(off), requests_compared=len(same),
                   ratio=_round(served / off if served is not None and off else None),
                   accuracy_gap=_round(served - off if served is not None and off is not None else None),
                   served_accuracy_all_labelled=_round(float(np.mean([a[3] == labels[i] for a, i, _ in labelled]))
                                                       if labelled else None),
                   **{k: _round(float(np.mean(v)) if v else None) for k, v in by_freshness.items()},
                   requests_labelled=len(labelled),
                   offline_accuracy_stream=_round(float(correct[scored].mean()) if scored.any() else None),
                   offline_versions=refits + 1)
    traffic = rec.stats.traffic
    out.update(versions_trained=len(rec.stats.trainer.refits), rollouts=traffic.outcomes(), events=events_read,
               monitor=rec.stats.freshness.model_dump(mode="json", exclude={"changes"}))
    return out


def _round(x: Optional[float], digits: int = 4) -> Optional[float]:
    return None if x is None else round(float(x), digits)


def bench_freshness(changes: int = 3, drift_every: int = 40_000, events_per_s: float = 1000.0,
                    request_rate: float = 50.0, seed: int = 7, max_duration_s: float = 600.0,
                    workdir: Path = Path(".streamfit/bench-freshness"), console: Console | None = None) -> dict[str, Any]:
    """Run the live system and the offline replay on the same stream; the freshness figures and the settings."""
    console = console or Console(stderr=True)
    cfg = bench_config(changes, drift_every, events_per_s, seed)
    started = time.perf_counter()
    rec = run_live(cfg, Schedule(max_duration_s), workdir, console, request_rate, record=True,
                   title="bench freshness")
    live_s = time.perf_counter() - started
    console.print("[dim]offline: the same policy replayed on the same events, instant rollouts …[/]")
    out = measure_freshness(cfg, rec)
    out.update(settings={"changes": changes, "drift_every": drift_every, "events_per_s": events_per_s,
                         "request_rate": request_rate, "seed": seed, "max_duration_s": max_duration_s},
               live_seconds=round(live_s, 1), wall_seconds=round(time.perf_counter() - started, 1),
               load_average=[round(x, 2) for x in os.getloadavg()])
    return out
