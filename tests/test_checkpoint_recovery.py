"""A damaged newest checkpoint at start (issue 13, item 15): a zero-length or truncated manifest or
shard file is reported with its path and the start goes on from the previous complete checkpoint;
the next checkpoint gets a new id (no clash with the damaged one); with no good checkpoint left the
error says which files are damaged, once, instead of a crash loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

from streamfit.actors.stream.checkpoint import CheckpointError, CheckpointStore
from streamfit.actors.stream.local_runner import LocalRunner
from streamfit.actors.stream.sources import FramesSource, SyntheticSource
from streamfit.config import FeaturesConfig, StreamConfig

FEATURES = FeaturesConfig()
STREAM = StreamConfig(batch_size=200, entities=40, label_delay_events=300, bad_row_rate=0.0, seed=3)


@pytest.fixture(scope="module")
def batches() -> list[pd.DataFrame]:
    return [SyntheticSource(STREAM, FEATURES).read(k)[0] for k in range(12)]


def two_checkpoints(root: Path, batches: list[pd.DataFrame]) -> None:
    runner = LocalRunner(FEATURES, FramesSource(batches), num_shards=2, checkpoint_uri=str(root))
    runner.run_until(4)
    asyncio.run(runner.coordinator.checkpoint())  # checkpoint 1 at position 4
    runner.run_until(8)
    asyncio.run(runner.coordinator.checkpoint())  # checkpoint 2 at position 8


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


@pytest.mark.parametrize("victim,how", [("manifests/000000002.json", "empty"),
                                        ("manifests/000000002.json", "truncated"),
                                        ("shards/000000002/shard-1/events.arrow", "truncated"),
                                        ("shards/000000002/shard-0/meta.json", "empty")])
def test_a_damaged_newest_checkpoint_is_reported_and_the_start_resumes_from_the_previous_one(
        tmp_path, batches, caplog, victim, how):
    two_checkpoints(tmp_path, batches)
    damage(tmp_path / victim, how)
    store = CheckpointStore(str(tmp_path))
    manifest = store.latest_manifest()
    assert manifest is not None and manifest["checkpoint_id"] == 1 and manifest["position"] == 4
    assert any(victim in p for p in store.damaged), store.damaged
    assert victim in caplog.text
    runner = LocalRunner(FEATURES, FramesSource(batches), num_shards=2, checkpoint_uri=str(tmp_path))
    assert runner.position == 4
    assert runner.coordinator.stats()["damaged_checkpoints"] == store.damaged
    stats = runner.run()  # to the end, with a checkpoint there: id 3, not a clash with the damaged 2
    assert stats["position"] == len(batches) and stats["checkpoints"] == 1
    again = CheckpointStore(str(tmp_path))
    assert again.latest_manifest()["checkpoint_id"] == 3 and again.latest_manifest()["position"] == len(batches)


def test_with_every_checkpoint_damaged_the_error_names_the_files(tmp_path, batches):
    two_checkpoints(tmp_path, batches)
    for manifest in (tmp_path / "manifests").glob("*.json"):
        damage(manifest, "empty")
    with pytest.raises(CheckpointError, match=r"000000001\.json.*000000002\.json|000000002\.json.*000000001\.json"):
        CheckpointStore(str(tmp_path)).latest_manifest()
