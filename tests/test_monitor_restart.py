"""What survives a monitor restart, without Ray: a Monitor whose state was saved with MonitorState and loaded
into a fresh one measures against the same reference, over the same drift window, with the same alarm and
cooldown, and answers like the monitor that never stopped; saves are rate-bounded; a damaged state file is
reported and skipped."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamfit.config import MonitorConfig
from streamfit.actors.monitoring import Monitor, MonitorState
from streamfit.actors.monitoring.monitor_state import MonitorStateError
from test_monitor_core import FEATURES, Registry, reference, rows

CFG = MonitorConfig(window_rows=1000, min_rows=200, psi_alarm=0.5, alarm_cooldown_s=30)


def monitor() -> Monitor:
    return Monitor(CFG, Registry(1, reference()), FEATURES, ["x0"])


def batches() -> list[tuple[Any, float]]:
    """Labelled rows in uneven batches; x0 shifts half-way (the alarm rises), with times one second apart."""
    out, start = [], 0
    for i, n in enumerate([120, 300, 80, 260, 150, 400, 90, 310, 200, 170]):
        out.append((rows(n, seed=i, shift=2.5 if i >= 5 else 0.0, start=start), 100.0 + 5 * i))
        start += n
    return out


def step(mon: Monitor, frame: Any, now: float) -> tuple:
    """One tick: rows observed, then a sample with a trainer attached; what an observer sees."""
    mon.observe_rows(frame, now)
    sample = mon.sample(now, trainer={"refits": []})
    if sample.refit_reason is not None:
        mon.alarm.answered(now, sample.drift["alarm"], None)
    return sample.refit_reason, sample.drift, mon.stream.live_accuracy()


def same(a: Monitor, b: Monitor) -> None:
    sa, sb = a.stream.snapshot(), b.stream.snapshot()
    wa, wb = sa.pop("window"), sb.pop("window")
    assert list(wa) == list(wb)
    for c in wa:
        np.testing.assert_array_equal(wa[c], wb[c], err_msg=c)
    oa, ob = sa.pop("outcomes"), sb.pop("outcomes")
    assert list(oa) == list(ob) and all(np.array_equal(oa[v], ob[v]) for v in oa)
    assert sa == sb and a.alarm.snapshot() == b.alarm.snapshot() and a.rows_observed == b.rows_observed
    assert a.drift() == b.drift() and a.stream.live_accuracy() == b.stream.live_accuracy()


def test_a_restarted_monitor_measures_like_one_that_never_stopped(tmp_path):
    feed = batches()
    for cut in (3, 6, 8):
        never, first = monitor(), monitor()
        state = MonitorState(str(tmp_path / f"cut{cut}"))
        for frame, now in feed[:cut]:
            step(never, frame, now)
            step(first, frame, now)
        assert state.save(first, feed[cut - 1][1], force=True)
        again = monitor()
        assert MonitorState(state.store.uri).load(again)
        assert again.stream.booster is not None  # loaded from the registry
        same(again, never)
        for frame, now in feed[cut:]:
            want = step(never, frame, now)
            assert step(again, frame, now) == want
        same(again, never)
    assert never.alarm.requests and never.drift()["alarm"]  # the alarm rose and asked, cooldown included


def test_a_monitor_without_saved_state_starts_empty():
    """The failure this fixes: a monitor built again lost its window, alarm and cooldown."""
    never = monitor()
    for frame, now in batches()[:7]:
        step(never, frame, now)
    again = monitor()
    assert never.drift()["rows"] > 0 and never.alarm.last_request is not None
    assert again.drift()["rows"] == 0 and again.alarm.last_request is None


def test_saves_are_rate_bounded_and_only_when_something_changed(tmp_path):
    mon, state = monitor(), MonitorState(str(tmp_path), every_s=10.0)
    frame, now = batches()[0]
    mon.observe_rows(frame, now)
    assert state.save(mon, 100.0)
    assert not state.save(mon, 200.0)  # nothing changed
    mon.observe_rows(rows(50, seed=99), 101.0)
    assert not state.save(mon, 105.0)  # changed, but within 10 s of the last write
    assert state.save(mon, 110.0) and state.stats()["writes"] == 2


def test_a_damaged_state_is_reported_and_the_monitor_starts_empty(tmp_path):
    mon, state = monitor(), MonitorState(str(tmp_path))
    for frame, now in batches()[:4]:
        step(mon, frame, now)
    assert state.save(mon, 200.0, force=True)
    path = tmp_path / "state.parquet"
    path.write_bytes(path.read_bytes()[:100])
    again, loader = monitor(), MonitorState(str(tmp_path))
    assert not loader.load(again)
    assert str(path) in loader.stats()["damaged"] and again.stream.frame().empty


def test_a_failed_write_is_counted_and_the_monitor_goes_on(tmp_path):
    mon, state = monitor(), MonitorState(str(tmp_path))
    mon.observe_rows(rows(100, seed=1), 100.0)

    def down(path: str, data: bytes) -> None:
        raise MonitorStateError("storage down")

    put, state.store.put = state.store.put, down
    assert not state.save(mon, 100.0, force=True) and state.stats()["write_failures"] == 1
    state.store.put = put
    assert state.save(mon, 101.0, force=True)
