"""The benchmarks' load generators without Ray: wrk's script and report, a real wrk run against a
local server, the paced caller; and the raw events the request load sends."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from streamfit.config import config_from_dict
from streamfit.schema import validate
from streamfit.scripts.load import RequestLoop, StreamEvents
from streamfit.scripts.loadgen import (SAMPLE_REPORT, CpuMeter, PacedCalls, Wrk, lua_script, niceness, parse_wrk,
                                       processes, wrk_binary)


def _wait(cond, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_report_parsing_converts_units_and_counts_failures():
    r = parse_wrk(SAMPLE_REPORT)
    assert r.percentiles_ms == {"50": 0.85, "75": 1.4, "90": pytest.approx(1.8), "99": 3000.0}
    assert r.seconds == 10.0 and r.wrk_rps == 10000.0
    assert r.failed == 17 and r.rps == (100000 - 5) / 10.0
    quiet = parse_wrk(SAMPLE_REPORT.replace("  Socket errors: connect 0, read 0, write 0, timeout 12\n", "")
                      .replace("  Non-2xx or 3xx responses: 5\n", ""))
    assert quiet.failed == 0 and quiet.socket_errors == {}
    with pytest.raises(ValueError, match="no request count"):
        parse_wrk("unable to connect to 127.0.0.1:9 Connection refused")


def test_lua_literals_survive_closing_brackets_in_bodies():
    script = lua_script([{"a": "x]]y"}, {"b": "]=]"}])
    assert '[=[{"a": "x]]y"}]=]' in script and '[[{"b": "]=]"}]]' in script


class _Server(ThreadingHTTPServer):
    """Answers POST with 200, or 503 when the body holds "bad"; remembers the bodies."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(h) -> None:
                body = h.rfile.read(int(h.headers["Content-Length"])).decode()
                with self.lock:
                    self.bodies.append(body)
                h.send_response(503 if "bad" in body else 200)
                h.send_header("Content-Length", "2")
                h.end_headers()
                h.wfile.write(b"{}")

            def log_message(h, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_wrk_rotates_the_bodies_and_counts_non_2xx(tmp_path):
    wrk_binary()  # the Debian package; `make bench` installs it
    bodies = [{"n": 1, "bad": True}, {"n": 2}, {"n": 3}]
    server = _Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = Wrk(bodies, tmp_path).start(f"http://127.0.0.1:{server.server_address[1]}/predict", 1, 600)
        # One connection: once the server has a fifth request, wrk has had the first four answers.
        seen = _wait(lambda: len(server.bodies) >= 5 and len(set(server.bodies)) == 3)
        result = run.stop()
    finally:
        server.shutdown()
    assert seen, server.bodies
    assert {json.dumps(b) for b in bodies} == set(server.bodies)
    assert 4 <= result.requests <= len(server.bodies)
    assert 1 <= result.non_2xx == result.failed < result.requests
    assert result.p50_ms is not None and result.p99_ms >= result.p50_ms


def test_wrk_refuses_a_remote_url(tmp_path):
    with pytest.raises(ValueError, match="loopback only"):
        Wrk([{}], tmp_path).start("http://example.com/predict", 1, 1)


def _future(ok: bool | None) -> Future:
    fut: Future = Future()
    if ok is not None:
        fut.set_result(1) if ok else fut.set_exception(RuntimeError("lost"))
    return fut


def test_paced_calls_count_answers_and_failures():
    pacer = PacedCalls(lambda i: _future(i % 5 != 0), rate=500).start()
    assert _wait(lambda: pacer.sent >= 20)
    figures = pacer.stop()
    assert figures["answered"] > 0 and figures["failed"] > 0 and figures["skipped"] == 0
    assert figures["answered"] + figures["failed"] == figures["sent"]  # every call answered before stop returns


def test_paced_calls_skip_rather_than_queue_past_the_bound():
    never = []
    pacer = PacedCalls(lambda i: never.append(_future(None)) or never[-1], rate=1000, max_in_flight=8,
                       drain_s=0.1).start()
    assert _wait(lambda: pacer.skipped > 0)
    figures = pacer.stop()
    assert figures["sent"] == 8 and figures["answered"] == 0
    never[0].set_result(1)  # an answer after the stop is still counted, and never below zero in flight
    assert pacer.done == 1 and pacer.in_flight == 7


def test_cpu_meter_charges_work_to_the_process_that_did_it():
    mine = f"(pid {os.getpid()})"
    pattern = open(f"/proc/{os.getpid()}/cmdline", "rb").read().split(b"\0")[0].decode()
    assert any(k.endswith(mine) for k in processes((pattern,)))
    assert niceness(os.getpid()) == os.nice(0)
    meter = CpuMeter((pattern,)).start()
    t0 = time.process_time()
    while time.process_time() < t0 + 0.2:  # CPU time, not wall time: the same on a loaded machine
        pass
    figures = meter.per_request(100)
    assert [v for k, v in figures.items() if k.endswith(mine)][0] >= 1.8  # 0.2 s over 100 requests, 10 ms ticks
    assert figures["load generator"] >= 0


def test_stream_events_are_the_next_valid_events_as_a_client_sends_them():
    cfg = config_from_dict({"stream": {"batch_size": 100, "bad_row_rate": 0.2}})
    events = StreamEvents(cfg, keep=150)
    events.advance_to(3)
    sent = [events() for _ in range(150)]
    ids = [int(e["event_id"][2:]) for e in sent]
    assert ids == sorted(ids) and ids[0] >= 300 and len(set(ids)) == 150  # from position 3 on, in order
    assert all(set(e) == {"entity", "event_time", "event_id", "x0", "x1", "x2"} for e in sent)
    frame = pd.DataFrame([{**e, "kind": "event"} for e in sent])
    assert (validate(frame, cfg.features)[1] == "").all()  # the bad rows the stream injects are not sent
    assert RequestLoop.body(sent[0]) == {"event": sent[0]}
    assert RequestLoop.body(({"a": 1.0}, "ev1", None)) == {"features": {"a": 1.0}, "event_id": "ev1"}


def test_router_lookups_group_events_per_shard_as_the_router_does():
    from types import SimpleNamespace

    import numpy as np

    from streamfit.actors.stream import SyntheticSource
    from streamfit.scripts.bench import RouterLookups, ingest_config

    calls = []

    async def lookup(events, record):  # the Router's call shape: schema.EventArrays
        calls.append((len(events), record, np.isnan(events.event_time).all(), (events.event_id == "").all()))
        n = len(events)
        return SimpleNamespace(features=np.zeros((n, 1)), feature_names=["f"], times=np.zeros(n), as_of=1.0,
                               reasons=[""] * n)

    shards = [SimpleNamespace(lookup=SimpleNamespace(remote=lookup)) for _ in range(2)]
    cfg = ingest_config(50, 200)
    batch, _ = SyntheticSource(cfg.stream, cfg.features).read(0)
    lookups = RouterLookups(cfg, shards, batch, n=100)
    answers = [f.result(timeout=60) for f in [lookups.send(i) for i in range(40)]]
    stats = lookups.close()
    assert all(a.as_of.tolist() == [1.0] for a in answers)
    assert stats["requests"] == 40 and stats["events"] == 40 == sum(n for n, *_ in calls)
    assert stats["calls"] == len(calls) <= 40
    assert all(not record and now and no_id for _, record, now, no_id in calls)  # "now", nothing recorded
