"""FeatureShardActor on a real local Ray: a lookup answers while ``process()`` is still applying a batch.

Concurrency is shown by order, not by timing: the batch holds an entity whose ``str()`` blocks
until the test releases it, so ``process()`` is provably inside the batch (it said so) and
cannot finish while the lookup runs. The lookup answers from the view of the last whole batch;
once the batch is released, the next lookup sees it.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pandas as pd
import pytest
import ray

from streamfit.actors.stream import FeatureShardActor
from streamfit.config import FeaturesConfig
from streamfit.schema import EventArrays

# The gate object travels inside the batch: workers cannot import this module, so it goes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
WAIT_S = 120  # generous bound on a loaded 2-core machine; the test waits on events, never on a duration


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
class Signal:
    """Two one-shot events: the batch has started; the batch may go on."""

    def __init__(self) -> None:
        self.started, self.released = asyncio.Event(), asyncio.Event()

    async def start(self) -> None:
        self.started.set()

    async def wait_started(self) -> None:
        await self.started.wait()

    async def release(self) -> None:
        self.released.set()

    async def wait_released(self) -> None:
        await self.released.wait()


class GateEntity:
    """An entity key whose string form is only given once the signal is released (it blocks ``process()``)."""

    def __init__(self, signal: "ray.actor.ActorHandle", name: str) -> None:
        self.signal, self.name = signal, name

    def __str__(self) -> str:
        ray.get(self.signal.start.remote())
        ray.get(self.signal.wait_released.remote())
        return self.name


def _events(entities: list, times: list[float], ids: list[str]) -> pd.DataFrame:
    n = len(entities)
    return pd.DataFrame({"kind": ["event"] * n, "event_id": ids, "entity": pd.Series(entities, dtype=object),
                         "event_time": times, "x0": [1.0] * n, "x1": [0.0] * n, "x2": [0.0] * n})


def test_a_lookup_answers_while_process_is_inside_a_batch():
    cfg = FeaturesConfig()
    shard = FeatureShardActor.options(num_cpus=0).remote(cfg, 0)
    ray.get(shard.process.remote(1, _events(["u", "u"], [0.0, 10.0], ["a", "b"]), 0.0, 10.0), timeout=WAIT_S)
    signal = Signal.remote()
    batch = _events([GateEntity(signal, "u"), "u"], [20.0, 30.0], ["c", "d"])
    pending = shard.process.remote(2, batch, 5.0, 30.0)
    ray.get(signal.wait_started.remote(), timeout=WAIT_S)  # process() is inside batch 2 now

    ask = pd.DataFrame({"entity": ["u", "new"], "event_time": [np.nan, np.nan], "x0": [2.0, 2.0],
                        "x1": [0.0, 0.0], "x2": [0.0, 0.0], "event_id": ["", ""]})
    during = ray.get(shard.lookup.remote(ask), timeout=WAIT_S)
    assert ray.wait([pending], timeout=0)[0] == []  # batch 2 is still held: the lookup did not wait for it
    names = during.feature_names
    assert during.reasons == ["", ""] and during.as_of == 10.0  # the view of batch 1, whole
    # "now" is the clock (10 s): the window [now - 5m, now) holds the event at 0 s, not the one at 10 s
    assert during.features[0][names.index("count_5m")] == 1 and during.features[1][names.index("count_5m")] == 0

    # the Router's shape, plain arrays: the same answer
    arrays = EventArrays(np.array(["u", "new"], dtype=object), np.full(2, np.nan), np.array([[2.0, 0.0, 0.0]] * 2),
                         ["x0", "x1", "x2"], np.array(["", ""], dtype=object))
    same = ray.get(shard.lookup.remote(arrays), timeout=WAIT_S)
    assert same.reasons == during.reasons and same.as_of == during.as_of
    assert np.array_equal(same.features, during.features, equal_nan=True)

    ray.get(signal.release.remote(), timeout=WAIT_S)
    result = ray.get(pending, timeout=WAIT_S)
    assert result.accepted == 2 and result.replay_from is None
    after = ray.get(shard.lookup.remote(ask), timeout=WAIT_S)
    assert after.as_of == 30.0 and after.features[0][names.index("count_5m")] == 3
    assert 0.0 < after.busy <= 1.0  # the shard says it has been applying batches (callers space their calls)
