"""Killing the coordinator actor mid-stream on a real local Ray: Ray restarts it, the ``run`` call in progress is
retried, the coordinator resumes from its last checkpoint, and the shards end in the state of an uninterrupted
run of the same stream (re-sent batches are not applied twice)."""

from __future__ import annotations

import pytest
import ray

from shard_streams import assert_same_state, shard_state
from streamfit.actors.stream import CoordinatorActor, FeatureShardActor
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.local_runner import LocalRunner
from streamfit.actors.stream.partition import EventTimeGuard
from streamfit.actors.stream.sources import SyntheticSource
from streamfit.config import config_from_dict
from streamfit.retry import wait_until

BATCHES = 40
SHARDS = 2


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _cfg(ckpt: str):
    return config_from_dict({
        "checkpoints": {"uri": ckpt, "interval_s": 1.0},
        "shards": {"num_shards": SHARDS},
        # Paced so the stream lasts ~20 s: the kill lands mid-stream even on a loaded machine.
        "stream": {"batch_size": 100, "max_events": 100 * BATCHES, "max_events_per_s": 200.0, "entities": 40,
                   "bad_row_rate": 0.0, "seed": 11},
    })


def _uninterrupted(cfg) -> list[FeatureShard]:
    runner = LocalRunner(cfg.features, SyntheticSource(cfg.stream, cfg.features), num_shards=SHARDS,
                         training_features=cfg.trainer.training_features,
                         event_time=EventTimeGuard.from_config(cfg.stream))
    stats = runner.run()
    assert stats["batches"] == BATCHES
    return runner.shards


@pytest.mark.timeout(1800)  # the waits below add up to more than the default 600 s when the machine is loaded
def test_a_killed_coordinator_resumes_from_its_checkpoint_and_the_shards_end_as_without_the_kill(tmp_path):
    cfg = _cfg(str(tmp_path / "ckpt"))
    shards = [FeatureShardActor.remote(cfg.features, i, cfg.checkpoints.uri, SHARDS, cfg.trainer.training_features)
              for i in range(SHARDS)]
    coord = CoordinatorActor.remote(cfg, shards, None)
    done = coord.run.remote()

    def mid_stream() -> bool:
        try:
            s = ray.get(coord.stats.remote(), timeout=60)
        except ray.exceptions.GetTimeoutError:  # a loaded machine: ask again
            return False
        return s["checkpoints"] >= 1 and s["batch_id"] >= 12 if "checkpoints" in s else False

    assert wait_until(mid_stream, timeout_s=600, interval_s=0.2)
    at_kill = ray.get(coord.stats.remote(), timeout=60)
    assert at_kill["batch_id"] < BATCHES, "the stream ended before the kill"
    ray.kill(coord, no_restart=False)

    final = ray.get(done, timeout=900)  # the retried run, on the restarted actor
    assert final["resumed_from_batch"] is not None and final["resumed_from_batch"] >= 1
    assert final["batch_id"] == BATCHES
    want = _uninterrupted(cfg)
    for i, actor in enumerate(shards):
        got = FeatureShard(cfg.features, i, cfg.trainer.training_features)
        got.restore(ray.get(actor.snapshot.remote(), timeout=120))
        assert got.last_batch_id == BATCHES
        assert_same_state(shard_state(got), shard_state(want[i]))
