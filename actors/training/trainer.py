"""The trainer: keeps a window of labelled rows, asks the policy when to refit, gates, registers.

``TrainerCore`` holds the logic (unit-tested without Ray, and used as-is by the offline
quality bench); ``TrainerActor`` is the named Ray shell that hands each registered
candidate to the RolloutController and answers manual refit requests.

Each labelled row is first scored by the live version (its error feeds the drift detector
and the live-accuracy trigger), then joins the window. A full refit also fits the no_change
baseline as a model (trees on the entity's previous label alone, ``label_last``): the fitted
candidate is kept only if it beats that on the held-out slice with confidence (on streams
whose labels persist, trees on every field fell below predicting the previous label). The
candidate is then scored next to the live version on the newest held-out slice
(time-ordered, never used for its training) and registered only if it is not worse by more
than the configured margin.

Given a ``RowLog``, the core writes each call's rows and its state after them, and a new core over
the same log starts where the last one stopped (see ``TrainerActor`` for what survives a restart).

The task (``model``: binary, multiclass, regression) and the categorical fields (``categorical``)
shape the fit through ``TaskFit``: the task's objective and metrics, the gate by the task's metric
and direction, the no_change baseline for binary only, a category dictionary per version, and
``task``/``objective``/``labels``/``categories`` in the version's meta (a binary version without
categorical fields is built exactly as before and its meta carries none of them).

The frame ``add_rows`` takes (what the stream plane sends, one row per labelled event):

- ``event_time``: float seconds; ``event_id``: optional text (rows whose id the window holds are skipped);
- each numeric feature: a float (NaN = missing); each categorical column (``FeaturesConfig.categorical_columns``:
  a categorical field or its ``<field>_last``): text, None/NaN = missing
  (any other value is taken as missing);
- ``label``: binary 0/1 as a float; regression a finite float; multiclass the class INDEX as a float
  (what ``schema.check_columns`` gives, the position in ``model.classes``) or, in a text column, the
  class name itself. Rows whose label does not fit the task are dropped and counted (``bad_labels``).

Example:
    >>> import tempfile, numpy as np, pandas as pd
    >>> from streamfit.config import TrainerConfig
    >>> from streamfit.registry import Registry
    >>> cfg = TrainerConfig(refit_every_rows=200, num_boost_round=5, drift_detector=None, min_rows_between=0)
    >>> core = TrainerCore(cfg, ["a"], Registry(tempfile.mkdtemp()))
    >>> rng = np.random.default_rng(0); a = rng.normal(size=200)
    >>> rows = pd.DataFrame({"event_time": np.arange(200.0), "a": a, "label": (a > 0).astype(float)})
    >>> core.add_rows(rows), core.history[-1]["reason"], core.history[-1]["accepted"]
    (1, 'volume', True)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import ray
import xgboost as xgb

from streamfit.config import ModelConfig, TrainerConfig
from streamfit.registry import Registry
from streamfit.schema import EVENT_ID, EVENT_TIME, LABEL
from streamfit.psi import psi_by_feature, reference_for
from streamfit.task import Task
from streamfit.actors.training.gate import Fitter, better_or_close, fit_in_process, no_change_candidate, paired_wins
from streamfit.actors.training.policy import Decision, RefitPolicy
from streamfit.actors.training.row_log import RowLog
from streamfit.actors.training.task_fit import TaskFit
from streamfit.actors.training.trainer_state import TrainerState

log = logging.getLogger(__name__)
PSI_EVERY_ROWS = 500
LIVE_HISTORY_KEPT = 1_000  # refit attempts a running trainer keeps for stats and the status page


class TrainerCore(TrainerState):
    """Window of labelled rows + refit policy + validation gate + registration (its restart state: ``TrainerState``)."""

    def __init__(self, cfg: TrainerConfig, feature_names: list[str], registry: Registry | None,
                 fitter: Fitter | None = None, schema_hash: str | None = None, verify_rows: int = 32,
                 row_log: RowLog | None = None, model: ModelConfig | None = None,
                 categorical: list[str] | tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.fit = TaskFit(feature_names, model, categorical)
        self.gate_metric, names = cfg.gate_metric, self.fit.spec.metric_names()
        if self.gate_metric not in names and "gate_metric" not in cfg.model_fields_set:
            self.gate_metric = self.fit.spec.gate_metric  # a TrainerConfig made apart from its Config: the task's loss
        if self.gate_metric not in names:
            raise ValueError(f"gate_metric {cfg.gate_metric!r}: one of {names}")
        self.schema_hash = schema_hash
        self.verify_rows = verify_rows
        self.feature_names = list(feature_names)
        self.registry = registry
        self.fitter = fitter or fit_in_process
        self.policy = RefitPolicy(cfg, self.fit.spec)  # the spec: pinball_above measures with its quantile
        self.buffer = self.fit.window()
        self.ids = np.empty(0, dtype=object)  # each window row's event id (None: it came without one)
        self.duplicates = 0  # rows skipped: their event id was in the window already (a re-sent batch)
        self.rows_seen = 0
        self.rows_since_psi = 0
        self.latest_time = float("-inf")
        self.history: list[dict[str, Any]] = []
        self.history_kept: int | None = LIVE_HISTORY_KEPT  # None: every attempt (an offline replay)
        self.refit_counts: dict[str, int] = {}  # accepted refits by reason, since the first (they outlive history)
        self.champion: xgb.Booster | None = None
        self.champion_version: int | None = None
        self.champion_meta: dict[str, Any] = {}
        self.champion_cats = None  # the live version's category dictionary (None: no categorical fields)
        self.live_mismatch = ""  # why the live version is not measured against (another task's), '' when it is
        self.versions = 0
        if registry is not None:
            live = registry.aliases().get("live") or (registry.version_numbers() or [None])[-1]
            if live is not None:
                self.sync_live(live)
        self.row_log, self.resumed = row_log, None
        if row_log is not None:
            self._resume()

    # -- the live version ------------------------------------------------------------------
    def sync_live(self, version: int) -> None:
        """Make ``version`` (from the registry) the champion the policy and the gate measure."""
        if version == self.champion_version or self.registry is None:
            return
        booster, meta = self.registry.load(version)
        self._crown(booster, version, meta)

    def _crown(self, booster: xgb.Booster | None, version: int | None, meta: dict[str, Any]) -> None:
        self.live_mismatch = self.fit.mismatch(meta) if booster is not None else ""
        if self.live_mismatch:  # another task's version (the config changed): nothing to measure against
            log.warning("trainer: live v%s not used: %s", version, self.live_mismatch)
            booster, meta = None, {}
        self.champion, self.champion_version, self.champion_meta = booster, version, meta
        self.champion_cats = self.fit.dictionary(self.buffer.iloc[:0], meta) if booster is not None else None

    def _params(self) -> dict[str, Any]:
        return self.fit.params_for(max_depth=self.cfg.max_depth, eta=self.cfg.eta,
                                   min_child_weight=self.cfg.min_child_weight, max_bin=self.cfg.max_bin)

    def _predict(self, booster: xgb.Booster, frame: pd.DataFrame, cats: Any = None) -> np.ndarray:
        return self.fit.predict(booster, frame, cats)

    # -- the stream of labelled rows -------------------------------------------------------
    def add_rows(self, rows: pd.DataFrame) -> int | None:
        """Score with the live version, add to the window, and refit if the policy says so."""
        if rows is None or len(rows) == 0:
            return None
        ids = rows[EVENT_ID].to_numpy(dtype=object) if EVENT_ID in rows else np.full(len(rows), None, dtype=object)
        fresh = ~(pd.Series(ids).isin(self.ids).to_numpy() & pd.notna(ids)) if len(self.ids) else np.ones(len(ids), bool)
        if not fresh.all():  # a coordinator resumed from its checkpoint sends rows the window (or the log) holds
            self.duplicates += int((~fresh).sum())
            rows, ids = rows[fresh], ids[fresh]
            if not len(rows):
                return None
        part, keep = self.fit.rows(rows)
        if not keep.all():  # labels that do not fit the task (counted in bad_labels)
            ids = ids[keep]
            if not len(part):
                return None
        errors = y = pred = None
        if self.champion is not None:  # the loss triggers (rmse_above, ...) measure the live version's answers
            y, pred = part[LABEL].to_numpy(), self._predict(self.champion, part, self.champion_cats)
            errors = self.fit.live_errors(y, pred, self.champion_meta)
        self.latest_time = max(self.latest_time, float(part[EVENT_TIME].max()))
        self.policy.observe(len(part), self.latest_time, errors, y, pred)
        self.buffer = pd.concat([self.buffer, part], ignore_index=True) if len(self.buffer) else part
        self.ids = np.concatenate([self.ids, ids])
        keep = window_rows_kept(self.cfg)
        if len(self.buffer) > keep:
            self.buffer = self.buffer.iloc[-keep:].reset_index(drop=True)
            self.ids = self.ids[-keep:]
        self.rows_seen += len(part)
        self.rows_since_psi += len(part)
        reference = self.champion_meta.get("reference")
        if reference and self.cfg.psi_above is not None and self.rows_since_psi >= PSI_EVERY_ROWS:
            self.policy.observe_psi(psi_by_feature(reference, self.buffer.iloc[-self.rows_since_psi:]))
            self.rows_since_psi = 0
        decision = self.policy.decide(self.latest_time, self._trees(self.champion))
        version = self.refit(decision) if decision is not None else None
        self._persist(part.assign(**{EVENT_ID: ids}))
        return version

    def request_refit(self, reason: str = "manual", kind: str = "manual") -> int | None:
        """A refit asked from outside — an operator (``manual``) or the monitor's drift alarm (``drift``):
        runs now (the gate still applies)."""
        self.policy.request(reason)
        decision = self.policy.decide(self.latest_time, self._trees(self.champion))
        if decision is None:
            return None
        if kind != "manual":
            decision = dataclasses.replace(decision, reason=kind)
        version = self.refit(decision)
        self._persist(self.buffer.iloc[:0].assign(**{EVENT_ID: self.ids[:0]}))
        return version

    @staticmethod
    def _trees(booster: xgb.Booster | None) -> int | None:
        return None if booster is None else booster.num_boosted_rounds()

    # -- one refit -----------------------------------------------------------------------
    def refit(self, decision: Decision) -> int | None:
        """Fit a candidate as decided, gate it against the live version, register it if it passes."""
        started = time.time()
        self.policy.refitted(self.latest_time)
        data = self.buffer.iloc[-decision.window_rows:]
        if self.cfg.window_s is not None and len(data):
            data = data[data[EVENT_TIME] >= self.latest_time - self.cfg.window_s]
        data = data.sort_values(EVENT_TIME, kind="stable")
        n_hold = max(1, int(len(data) * self.cfg.holdout_fraction))
        train, hold = data.iloc[:-n_hold], data.iloc[-n_hold:]
        record: dict[str, Any] = {"reason": decision.reason, "strategy": decision.strategy, "rows": len(train),
                                  "event_time": self.latest_time, "accepted": False, "version": None}
        if len(train) < 10 or train[LABEL].nunique() < 2:
            record["why"] = "too few rows or one class"
            self._log(record)
            return None
        base, rounds = None, self.cfg.num_boost_round
        if decision.strategy == "incremental" and self.champion is not None:
            base, rounds = self.champion, self.cfg.incremental_trees
            train = train.iloc[-max(self.policy.cfg.min_rows_between, len(train) // 4):]
        cats = self.fit.dictionary(train, self.champion_meta if base is not None else None)
        fit_rows = train if cats is None else cats.encode(train)
        candidate = self.fitter(fit_rows, self.feature_names, self._params(), rounds, base)
        y = hold[LABEL].to_numpy()
        p_cand = self._predict(candidate, hold, cats)
        cand_scores = self.fit.metrics(y, p_cand)
        simple = None
        if base is None and self.cfg.baseline_candidate and self.fit.spec.task is Task.BINARY:
            simple = no_change_candidate(fit_rows, self.feature_names, self._params())
        if simple is not None:  # binary only: the baseline of a regression or multiclass task is left for later
            p_simple = self._predict(simple, hold, cats)
            wins, losses = paired_wins(y, p_cand, p_simple)
            record["vs_no_change"] = {"wins": wins, "losses": losses}
            if wins - losses <= self.cfg.baseline_z * np.sqrt(wins + losses):
                # Not surely better than the entity's previous label: that (simpler) model is the candidate.
                candidate, cand_scores = simple, self.fit.metrics(y, p_simple)
                record["model"] = "no_change"
        live_scores = None
        if self.champion is not None:
            live_scores = self.fit.metrics(y, self._predict(self.champion, hold, self.champion_cats))
        metric = self.gate_metric
        record.update(candidate=cand_scores, live=live_scores, fit_seconds=round(time.time() - started, 3))
        passed = live_scores is None or better_or_close(metric, cand_scores[metric], live_scores[metric],
                                                        self.cfg.gate_margin)
        if not passed:
            record["why"] = (f"gate: candidate {metric} {cand_scores[metric]:.4f} vs live "
                             f"{live_scores[metric]:.4f} (margin {self.cfg.gate_margin})")
            if self.registry is not None:
                self.registry.audit("gate_rejected", actor="trainer", reason=record["why"],
                                    trigger=decision.reason, candidate=cand_scores, live=live_scores,
                                    live_version=self.champion_version)
            self._log(record)
            return None
        meta = {
            "features": self.feature_names,
            "metrics": {"holdout": cand_scores, "live_on_holdout": live_scores, "gate_metric": metric},
            "rows": int(len(train)),
            "window": {"start": float(train[EVENT_TIME].iloc[0]), "end": float(train[EVENT_TIME].iloc[-1])},
            "trigger": decision.reason,
            "model": record.get("model", "fitted"),  # "no_change": the baseline model won (see the module doc)
            "strategy": decision.strategy if base is not None else "full",
            "trees": candidate.num_boosted_rounds(),
            "parent": self.champion_version,
            "trainer": self.cfg.model_dump(),
            "reference": reference_for(train, self.fit.numeric),
            **self.fit.reference_prediction(self._predict(candidate, train, cats)),
            "fit_seconds": record["fit_seconds"],
            "schema_hash": self.schema_hash,
            # A fixed sample and its predictions: a slot that loads this version must reproduce them.
            "verify": self.fit.verify_sample(hold.head(self.verify_rows),
                                             self._predict(candidate, hold.head(self.verify_rows), cats)),
        }
        if not self.fit.plain:  # a binary version without categories reads as it always did
            meta.update(self.fit.describe(cats))
        if self.registry is not None:
            version = self.registry.register(candidate, meta)
            self.registry.set_alias("candidate", version, actor="trainer", reason=decision.reason)
        else:
            self.versions += 1
            version = self.versions
        # The new version will go live (the rollout controller says otherwise through sync_live).
        self._crown(candidate, version, meta)
        record.update(accepted=True, version=version)
        self._log(record)
        return version

    def _log(self, record: dict[str, Any]) -> None:
        """Keep a refit attempt (the newest ``history_kept``; a long-running trainer's memory stays bounded)."""
        self.history.append(record)
        if record["accepted"]:
            self.refit_counts[record["reason"]] = self.refit_counts.get(record["reason"], 0) + 1
        if self.history_kept is not None:
            del self.history[:-self.history_kept]

    def stats(self) -> dict[str, Any]:
        """Rows seen, window size, live accuracy, and every refit attempt with its reason and scores."""
        out = {"rows_seen": self.rows_seen, "rows_buffered": len(self.buffer), "duplicate_rows": self.duplicates,
               "live_version": self.champion_version, "live_accuracy": self.policy.live_accuracy(),
               **self._task_stats(),
               "refit_counts": dict(self.refit_counts),
               "refits": [r for r in self.history if r["accepted"]],
               "rejected": [r for r in self.history if not r["accepted"]]}
        if self.row_log is not None or self.resumed is not None:
            out["row_log"] = {**(self.row_log.stats() if self.row_log else {}), "resumed": self.resumed}
        return out

    def _task_stats(self) -> dict[str, Any]:
        if self.fit.plain and not self.live_mismatch:
            return {}
        out = {"task": self.fit.spec.task.value, "bad_labels": self.fit.bad_labels, "live_mismatch": self.live_mismatch}
        if self.fit.spec.task is Task.REGRESSION:  # its errors are in units of the holdout MAE: no accuracy
            errors = self.policy.recent_errors
            out.update(live_accuracy=None, live_relative_error=float(np.mean(errors)) if errors else None)
        return out

    def window(self) -> pd.DataFrame:
        """A copy of the window of labelled rows (event time, features, label), oldest first."""
        return self.buffer.copy()


def window_rows_kept(cfg: TrainerConfig) -> int:
    """Rows the trainer's window holds (and its row log keeps): the longer of the two refit windows."""
    return max(cfg.window_rows, cfg.drift_window_rows)


@ray.remote(max_restarts=-1)
class TrainerActor:
    """Named Ray actor around TrainerCore; sends each registered candidate to the rollout controller.

    Survives a restart (Ray restarts it) when started with a ``state_uri`` (a ``RowLog`` there, beside
    the checkpoints): the window of labelled rows as of the last call it answered, the policy's state
    (rows and time since the last refit, recent errors of the live version, the drift detector, alarms,
    follow-ups due), its counters and clock, and the newest ``trainer_state.HISTORY_KEPT`` refit records; so its
    next refit learns from the same rows and fires at the same row as if it had not stopped. The live
    model is reloaded from the registry. Lost: the rows of a call it was answering when it died
    (the coordinator counts them in ``training_rows_failed``), a refit that was running (the policy
    decides again as rows arrive), older refit records. Without ``state_uri`` it starts with an empty window. Rows whose
    event id the window holds already are skipped (``duplicate_rows``): a coordinator resumed from its
    checkpoint sends again the rows emitted after it, and a restarted run takes each row once.
    """

    def __init__(self, cfg: TrainerConfig, feature_names: list[str], registry_uri: str,
                 controller_name: str | None, namespace: str | None, schema_hash: str | None = None,
                 distributed_storage: str | None = None, state_uri: str | None = None,
                 model: ModelConfig | None = None, categorical: list[str] | tuple[str, ...] = ()) -> None:
        fitter = None
        if cfg.distributed_above_rows is not None and not categorical:  # Ray Train's fit takes floats only
            from streamfit.actors.training.distributed_fit import fit_distributed

            def fitter(train, features, params, rounds, base):  # noqa: ANN001
                if base is None and len(train) > cfg.distributed_above_rows:
                    # Shared storage, so Ray Train's workers on other nodes can write their checkpoints.
                    return fit_distributed(train, features, LABEL, params, rounds, cfg.distributed_workers,
                                           storage_path=distributed_storage)
                return fit_in_process(train, features, params, rounds, base)

        row_log = RowLog(state_uri, window_rows_kept(cfg)) if state_uri else None
        self.core = TrainerCore(cfg, feature_names, Registry(registry_uri), fitter, schema_hash=schema_hash,
                                row_log=row_log, model=model, categorical=categorical)
        self.controller = ray.get_actor(controller_name, namespace=namespace) if controller_name else None
        self._alias_checked = 0.0

    def _follow_live(self) -> None:
        if time.time() - self._alias_checked < 2.0:
            return
        self._alias_checked = time.time()
        live = self.core.registry.aliases().get("live")
        if live is not None:
            self.core.sync_live(live)

    def _hand_over(self, version: int | None) -> int | None:
        if version is not None and self.controller is not None:
            trigger = self.core.history[-1]["reason"]
            self.controller.deploy.remote(version, f"refit ({trigger})", trigger=trigger)
        return version

    def add_rows(self, rows: pd.DataFrame) -> int | None:
        self._follow_live()
        return self._hand_over(self.core.add_rows(rows))

    def request_refit(self, reason: str = "manual", kind: str = "manual") -> dict[str, Any]:
        self._follow_live()
        version = self._hand_over(self.core.request_refit(reason, kind))
        return {"version": version, "attempt": self.core.history[-1] if self.core.history else None}

    def stats(self) -> dict[str, Any]:
        return self.core.stats()

    def window(self) -> pd.DataFrame:
        """The window of labelled rows the next refit learns from."""
        return self.core.window()
