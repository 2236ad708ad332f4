"""``MonitorActor``: the named Ray shell of the monitoring plane.

It holds a ``Monitor`` (``core``) and a ``MetricsExport``, forwards the calls of the Router
replicas (``record``), the coordinator (``observe_rows``) and the readers (``stats``,
``per_version``, ``drift``, ``timeseries``, ``accuracy_since``), and runs the sampling timer:
every ``sample_s`` it asks the attached planes for their reports, takes a sample, exports the
metrics and, when the alarm policy says so, asks the trainer for a refit; with a ``state_uri`` it
saves what survives a restart (see ``MonitorActor``) after a sample.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, Callable

import pandas as pd
import ray

from streamfit.config import ModelConfig, MonitorConfig
from streamfit.registry import Registry
from streamfit.actors.monitoring.core import Monitor
from streamfit.actors.monitoring.metrics_export import MetricsExport, ray_metrics
from streamfit.actors.monitoring.monitor_state import MonitorState
from streamfit.actors.monitoring.planes import Planes

REPORTS = {"coordinator": "stats", "controller": "status", "trainer": "stats"}  # plane -> its report method


def forward(method: Callable[..., Any]) -> Callable[..., Any]:
    """An actor method that calls ``method`` on the actor's ``core`` (same name, signature and docstring)."""

    @functools.wraps(method)  # Ray reads the signature through __wrapped__ and checks the arguments
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return method(self.core, *args, **kwargs)

    return call


@ray.remote(num_cpus=0, max_restarts=-1)
class MonitorActor:
    """Named actor: prediction log, stream monitor, time series, Prometheus metrics, drift alarm.

    Survives a restart (Ray restarts it) when started with a ``state_uri`` (``MonitorState`` there,
    written at most every 10 s when it changed): the version it measures and that version's
    reference (quantiles per feature and of the predictions), the drift window of labelled rows and
    the alarm, each version's accuracy on the stream, the refit alarm's cooldown and requests, the
    rows observed; the booster is reloaded from the registry. Lost: what changed in the last
    seconds before the restart, the prediction log (served predictions waiting for labels, served
    accuracy), the time series and the freshness figures. Without ``state_uri`` it starts empty.
    The planes it samples are attached (``attach``) or, given ``planes`` (plane -> named actor),
    looked up by name in its namespace whenever one is missing: a restarted monitor finds them again.
    """

    def __init__(self, cfg: dict[str, Any] | None = None, registry_uri: str | None = None,
                 feature_names: list[str] | None = None, fields: list[str] | None = None,
                 state_uri: str | None = None, model: dict[str, Any] | None = None,
                 planes: dict[str, str] | None = None) -> None:
        config = MonitorConfig.model_validate(cfg or {})
        spec = ModelConfig.model_validate(model or {}).task_spec()  # ``model``: the config's model section
        self.core = Monitor(config, Registry(registry_uri) if registry_uri else None, feature_names, fields, spec)
        self.state = MonitorState(state_uri) if state_uri else None
        if self.state is not None:
            self.state.load(self.core)
        self.export = MetricsExport(ray_metrics())
        self.planes = Planes(planes, REPORTS)
        self._task = asyncio.get_event_loop().create_task(self._sample_forever())

    record = forward(Monitor.record)
    accuracy_since = forward(Monitor.accuracy_since)
    paired_since = forward(Monitor.paired_since)
    per_version = forward(Monitor.per_version)
    drift = forward(Monitor.drift)
    timeseries = forward(Monitor.timeseries)
    stats = forward(Monitor.stats)
    freshness = forward(Monitor.freshness_figures)

    def attach(self, **handles: Any) -> None:
        """Handles of the planes to sample: coordinator, controller, trainer."""
        self.planes.attach(**handles)

    def attached(self) -> list[str]:
        """The planes this monitor samples now."""
        return sorted(self.planes.current(ray.get_actor))

    def labels(self, event_ids: list[str], labels: list[float]) -> int:
        """Labels that arrived; how many matched a logged prediction."""
        return self.core.labels(event_ids, labels, time.time())

    def observe_rows(self, rows: pd.DataFrame) -> None:
        """Labelled rows from the coordinator (labels, drift, live accuracy)."""
        self.core.observe_rows(rows, time.time())

    def saved_state(self) -> dict[str, Any] | None:
        """Writes of the saved state, failures, and a saved state skipped at start (None: not kept)."""
        return self.state.stats() if self.state is not None else None

    def rows_observed(self) -> int:
        """Labelled rows observed so far (the coordinator's ``training_rows`` once they all arrived)."""
        return self.core.rows_observed

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.core.cfg.sample_s)
            try:
                await self.sample()
            except Exception as err:  # a plane restarting: the next sample will do
                self.core.last_error = f"{type(err).__name__}: {err}"

    async def sample(self) -> dict[str, Any]:
        """One point of the time series (and the Prometheus metrics), from every attached plane."""
        now = time.time()
        planes = self.planes.current(ray.get_actor)  # in this actor's namespace
        attached = [p for p in REPORTS if p in planes]
        answers = await asyncio.gather(*(getattr(planes[p], REPORTS[p]).remote() for p in attached))
        sample = self.core.sample(now, **dict(zip(attached, answers)))
        self.export.export(sample)
        if self.state is not None:
            self.state.save(self.core, now)
        if sample.refit_reason is not None:
            out = await planes["trainer"].request_refit.remote(sample.refit_reason, "drift")
            self.core.alarm.answered(now, sample.drift["alarm"], out.get("version"))
        return sample.point
