"""A whole FeatureShard in and out of a checkpoint: the ``CheckpointStore`` part plus the served log.

``CheckpointStore.write_shard`` writes the parts it knows (window rows, label rows, pending
rows, dedup ids, meta); the served log goes beside them as ``served.arrow`` in the same
shard directory. It is written before the call returns, so before the coordinator writes
the manifest: a checkpoint that exists has it. A checkpoint written before served logs
existed has no such file and loads with an empty log. With another shard count, every new
shard gets the served rows of every old shard (they are keyed by event id, not entity);
rows a shard never takes age out of its log first.

Example:
    >>> import tempfile
    >>> from streamfit.config import FeaturesConfig
    >>> from streamfit.actors.stream.checkpoint import CheckpointError, CheckpointStore
    >>> from streamfit.actors.stream.feature_shard import FeatureShard
    >>> store, shard = CheckpointStore(tempfile.mkdtemp()), FeatureShard(FeaturesConfig())
    >>> shard.served.record(np.array([5], np.uint64), np.zeros((1, len(shard.feature_names))))
    >>> _ = write_shard_checkpoint(store, 1, shard)
    >>> store.write_manifest(1, batch_id=0, position=0, num_shards=1)
    >>> fresh = FeatureShard(FeaturesConfig())
    >>> load_shard_checkpoint(store, fresh, num_shards=1), len(fresh.served)
    (True, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamfit.actors.stream.checkpoint import CheckpointError, CheckpointStore
from streamfit.actors.stream.feature_shard import FeatureShard
from streamfit.actors.stream.served_log import served_snapshot, served_table

SERVED_FILE = "served.arrow"


def write_shard_checkpoint(store: CheckpointStore, checkpoint_id: int, shard: FeatureShard) -> str:
    """Write the shard's snapshot as its part of checkpoint ``checkpoint_id``; returns the part's directory."""
    snap = shard.snapshot()
    part = store.write_shard(checkpoint_id, shard.shard_id, snap)
    store._write_table(f"{part}/{SERVED_FILE}", served_table(snap["served"]))
    return part


def _read_served(store: CheckpointStore, checkpoint_id: int, shard_id: int, n_features: int) -> dict[str, Any] | None:
    path = f"{store._part(checkpoint_id, shard_id)}/{SERVED_FILE}"
    if not store.store.exists(path):
        return None
    return served_snapshot(store._read_table(path), n_features)


def load_shard_checkpoint(store: CheckpointStore, shard: FeatureShard, num_shards: int) -> bool:
    """Restore the shard from the latest complete checkpoint (re-partitioned if needed); False if there is none."""
    snap = store.load_shard_state(shard.shard_id, num_shards, shard.cfg)
    if snap is None:
        return False
    shard.task.check(snap["meta"])  # a checkpoint of another task: refused before any of its rows is read
    manifest = store.latest_manifest() or {}
    cid, old_n = manifest.get("checkpoint_id"), manifest.get("num_shards", num_shards)
    n = len(shard.feature_names)
    mine = [shard.shard_id] if old_n == num_shards else list(range(old_n))
    parts = [p for p in (_read_served(store, cid, i, n) for i in mine) if p is not None]
    if parts:
        snap["served"] = {"ids": np.concatenate([p["ids"] for p in parts]),
                          "feats": np.vstack([p["feats"] for p in parts]),
                          "evicted": sum(p["evicted"] for p in parts)}
        if all("cats" in p for p in parts):
            snap["served"]["cats"] = np.vstack([p["cats"] for p in parts])
    shard.restore(snap)  # refuses (CheckpointError) a checkpoint of another task or categorical fields
    return True


def rewind_shard(store: CheckpointStore | None, shard: FeatureShard, batch_id: int) -> bool:
    """Bring a shard that applied batches after ``batch_id`` back to the latest complete checkpoint (taken at
    ``batch_id``, the one a restarted coordinator resumes from); True if it was rewound.

    A restarted coordinator re-reads its source from the checkpoint and numbers the batches again; a source
    that grew meanwhile (HTTP, Kafka) cuts them differently, so a shard keeping the batches it applied under
    the old numbering would skip rows of the new ones. Rewinding first makes the re-read the only truth.
    """
    if store is None or shard.last_batch_id <= batch_id:
        return False
    manifest = store.latest_manifest()
    if manifest is None or manifest["batch_id"] != batch_id:
        raise CheckpointError(f"shard {shard.shard_id} cannot rewind to batch {batch_id}: the latest checkpoint "
                              f"is at batch {None if manifest is None else manifest['batch_id']}")
    load_shard_checkpoint(store, shard, int(manifest.get("num_shards", 1)))
    return True

