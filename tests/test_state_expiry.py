"""Expiry: after 200k entities pass through and only 1k stay active, a shard's state is the size of
the 1k alone (issue 14, item 3).

The shard's per-batch bookkeeping is played here on the state classes themselves, the way
``FeatureShard._apply`` calls them: window rows and label rows (``SeriesStore``, pruned at
the watermark minus the largest window, expiring keys idle longer than the idle bound),
events waiting for a label (``PendingRows``, expired after the label timeout) and the event
ids already seen (``Dedup``).
"""

from __future__ import annotations

import numpy as np

from streamfit.actors.stream.dedup import Dedup
from streamfit.actors.stream.pending import PendingRows
from streamfit.actors.stream.windows import US, SeriesStore

WINDOW_US = 60 * US
IDLE_US = 120 * US  # the idle bound: >= the largest window and the label timeout
LABEL_TIMEOUT_S = 100.0
CAPACITY = 50_000


class Shard:
    """The state one shard keeps, fed as ``FeatureShard._apply`` feeds it."""

    def __init__(self, expire: bool = True) -> None:
        self.events, self.labels = SeriesStore(2), SeriesStore(1)
        self.pending, self.dedup = PendingRows(3), Dedup(CAPACITY)
        self.expire = expire
        self.next_id = 0

    def batch(self, entities: np.ndarray, t_s: np.ndarray, label_share: float, rng: np.random.Generator) -> None:
        n = len(entities)
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.uint64) * np.uint64(0x9E3779B1)
        self.next_id += n
        assert not self.dedup.check_and_add(ids).any()
        keys, t_us = entities.astype(np.uint64), (t_s * US).astype(np.int64)
        self.events.insert(keys, t_us, rng.normal(size=(n, 2)))
        self.events.query(keys, t_us, [WINDOW_US])
        self.pending.add(ids, ids.astype(str).astype(object), entities.astype(str).astype(object), t_s,
                         rng.normal(size=(n, 3)))
        labelled = rng.random(n) < label_share
        found, _ = self.pending.take(ids[labelled])
        self.labels.insert(keys[labelled][found], t_us[labelled][found], np.ones((int(found.sum()), 1)))
        wm = int(t_us.max())
        expire = wm - IDLE_US if self.expire else None
        self.events.prune(wm - WINDOW_US, expire)
        self.labels.prune(wm - WINDOW_US, expire)
        self.pending.expire(wm / US - LABEL_TIMEOUT_S)


def run(shard: Shard, with_crowd: bool) -> Shard:
    """200k entities once each over [0, 200) s (if ``with_crowd``), then 1k entities over [200, 500) s."""
    rng = np.random.default_rng(7)
    if with_crowd:
        for b in range(10):
            ents = np.arange(b * 20_000, (b + 1) * 20_000) + 10_000
            shard.batch(ents, np.sort(rng.uniform(b * 20, (b + 1) * 20, len(ents))), 0.0, rng)
    rng = np.random.default_rng(8)
    for b in range(30):
        t = np.sort(rng.uniform(200 + b * 10, 210 + b * 10, 2_000))
        shard.batch(rng.integers(0, 1_000, len(t)), t, 0.5, rng)
    return shard


def test_state_after_expiry_is_bounded_by_the_active_entities():
    crowd, alone = run(Shard(), with_crowd=True), run(Shard(), with_crowd=False)
    assert crowd.events.n_keys() == alone.events.n_keys() == 1_000
    assert crowd.labels.n_keys() == alone.labels.n_keys() <= 1_000
    for name in ("events", "labels"):
        a, b = getattr(crowd, name), getattr(alone, name)
        assert a.nbytes == b.nbytes, name  # the rows a query can see: exactly the 1k entities'
        assert a.allocated_bytes <= 2 * b.allocated_bytes, (name, a.allocated_bytes, b.allocated_bytes)
    assert len(crowd.pending) == len(alone.pending)
    assert crowd.pending.nbytes <= 2 * alone.pending.nbytes, (crowd.pending.nbytes, alone.pending.nbytes)
    # event ids are remembered up to the capacity, however many entities sent them
    assert crowd.dedup.size <= CAPACITY and alone.dedup.size <= CAPACITY
    per_entity = (crowd.events.allocated_bytes + crowd.labels.allocated_bytes) / 1_000
    assert per_entity < 2 * (alone.events.allocated_bytes + alone.labels.allocated_bytes) / 1_000


def test_without_expiry_every_entity_ever_seen_keeps_a_row():
    """What expiry is for: prune alone keeps each key's newest row forever."""
    crowd = run(Shard(expire=False), with_crowd=True)
    assert crowd.events.n_keys() == 201_000 - 1_000 + 1_000  # the crowd's 200k plus the 1k
    assert crowd.events.nbytes > 10 * run(Shard(expire=False), with_crowd=False).events.nbytes
