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


def shard_of(entities: np.ndarray | pd.Series, num_shards: int) -> np.ndarray:
    """Owning shard of each entity key: a stable (unsalted) hash modulo the shard count."""
    # pandas' hash_array uses a fixed SipHash key, so the result is identical in every process,
    # unlike Python's salted hash().
    values = np.asarray(entities, dtype=object).astype(str).astype(object)
    hashed = pd.util.hash_array(values, categorize=True)
    return (hashed % np.uint64(num_shards)).astype(np.int64)
