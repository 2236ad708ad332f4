"""Unit tests of serve/lookup.py: micro-batched shard lookups, without Ray."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from streamfit.schema import EventArrays, shard_of
from streamfit.serve.lookup import EventRows, LookupBatcher, ShardUnavailable

FIELDS = ["x0", "x1"]
NAMES = ["x0", "x1", "count_1m"]
ENTITIES = np.array([f"u{i}" for i in range(40)], dtype=object)
OWNER = dict(zip(ENTITIES.tolist(), shard_of(ENTITIES, 2).tolist()))
ON = {s: [e for e, o in OWNER.items() if o == s] for s in (0, 1)}


class FakeShards:
    """Answers each event with (x0, x1, shard) and a reason for x0 < 0; records every call."""

    def __init__(self, stuck: set[int] = frozenset(), broken: set[int] = frozenset(), busy: float | None = None) -> None:
        self.calls: list[tuple[int, EventArrays, bool]] = []
        self.stuck, self.broken, self.busy = stuck, broken, busy
        self.release = asyncio.Event()

    async def __call__(self, shard: int, events: EventArrays, record: bool) -> SimpleNamespace:
        self.calls.append((shard, events, record))
        if shard in self.broken:
            raise RuntimeError("actor died")
        if shard in self.stuck:
            await self.release.wait()
        assert events.fields == FIELDS
        x = events.x
        feats = np.column_stack([x, np.full(len(events), float(shard))])
        reasons = ["out_of_range:x0" if v < 0 else "" for v in x[:, 0]]
        answer = SimpleNamespace(features=feats, feature_names=NAMES, times=events.event_time,
                                 as_of=100.0 + shard, reasons=reasons)
        if self.busy is not None:  # a shard that says how busy it is applying batches (LookupResult.busy)
            answer.busy = self.busy
        return answer


def rows(entities: list[str], x0: list[float] | None = None, ids: list[str] | None = None) -> EventRows:
    x0 = x0 if x0 is not None else list(range(len(entities)))
    events = [{"entity": e, "event_time": 10.0 + i, "x0": float(v), "x1": None,
               **({"event_id": ids[i]} if ids else {})} for i, (e, v) in enumerate(zip(entities, x0))]
    return EventRows.of(events, FIELDS)


def run(coro):
    return asyncio.run(coro)


def test_event_rows_of_fills_missing_values_and_builds_the_lookup_arrays():
    r = EventRows.of([{"entity": "a", "x0": 1.5}, {"entity": "b", "event_time": 3.0, "x1": 2.0, "event_id": "e"}],
                     FIELDS)
    ev = r.arrays()
    assert list(ev.columns()) == ["entity", "event_time", "event_id", "x0", "x1"] and ev.fields == FIELDS
    assert ev.entity.tolist() == ["a", "b"] and ev.x.dtype == np.float64 and len(ev) == 2
    assert np.isnan(ev.event_time[0]) and ev.event_time[1] == 3.0
    assert np.isnan(ev.columns()["x1"][0]) and np.isnan(ev.columns()["x0"][1])
    assert ev.event_id.tolist() == ["", "e"]
    assert r.arrays(record=False).event_id.tolist() == ["", ""]
    both = EventRows.concat([r.take(np.array([1])), r.take(np.array([0]))])
    assert both.entity == ["b", "a"] and both.event_id == ["e", ""]


def test_concurrent_requests_make_one_call_per_shard():
    shards = FakeShards()
    b = LookupBatcher(shards, num_shards=2, wait_s=0.0)

    async def main():
        return await asyncio.gather(*(b.lookup(rows([ON[0][i], ON[1][i]])) for i in range(5)))

    answers = run(main())
    assert sorted(s for s, _, _ in shards.calls) == [0, 1]
    assert all(len(df) == 5 for _, df, _ in shards.calls)
    assert len(answers) == 5 and b.stats()["calls"] == 2 and b.stats()["requests"] == 5


def test_each_request_gets_its_own_rows_back_in_its_order():
    shards = FakeShards()
    b = LookupBatcher(shards, num_shards=2, wait_s=0.0)
    reqs = [[ON[1][0], ON[0][0], ON[1][1]], [ON[0][1]], [ON[0][2], ON[1][2], ON[0][3], ON[1][3]]]
    x0s = [[1.0, 2.0, -3.0], [4.0], [5.0, 6.0, 7.0, 8.0]]

    async def main():
        return await asyncio.gather(*(b.lookup(rows(e, x)) for e, x in zip(reqs, x0s)))

    for ents, x0, a in zip(reqs, x0s, run(main())):
        assert a.features[:, 0].tolist() == x0  # each row is its own event's answer
        assert a.features[:, 2].tolist() == [float(OWNER[e]) for e in ents]  # ... from the shard that owns it
        assert a.as_of.tolist() == [100.0 + OWNER[e] for e in ents]
        assert a.times.tolist() == [10.0 + i for i in range(len(ents))]
        assert a.reasons == ["out_of_range:x0" if v < 0 else "" for v in x0]
        assert a.feature_names == NAMES


def test_a_tick_waits_for_more_requests_and_a_later_request_makes_a_new_call():
    shards = FakeShards()
    b = LookupBatcher(shards, num_shards=2, wait_s=0.05)

    async def main():
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(b.lookup(rows([ON[0][0]])))
        await asyncio.sleep(0)  # the first request is queued; the second joins it within the tick
        queued_at = loop.time()
        await b.lookup(rows([ON[0][1]]))
        waited = loop.time() - queued_at
        await first
        await b.lookup(rows([ON[0][2]]))  # after the flush: a call of its own
        return waited

    waited = run(main())
    assert [len(df) for _, df, _ in shards.calls] == [2, 1]
    assert waited >= 0.04  # the call was made at the tick, not at once


def test_max_batch_sends_at_once_without_waiting_for_the_tick():
    shards = FakeShards()
    b = LookupBatcher(shards, num_shards=2, wait_s=3600.0, max_batch=4)

    async def main():
        reqs = [b.lookup(rows(ON[0][2 * i:2 * i + 2])) for i in range(2)]
        return await asyncio.wait_for(asyncio.gather(*reqs), timeout=60)  # an hour's tick never comes

    answers = run(main())
    assert [len(df) for _, df, _ in shards.calls] == [4]
    assert [len(a.reasons) for a in answers] == [2, 2]
    assert b.stats()["full_batches"] == 1


def test_a_stuck_shard_answers_unavailable_within_the_timeout_and_the_other_shard_answers():
    shards = FakeShards(stuck={1})
    b = LookupBatcher(shards, num_shards=2, wait_s=0.0, timeout_s=0.05)

    async def main():
        out = await asyncio.wait_for(asyncio.gather(b.lookup(rows([ON[1][0]])), b.lookup(rows([ON[0][0]])),
                                                    b.lookup(rows([ON[0][1], ON[1][1]])),
                                                    return_exceptions=True), timeout=60)
        await asyncio.wait_for(asyncio.gather(*b._running), timeout=60)  # the stuck call's own timeout ends it
        return out

    stuck, fine, mixed = run(main())
    assert isinstance(stuck, ShardUnavailable) and stuck.shard == 1 and "retry" in str(stuck)
    assert isinstance(mixed, ShardUnavailable)  # a request is answered whole or not at all
    assert fine.reasons == [""]
    st = b.stats()
    assert st["timeouts"] == 1 and st["unavailable"] == 2 and st["requests"] == 3


def test_a_failing_shard_call_is_unavailable_not_an_error():
    b = LookupBatcher(FakeShards(broken={0}), num_shards=2, wait_s=0.0)
    with pytest.raises(ShardUnavailable, match="RuntimeError"):
        run(b.lookup(rows([ON[0][0]])))
    assert run(b.lookup(rows([ON[1][0]]))).reasons == [""]
    assert b.stats()["errors"] == 1 and b.stats()["unavailable"] == 1


def test_an_answer_of_the_wrong_length_is_unavailable():
    async def short(shard, events, record):
        return SimpleNamespace(features=np.zeros((0, 3)), feature_names=NAMES, times=np.zeros(0), as_of=1.0,
                               reasons=[])

    with pytest.raises(ShardUnavailable):
        run(LookupBatcher(short, num_shards=1, wait_s=0.0).lookup(rows(["a"])))


def test_record_is_asked_only_with_ids_of_requests_that_record():
    shards = FakeShards()
    b = LookupBatcher(shards, num_shards=1, wait_s=0.0)

    async def main():
        await asyncio.gather(b.lookup(rows(["a"], ids=["e1"]), record=True),
                             b.lookup(rows(["b"], ids=["e2"]), record=False))
        await b.lookup(rows(["c"], ids=["e3"]), record=False)

    run(main())
    (_, both, rec1), (_, alone, rec2) = shards.calls
    assert rec1 is True and both.event_id.tolist() == ["e1", ""]  # e2 did not ask to be recorded
    assert rec2 is False and alone.event_id.tolist() == [""]


def test_a_cancelled_request_does_not_disturb_the_others():
    shards = FakeShards(stuck={0})
    b = LookupBatcher(shards, num_shards=1, wait_s=0.0, timeout_s=60)

    async def main():
        gone = asyncio.ensure_future(b.lookup(rows(["a"])))
        kept = asyncio.ensure_future(b.lookup(rows(["b"])))
        while not shards.calls:
            await asyncio.sleep(0.001)
        gone.cancel()
        shards.release.set()
        return await asyncio.wait_for(kept, timeout=60)

    assert run(main()).features[:, 0].tolist() == [0.0]


def test_events_wait_while_a_call_is_under_way_and_go_together_when_it_ends():
    shards = FakeShards(stuck={0})
    b = LookupBatcher(shards, num_shards=1, wait_s=0.0, timeout_s=60)

    async def main():
        first = asyncio.ensure_future(b.lookup(rows(["a"])))
        while not shards.calls:
            await asyncio.sleep(0.001)
        later = [asyncio.ensure_future(b.lookup(rows([e, e]))) for e in ("b", "c", "d")]
        await asyncio.sleep(0.05)  # many ticks: nothing more is sent while the call is under way
        sent_meanwhile = len(shards.calls)
        shards.release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), timeout=60)
        return sent_meanwhile

    assert run(main()) == 1
    assert [len(df) for _, df, _ in shards.calls] == [1, 6]


def test_a_call_takes_requests_up_to_max_batch_and_the_rest_goes_next():
    shards = FakeShards()
    b = LookupBatcher(shards, num_shards=1, wait_s=0.0, max_batch=4)

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(b.lookup(rows(["a", "b", "c"])) for _ in range(3))), 60)

    assert all(a.reasons == ["", "", ""] for a in run(main()))
    # 3 + 3 events reach 4: sent at once; the third request waits for that call (a request is never split).
    assert [len(df) for _, df, _ in shards.calls] == [6, 3]


def test_a_request_queued_behind_a_stuck_call_fails_within_its_own_timeout():
    shards = FakeShards(stuck={0})
    b = LookupBatcher(shards, num_shards=1, wait_s=0.0, timeout_s=0.2)

    async def main():
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(b.lookup(rows(["a"])))
        while not shards.calls:
            await asyncio.sleep(0.001)
        started = loop.time()
        with pytest.raises(ShardUnavailable):
            await asyncio.wait_for(b.lookup(rows(["b"])), timeout=60)
        took = loop.time() - started
        with pytest.raises(ShardUnavailable):
            await first
        await asyncio.wait_for(asyncio.gather(*b._running), timeout=60)
        return took

    took = run(main())
    assert took < 0.2 + 0.05 + 10  # its own deadline (plus the backstop), not the stuck call's and then its own
    assert b.stats()["unavailable"] == 2


def test_the_gap_after_a_call_grows_with_how_busy_the_shard_says_it_is():
    for busy, gap in ((None, 0.0), (0.0, 0.0), (0.25, 0.02), (0.5, 0.04), (1.0, 0.04), (float("nan"), 0.0)):
        shards = FakeShards(busy=busy)
        b = LookupBatcher(shards, num_shards=2, wait_s=0.0, max_gap_s=0.04)
        run(b.lookup(rows([ON[0][0]])))
        assert b.gap_s(0) == pytest.approx(gap) and b.gap_s(1) == 0.0  # shard 1 has not answered yet


def test_a_busy_shard_gets_no_call_before_its_gap_ends_unless_max_batch_events_wait():
    shards = FakeShards(busy=1.0)
    b = LookupBatcher(shards, num_shards=1, wait_s=0.0, max_batch=4, max_gap_s=3600.0)  # a gap that never ends

    async def main():
        await asyncio.wait_for(b.lookup(rows(["a"])), timeout=60)  # the shard answers: busy
        one = asyncio.ensure_future(b.lookup(rows(["b"])))
        for _ in range(20):
            await asyncio.sleep(0)  # many turns of the loop: the event waits for the gap
        held = len(shards.calls)
        three = b.lookup(rows(["c", "d", "e"]))  # 1 + 3 events reach max_batch: sent at once, gap or not
        return held, await asyncio.wait_for(asyncio.gather(one, three), timeout=60)

    held, (one, three) = run(main())
    assert held == 1 and [len(ev) for _, ev, _ in shards.calls] == [1, 4]
    assert one.reasons == [""] and three.reasons == ["", "", ""]
    assert b.stats()["full_batches"] == 1


def test_events_queued_behind_a_call_to_a_busy_shard_wait_for_the_gap_then_go_together():
    shards = FakeShards(stuck={0}, busy=1.0)
    b = LookupBatcher(shards, num_shards=1, wait_s=0.0, timeout_s=60, max_gap_s=0.01)

    async def main():
        first = asyncio.ensure_future(b.lookup(rows(["a"])))
        while not shards.calls:
            await asyncio.sleep(0.001)
        later = [asyncio.ensure_future(b.lookup(rows([e]))) for e in ("b", "c")]
        await asyncio.sleep(0)
        shards.stuck = set()  # the next call answers at once
        shards.release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), timeout=60)

    run(main())
    assert [len(ev) for _, ev, _ in shards.calls] == [1, 2]
    assert b.stats()["spaced"] == 1  # the second call waited for the busy shard's gap
