"""The benchmarks' load generators — wrk for HTTP (a Debian package, in its own process) and a paced
caller of the shard actors' lookups — and ``CpuMeter``: the CPU each loaded process spends per request.

``Wrk(bodies, workdir)`` writes a Lua script that POSTs JSON bodies (each wrk thread rotates through
the set, from its own offset), runs ``wrk --latency`` against a loopback URL at a given concurrency
and duration, and parses wrk's report into a ``WrkResult``: requests/s, latency percentiles,
non-2xx responses and socket errors. A compiled load generator does not saturate before the server
does, as a Python loop on the same two cores would.

Example (parsing wrk's report):
    >>> r = parse_wrk(SAMPLE_REPORT)
    >>> r.requests, r.non_2xx, r.socket_errors["timeout"], r.failed, r.p99_ms, round(r.rps, 1)
    (100000, 5, 12, 17, 3000.0, 9999.5)
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import numpy as np

SAMPLE_REPORT = """Running 10s test @ http://127.0.0.1:8000/predict
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   90.00%
    Req/Sec     5.00k   300.00     6.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.40ms
     90%    1.80ms
     99%    3.00s
  100000 requests in 10.00s, 20.00MB read
  Socket errors: connect 0, read 0, write 0, timeout 12
  Non-2xx or 3xx responses: 5
Requests/sec:  10000.00
Transfer/sec:      2.00MB
"""

_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    """wrk's time with its unit ('850.00us', '1.40ms', '10.00s', '1.00m') in seconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a wrk time: {text!r}")
    return float(m.group(1)) * _UNITS_S[m.group(2)]


@dataclass
class WrkResult:
    """One wrk run: ``rps`` counts answered 2xx/3xx requests only (wrk's own figure is ``wrk_rps``)."""

    requests: int
    seconds: float
    wrk_rps: float
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    percentiles_ms: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Non-2xx responses plus socket errors (connect, read, write, timeout)."""
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float | None:
        """Median latency."""
        return self.percentiles_ms.get("50")

    @property
    def p99_ms(self) -> float | None:
        """99th percentile latency."""
        return self.percentiles_ms.get("99")

    def figures(self) -> dict[str, Any]:
        """Plain data for the bench's JSON."""
        return {**asdict(self), "rps": self.rps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "failed": self.failed}


def parse_wrk(report: str) -> WrkResult:
    """wrk's text report (run with ``--latency``) as figures."""
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", report, re.M)
    if not m:
        raise ValueError(f"no request count in wrk's report:\n{report[-2000:]}")
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", report, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", report)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    pct = {p: _seconds(t) * 1000 for p, t in re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", report, re.M)}
    return WrkResult(
        requests=int(m.group(1)), seconds=_seconds(m.group(2)), wrk_rps=float(rps.group(1)) if rps else 0.0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups())))
        if errors else {}, percentiles_ms=pct)


def _long_string(text: str) -> str:
    """``text`` as a Lua long-bracket literal whose level never occurs inside it."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def lua_script(bodies: list[dict[str, Any]]) -> str:
    """A wrk script POSTing the JSON ``bodies`` in turn; each thread starts at its own offset."""
    literals = ",\n".join(_long_string(json.dumps(b)) for b in bodies)
    return f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{literals}
}}
local threads = 0
function setup(thread)
  thread:set("offset", threads)
  threads = threads + 1
end
local requests, i = {{}}, 0
function init(args)
  for k, body in ipairs(bodies) do requests[k] = wrk.format(nil, nil, nil, body) end
  i = (offset or 0) * 7919
end
function request()
  i = i + 1
  return requests[(i % #requests) + 1]
end
"""


def wrk_binary() -> str:
    """Path of the wrk executable, or an error saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is missing: `make bench` installs it as root (apt-get install wrk), "
                           "or install Debian's wrk package")
    return path


class Wrk:
    """wrk against loopback URLs with one set of request bodies (a Lua script in ``workdir``)."""

    def __init__(self, bodies: list[dict[str, Any]], workdir: Path, name: str = "bodies") -> None:
        self.binary = wrk_binary()
        self.script = Path(workdir) / f"wrk_{name}.lua"
        self.script.write_text(lua_script(bodies))

    def start(self, url: str, concurrency: int, duration_s: float, timeout_s: float = 10.0) -> "WrkRun":
        """Start wrk in its own process (two threads at most: the machine's other core serves)."""
        host = urlparse(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"refusing to load {host}: loopback only")
        cmd = [self.binary, "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{duration_s:g}s",
               "--timeout", f"{timeout_s:g}s", "--latency", "-s", str(self.script), url]
        return WrkRun(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    def run(self, url: str, concurrency: int, duration_s: float) -> WrkResult:
        """Run wrk to the end and return its figures."""
        return self.start(url, concurrency, duration_s).result()


@dataclass
class WrkRun:
    """A wrk process under way."""

    proc: subprocess.Popen

    def result(self, timeout_s: float = 600.0) -> WrkResult:
        """Wait for wrk to end and parse its report."""
        out, err = self.proc.communicate(timeout=timeout_s)
        if self.proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({self.proc.returncode}): {err[-2000:]}")
        return parse_wrk(out)

    def stop(self) -> WrkResult:
        """Interrupt wrk (it reports what it measured so far, as on Ctrl-C) and parse its report."""
        self.proc.send_signal(signal.SIGINT)
        return self.result(timeout_s=30)


class PacedCalls:
    """Calls ``send(i)`` about ``rate`` times a second from a background thread; ``send`` returns a
    ``concurrent.futures.Future`` (a Ray ObjectRef's ``.future()``), timed when it completes, with no
    polling. At most ``max_in_flight`` calls are outstanding: past that, calls are skipped and counted,
    not queued. On ``stop`` the calls in flight are waited for (at most ``drain_s``)."""

    def __init__(self, send: Callable[[int], Future], rate: float, max_in_flight: int = 256,
                 drain_s: float = 30.0) -> None:
        self.send, self.rate, self.max_in_flight, self.drain_s = send, rate, max_in_flight, drain_s
        self.sent = self.done = self.skipped = self.failed = self.in_flight = 0
        self.latencies_ms: list[float] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamfit-paced", daemon=True)
        self.seconds = 0.0

    def _run(self) -> None:
        started = next_at = time.perf_counter()
        while not self._stop.is_set():
            now = time.perf_counter()
            while next_at <= now:
                with self._cond:
                    full = self.in_flight >= self.max_in_flight
                    self.in_flight += not full
                if full:
                    self.skipped += 1
                else:
                    self.send(self.sent + self.skipped).add_done_callback(partial(self._answered, now))
                    self.sent += 1
                next_at += 1.0 / self.rate
            self._stop.wait(max(0.0, next_at - time.perf_counter()))
        with self._cond:  # calls in flight still count
            self._cond.wait_for(lambda: self.in_flight == 0, timeout=self.drain_s)
        self.seconds = time.perf_counter() - started

    def _answered(self, sent_at: float, fut: Future) -> None:
        ok = fut.exception() is None
        with self._cond:
            self.latencies_ms.append((time.perf_counter() - sent_at) * 1000)
            self.done += ok
            self.failed += not ok
            self.in_flight -= 1
            self._cond.notify_all()

    def start(self) -> "PacedCalls":
        """Start calling in the background."""
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """Stop and return the calls' figures (latency from sending to the answer)."""
        self._stop.set()
        self._thread.join(timeout=self.drain_s + 30)
        with self._cond:
            lat = np.array(self.latencies_ms)
            return {"sent": self.sent, "answered": self.done, "failed": self.failed, "skipped": self.skipped,
                    "rps": self.done / self.seconds if self.seconds else 0.0,
                    "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                    "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # fields 3 … of /proc/PID/stat


def niceness(pid: int) -> int:
    """A process's niceness (field 19 of /proc/PID/stat)."""
    return int(_stat(pid)[16])


def processes(patterns: tuple[str, ...]) -> dict[str, int]:
    """Processes of this machine whose command line holds one of ``patterns``: ``{"title (pid N)": N}``."""
    out = {}
    for d in Path("/proc").iterdir():
        try:
            title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # not a process, or it ended while we looked
            continue
        match = next((p for p in patterns if p in title), None) if d.name.isdigit() else None
        if match:
            name = Path(title.split()[0]).name
            out[f"{match if name.startswith('python') else name} (pid {d.name})"] = int(d.name)
    return out


class CpuMeter:
    """CPU time that each matching process, this process (``bench``) and its waited-for children (``load
    generator``: wrk) spent since ``start``: where a serving or ingest path spends its time."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns

    @staticmethod
    def _cpu(pid: int) -> float:
        f = _stat(pid)
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> dict[str, float]:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"bench": me.ru_utime + me.ru_stime, "load generator": kids.ru_utime + kids.ru_stime}

    def start(self) -> "CpuMeter":
        """Take the first reading."""
        # By pid: a Ray worker's title changes with the method it runs ("ray::FeatureShardActor.lookup").
        self.before = {pid: self._cpu(pid) for pid in processes(self.patterns).values()}
        self.own = self._own()
        return self

    def seconds(self) -> dict[str, float]:
        """CPU seconds of each process since ``start``."""
        out = {k: v - self.own[k] for k, v in self._own().items()}
        for k, pid in processes(self.patterns).items():
            try:
                out[k] = self._cpu(pid) - self.before.get(pid, 0.0)
            except OSError:
                continue
        return {k: round(v, 3) for k, v in out.items()}

    def per_request(self, requests: int) -> dict[str, float]:
        """ms of CPU per request of each process since ``start``."""
        return {k: round(v * 1000 / max(requests, 1), 3) for k, v in self.seconds().items()}
