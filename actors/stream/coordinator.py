"""The coordinator on Ray: a thin actor over the plain ``Coordinator`` (see ``coordinator_core``).

The shards, the trainer and the monitor are actor handles; ``Remote`` shows each as a port
whose calls return ``ObjectRef``s, which the coordinator awaits.

Survives a restart (Ray restarts it, and retries the ``run`` call that was in progress): the
source position, batch id and watermark of the last checkpoint, from which it resumes; the
shards skip the batches they had applied after it. Counters start again from zero; training
rows of batches re-sent after the checkpoint reach the trainer a second time (the shards answer
them from their result cache) and the trainer skips them by event id (its ``duplicate_rows``);
a source set with ``set_source`` is not set again.

Example:
    >>> class Handle:  # stands in for an actor handle
    ...     class ping:
    ...         @staticmethod
    ...         def remote(x: int) -> int:
    ...             return x + 1
    >>> Remote(Handle()).ping(1)
    2
"""

from __future__ import annotations

from typing import Any

import ray

from streamfit.config import Config
from streamfit.actors.stream.coordinator_core import Coordinator
from streamfit.actors.stream.sources import Source


class Remote:
    """An actor handle as a plain port: ``port.name(*args)`` is ``handle.name.remote(*args)`` (an ObjectRef)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __getattr__(self, name: str) -> Any:
        if name == "handle":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.handle, name).remote


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class CoordinatorActor:
    """Drives the data plane: source -> shards -> trainer, with aligned checkpoints (logic in ``Coordinator``)."""

    def __init__(self, cfg: Config, shards: list[Any], trainer: Any | None, monitor: Any | None = None) -> None:
        self.core = Coordinator.from_config(cfg, [Remote(s) for s in shards],
                                            Remote(trainer) if trainer is not None else None,
                                            Remote(monitor) if monitor is not None else None)

    async def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Read and dispatch until stopped, the source ends, or ``duration_s`` passes."""
        return await self.core.run(duration_s)

    async def checkpoint(self) -> dict[str, Any]:
        """Aligned checkpoint now (drains the shards first)."""
        return await self.core.checkpoint()

    def set_source(self, source: Source) -> None:
        """Read from ``source`` instead of the configured one (benchmarks, embedding); before ``run``."""
        self.core.set_source(source)

    def stop(self) -> None:
        """Ask the run loop to finish after the current batch (it drains and checkpoints)."""
        self.core.stop()

    def stats(self) -> dict[str, Any]:
        """Position, events, accepted/rejected rows by reason, rows per shard, checkpoints, recoveries."""
        return self.core.stats()
