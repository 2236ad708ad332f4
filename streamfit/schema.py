"""Event vocabulary shared by every plane: column names, batch validation and the stable partition hash.

An event batch is a pandas DataFrame with one row per event or label:

- ``kind``: ``"event"`` (features) or ``"label"`` (labels the event named by ``event_id``)
- ``event_id``: unique id of the event (a label names the event it labels)
- ``entity``: the partition key
- ``event_time``: seconds since the epoch (float)
- one column per numeric field, and ``label`` (0/1, set on label rows)

Example:
    >>> import numpy as np
    >>> shard_of(np.array(["a", "b", "a"], dtype=object), 4).tolist() == shard_of(np.array(["a", "b", "a"], dtype=object), 4).tolist()
    True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KIND, EVENT_ID, ENTITY, EVENT_TIME, LABEL = "kind", "event_id", "entity", "event_time", "label"
EVENT, LABEL_KIND = "event", "label"
BASE_COLUMNS = [KIND, EVENT_ID, ENTITY, EVENT_TIME]
PARTITION = "_partition"  # optional: the source partition a row came from (per-partition watermarks)


def hash_keys(values: np.ndarray | pd.Series) -> np.ndarray:
    """Stable 64-bit hash of each key's string form (the same in every process and run)."""
    # pandas' hash_array uses a fixed SipHash key, unlike Python's salted hash(); it hashes
    # non-string objects by their str() form, so 7 and "7" land on the same shard.
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=False)


def shard_of_hash(hashes: np.ndarray, num_shards: int) -> np.ndarray:
    """Owning shard of already-hashed keys."""
    return (np.asarray(hashes, dtype=np.uint64) % np.uint64(num_shards)).astype(np.int64)


def shard_of(entities: np.ndarray | pd.Series, num_shards: int) -> np.ndarray:
    """Owning shard of each entity key: a stable (unsalted) hash modulo the shard count."""
    return shard_of_hash(hash_keys(entities), num_shards)
