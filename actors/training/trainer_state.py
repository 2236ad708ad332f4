"""What of the trainer survives a restart: ``TrainerState``, the ``snapshot``/``restore`` half of ``TrainerCore``.

The window of labelled rows (numbers as floats, categorical fields as text), the policy's state, the
counters, the refit history and the live model; the row log (``RowLog``) gets each call's rows and
the state after them, and ``_resume`` rebuilds the core from it.

Example:
    >>> from streamfit.actors.training import TrainerCore
    >>> from streamfit.config import TrainerConfig
    >>> core = TrainerCore(TrainerConfig(), ["a"], None)
    >>> twin = TrainerCore(TrainerConfig(), ["a"], None); twin.restore(core.snapshot()); len(twin.window())
    0
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from streamfit.schema import EVENT_ID, EVENT_TIME, LABEL
from streamfit.actors.training.row_log import RowLogError

log = logging.getLogger("streamfit.actors.training.trainer")
HISTORY_KEPT = 100  # refit records the row log keeps with each segment (older ones: the registry's audit log)


class TrainerState:
    """The restart half of ``TrainerCore`` (a mixin: it reads and replaces the core's attributes)."""

    def snapshot(self) -> dict[str, Any]:
        """The window, the policy's state, the counters, the refit history and the live model (as UBJSON bytes)."""
        model = None if self.champion is None else np.frombuffer(bytes(self.champion.save_raw("ubj")), np.uint8)
        window = {c: self.buffer[c].to_numpy(dtype=object if c in self.fit.categorical else float, copy=True)
                  for c in self.buffer.columns}
        return {**self._state(len(self.history)), "window": {**window, EVENT_ID: self.ids.copy()},
                "champion": {"version": self.champion_version, "model": model,
                             "meta": copy.deepcopy(self.champion_meta)}}

    def _state(self, history: int) -> dict[str, Any]:
        """What the row log writes beside each segment: no rows, no model (the registry holds it)."""
        return {"rows_seen": self.rows_seen, "rows_since_psi": self.rows_since_psi, "latest_time": self.latest_time,
                "duplicates": self.duplicates,
                "versions": self.versions, "history": copy.deepcopy(self.history[len(self.history) - history:]),
                "refit_counts": dict(self.refit_counts),
                "policy": self.policy.snapshot(), "champion": {"version": self.champion_version}}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the state with ``snap``; a champion without a model is loaded from the registry."""
        window = snap.get("window") or {}
        self.buffer = self.fit.window(window)
        self.ids = np.asarray(window.get(EVENT_ID, [None] * len(self.buffer)), dtype=object)
        self.rows_seen, self.rows_since_psi = int(snap["rows_seen"]), int(snap["rows_since_psi"])
        self.duplicates = int(snap.get("duplicates", 0))
        self.latest_time, self.versions = float(snap["latest_time"]), int(snap["versions"])
        self.history = copy.deepcopy(list(snap["history"]))
        counts = snap.get("refit_counts")  # a snapshot from before the counts: those its history holds
        self.refit_counts = dict(counts) if counts is not None else dict(
            Counter(r["reason"] for r in self.history if r["accepted"]))
        self.policy.restore(snap["policy"])
        champ = snap["champion"]
        if champ.get("model") is not None:
            booster = xgb.Booster()
            booster.load_model(bytearray(np.asarray(champ["model"], dtype=np.uint8).tobytes()))
            self._crown(booster, champ["version"], copy.deepcopy(champ["meta"]))
        elif champ["version"] is None or self.registry is None:  # nothing to load it from
            self._crown(None, None, {})
        else:
            try:
                self.sync_live(int(champ["version"]))
            except Exception as err:  # not in the registry (any more): keep the one it names live
                log.warning("trainer: version %s of the saved state cannot be loaded: %s", champ["version"], err)

    def _resume(self) -> None:
        """Rebuild the window and the state from the row log (damaged segments reported and skipped)."""
        columns = [EVENT_TIME, *self.feature_names, LABEL, EVENT_ID]
        try:
            window, state = self.row_log.load(columns)
        except RowLogError as err:  # unreadable storage: run without the log rather than overwrite it
            self.resumed, self.row_log = {"error": str(err)}, None
            log.error("trainer: row log not loaded, not written this time: %s", err)
            return
        snap = {**self._state(0), **(state or {})}
        if window is not None:
            snap["window"] = {c: window[c].to_numpy() for c in columns}
        self.restore(snap)
        self.resumed = {"rows": len(self.buffer), "state": state is not None}

    def _persist(self, rows: pd.DataFrame) -> None:
        if self.row_log is None:
            return
        try:
            self.row_log.append(rows, self._state(HISTORY_KEPT), self.buffer.assign(**{EVENT_ID: self.ids}))
        except RowLogError as err:  # counted in the log's stats; the window in memory goes on
            log.warning("trainer: training rows not logged: %s", err)

