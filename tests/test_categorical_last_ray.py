"""FeatureShardActor with a categorical ``<field>_last`` on a real local Ray: killed after a checkpoint, it restarts
from it (its category map from ``texts.arrow``) and gives the same training rows and lookup texts as a shard that
never stopped."""

from __future__ import annotations

import pandas as pd
import pytest
import ray

from streamfit.actors.stream import FeatureShardActor
from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.retry import wait_until
from test_categorical_last import REGRESSION, _probe, _same_rows, features, random_stream
from test_stream_tasks_ray import WAIT_S, _restored_from, _send


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


class _Remote:
    """A shard actor seen through ``lookup`` as ``_probe`` calls it."""

    def __init__(self, actor) -> None:
        self.actor = actor

    def lookup(self, events: pd.DataFrame):
        return ray.get(self.actor.lookup.remote(events), timeout=WAIT_S)


def test_a_killed_shard_restores_last_city(tmp_path) -> None:
    cfg, batches, cut = features(), random_stream(20, seed=6), 10
    local = FeatureShard(cfg, model=REGRESSION)
    whole = [local.process(b, df, wm, float(df["event_time"].max())).training_rows for b, df, wm in batches[:cut]]
    uri = str(tmp_path)
    actor = FeatureShardActor.options(num_cpus=0).remote(cfg, 0, uri, 1, "served", REGRESSION)
    got = [r.training_rows for r in _send(actor, batches[:cut])]
    assert ray.get(actor.checkpoint.remote(1, cut), timeout=WAIT_S) is not None
    CheckpointStore(uri).write_manifest(1, batch_id=cut, position=cut, num_shards=1)
    probe = _probe([local])  # every entity's last city as of the checkpoint
    _send(actor, batches[cut:cut + 3])  # applied, then lost with the process
    ray.kill(actor, no_restart=False)
    assert wait_until(lambda: _restored_from(actor) == cut, timeout_s=WAIT_S)  # the restarted process answers
    assert _probe([_Remote(actor)]) == probe and sum(p is not None for p in probe) > 5  # the map came back
    whole += [local.process(b, df, wm, float(df["event_time"].max())).training_rows for b, df, wm in batches[cut:]]
    got += [r.training_rows for r in _send(actor, batches[cut:])]
    _same_rows(pd.concat(got, ignore_index=True), pd.concat(whole, ignore_index=True))
