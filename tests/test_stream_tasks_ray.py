"""FeatureShardActor of a multiclass task with a categorical field on a real local Ray: killed after a checkpoint,
it restarts from it, takes the batches after it again, and gives the same training rows (text and class indices) and
lookup answers (text through Ray) as a shard that never stopped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray

from streamfit.actors.stream import FeatureShardActor
from streamfit.actors.stream.checkpoint import CheckpointStore
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.retry import wait_until
from streamfit.schema import EventArrays
from test_stream_tasks import FEATURES, MULTICLASS, _assert_same_rows, task_batches

WAIT_S = 300  # generous bound on a loaded 2-core machine: the test waits on the restart itself


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _send(actor, batches) -> list:
    out = []
    for bid, df, wm in batches:
        res = ray.get(actor.process.remote(bid, df, wm, float(df["event_time"].max())), timeout=WAIT_S)
        out.append(res)
    return out


def _restored_from(actor) -> int | None:
    try:
        return ray.get(actor.stats.remote(), timeout=30)["restored_from"]
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def test_a_killed_shard_of_a_multiclass_task_recovers_its_text_and_labels(tmp_path) -> None:
    batches, cut = task_batches(16, MULTICLASS), 8
    local = FeatureShard(FEATURES, model=MULTICLASS)
    whole = [local.process(b, df, wm, float(df["event_time"].max())).training_rows for b, df, wm in batches]
    uri = str(tmp_path)
    actor = FeatureShardActor.options(num_cpus=0).remote(FEATURES, 0, uri, 1, "served", MULTICLASS)
    got = [r.training_rows for r in _send(actor, batches[:cut])]
    assert ray.get(actor.checkpoint.remote(1, cut), timeout=WAIT_S) is not None
    CheckpointStore(uri).write_manifest(1, batch_id=cut, position=cut, num_shards=1)
    _send(actor, batches[cut:cut + 3])  # applied, then lost with the process
    ray.kill(actor, no_restart=False)
    # The kill is asynchronous: a batch sent before the old process is gone would be applied there and lost with
    # it. Wait until the restarted actor answers (it, unlike the first one, was restored from the checkpoint).
    assert wait_until(lambda: _restored_from(actor) == cut, timeout_s=WAIT_S)
    got += [r.training_rows for r in _send(actor, batches[cut:])]  # the restarted actor resumes at the checkpoint
    assert ray.get(actor.stats.remote(), timeout=WAIT_S)["restored_from"] == cut
    _assert_same_rows(pd.concat(got, ignore_index=True), pd.concat(whole, ignore_index=True))
    assert pd.concat(got)["label"].isin([0.0, 1.0, 2.0]).all()

    t = float(batches[-1][1]["event_time"].max())
    events = EventArrays(np.array(["u1", "u2"], dtype=object), np.array([t, t]), np.zeros((2, 4)),
                         ["x0", "x1", "x2", "city"], np.array(["", ""], dtype=object),
                         text={"city": np.array(["rome", None], dtype=object)})
    remote, here = ray.get(actor.lookup.remote(events), timeout=WAIT_S), local.lookup(events)
    assert remote.text["city"].tolist() == here.text["city"].tolist() == ["rome", None]
    assert np.allclose(remote.features, here.features, equal_nan=True)
