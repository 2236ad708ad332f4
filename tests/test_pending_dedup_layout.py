"""``PendingRows`` (a growing arena, each batch's time order) and ``Dedup`` (chunks merged like a
binary counter) against plain-Python references, driven by Hypothesis (issue 14)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfit.actors.stream.dedup import Dedup
from streamfit.actors.stream.pending import PendingRows

PENDING_OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.floats(0, 100), min_size=1, max_size=40)),  # event times, any order
    st.tuples(st.just("take"), st.lists(st.integers(0, 400), max_size=30)),
    st.tuples(st.just("expire"), st.floats(-5, 110)),
    st.tuples(st.just("restore")),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops=PENDING_OPS)
def test_pending_rows_behave_as_a_dict_of_rows(ops):
    p, ref, next_id = PendingRows(2), {}, 0  # ref: id -> (time, feats)
    for op in ops:
        if op[0] == "add":
            ids = np.arange(next_id, next_id + len(op[1]), dtype=np.uint64)
            feats = np.column_stack([ids.astype(float), np.array(op[1]) * 2])
            p.add(ids, ids.astype(str), np.full(len(ids), "u"), np.array(op[1]), feats)
            ref.update({int(i): (t, tuple(f)) for i, t, f in zip(ids, op[1], feats)})
            next_id += len(op[1])
        elif op[0] == "take":
            found, pos = p.take(np.array(op[1], np.uint64))
            want = []
            for i in op[1]:
                want.append(i in ref)
                ref.pop(i, None)
            assert found.tolist() == want
            assert p.ids[pos].tolist() == [i for i, w in zip(op[1], want) if w]
            assert p.event_ids[pos].tolist() == [str(i) for i, w in zip(op[1], want) if w]
        elif op[0] == "expire":
            gone = [i for i, (t, _) in ref.items() if t < op[1]]
            assert p.expire(op[1]) == len(gone)
            for i in gone:
                del ref[i]
        else:
            back = PendingRows(2)
            back.restore(p.snapshot())
            p = back
        assert len(p) == len(ref) == int(p.alive.sum())
    snap = p.snapshot()
    assert snap["ids"].tolist() == sorted(ref)  # arrival order = id order here
    assert [tuple(f) for f in snap["feats"]] == [ref[i][1] for i in sorted(ref)]


def test_pending_expire_reads_only_the_batches_that_expire():
    p = PendingRows(1)
    for b in range(200):
        ids = np.arange(b * 50, (b + 1) * 50, dtype=np.uint64)
        p.add(ids, ids.astype(str), ids.astype(str), b + np.linspace(0, 0.9, 50)[::-1], np.zeros((50, 1)))
    assert p.expire(100.0) == 5000 and len(p) == 5000
    open_batches = int((p._seg_head < p._seg_end).sum())
    assert open_batches == 100  # the expired batches are closed: later calls skip them
    assert p.expire(100.0) == 0


class GenerationsReference:
    """Two generations of plain sets, as Dedup documents them."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.old, self.new = capacity, set(), set()

    def check_and_add(self, ids: list[int]) -> list[bool]:
        out, seen = [], set()
        for i in ids:
            out.append(i in self.old or i in self.new or i in seen)
            seen.add(i)
        self.new |= seen - self.old
        if len(self.new) >= max(self.capacity // 2, 1):
            self.old, self.new = self.new, set()
        return out


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 60), batches=st.lists(st.lists(st.integers(0, 80), max_size=25), max_size=40),
       cut=st.integers(0, 40))
def test_dedup_answers_as_two_generations_of_sets(capacity, batches, cut):
    d, ref = Dedup(capacity), GenerationsReference(capacity)
    for n, b in enumerate(batches):
        if n == cut:
            back = Dedup(capacity)
            back.restore(d.snapshot())
            d = back
        assert d.check_and_add(np.array(b, np.uint64)).tolist() == ref.check_and_add(b)
        assert set(d.old.tolist()) == ref.old and {int(x) for c in d.new for x in c} == ref.new


def test_dedup_newer_generation_stays_a_few_chunks():
    d = Dedup(capacity=2_000_000)
    rng = np.random.default_rng(0)
    for _ in range(300):
        d.check_and_add(rng.integers(0, 2**63, 1_000).astype(np.uint64))
        assert len(d.new) <= 12  # O(log) chunks, each checked per batch
    assert d.size == 300_000 and all((np.diff(c.astype(np.float64)) > 0).all() for c in d.new)
