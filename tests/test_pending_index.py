"""``PendingRows``' numpy id index answers as the dict (id -> newest row) it replaced, also when an id
comes back while an older row of it still waits (a duplicate the dedup memory had forgotten)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfit.actors.stream.pending import PendingRows

OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.tuples(st.integers(0, 12), st.floats(0, 100)), min_size=1, max_size=12)),
    st.tuples(st.just("take"), st.lists(st.integers(0, 14), max_size=10)),
    st.tuples(st.just("contains"), st.lists(st.integers(0, 14), max_size=10)),
    st.tuples(st.just("expire"), st.floats(-5, 110)),
    st.tuples(st.just("restore")),
), max_size=50)


class DictIndex:
    """Rows in a list and a dict from id to its newest row: the index as it was written before."""

    def __init__(self) -> None:
        self.rows: list[list] = []  # [id, time, alive]
        self.index: dict[int, int] = {}

    def add(self, pairs: list[tuple[int, float]]) -> None:
        for i, t in pairs:
            self.index[i] = len(self.rows)
            self.rows.append([i, t, True])

    def take(self, ids: list[int]) -> list[int]:
        out = []
        for i in ids:
            p = self.index.pop(i, -1)
            if p >= 0:
                self.rows[p][2] = False
                out.append(i)
        return out

    def expire(self, before: float) -> int:
        gone = [r for r in self.rows if r[2] and r[1] < before]
        for r in gone:
            self.index.pop(r[0], None)
            r[2] = False
        return len(gone)

    def restore(self) -> None:
        live = [r for r in self.rows if r[2]]
        self.rows, self.index = [], {}
        self.add([(r[0], r[1]) for r in live])


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_pending_index_answers_as_a_dict(ops):
    p, ref = PendingRows(1), DictIndex()
    for op in ops:
        if op[0] == "add":
            ids = np.array([i for i, _ in op[1]], np.uint64)
            times = np.array([t for _, t in op[1]])
            p.add(ids, ids.astype(str), np.full(len(ids), "u"), times, times.reshape(-1, 1))
            ref.add(op[1])
        elif op[0] == "take":
            found, pos = p.take(np.array(op[1], np.uint64))
            assert p.ids[pos].tolist() == ref.take(op[1])
            assert int(found.sum()) == len(pos)
        elif op[0] == "contains":
            assert p.contains(np.array(op[1], np.uint64)).tolist() == [i in ref.index for i in op[1]]
        elif op[0] == "expire":
            assert p.expire(op[1]) == ref.expire(op[1])
        else:
            back = PendingRows(1)
            back.restore(p.snapshot())
            p = back
            ref.restore()
        assert len(p) == len(ref.index)
        assert int(p.alive.sum()) == sum(r[2] for r in ref.rows)
