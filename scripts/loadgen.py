"""A bounded HTTP load generator for the serving benchmark, run in its own process.

``python -m streamfit.scripts.loadgen URL --concurrency 32 --duration 10 --body FILE`` keeps
``concurrency`` requests in flight (keep-alive HTTP/1.1 connections, 127.0.0.1 only) for ``duration``
seconds and prints one JSON object: per-request start/end times and whether each succeeded,
plus p50/p99 and requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import urlparse

import numpy as np


class _Conn:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for POST + JSON replies
    (a lean client, so the load generator is not the bottleneck it would be with a full client)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(raw)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(url: str, bodies: list[dict[str, Any]], concurrency: int, duration_s: float,
              timeout_s: float = 30.0) -> dict[str, Any]:
    """Drive the load and return the figures."""
    u = urlparse(url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load {u.hostname}: loopback only")
    raws = []
    for body in bodies:
        data = json.dumps(body).encode()
        raws.append((f"POST {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
    records: list[tuple[float, float, bool]] = []
    errors: list[str] = []
    deadline = time.perf_counter() + duration_s

    async def worker(i: int) -> None:
        conn = _Conn(u.hostname, u.port or 80)
        n = i
        while time.perf_counter() < deadline:
            raw = raws[n % len(raws)]
            n += concurrency
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(conn.request(raw), timeout_s)
                ok = status == 200
                if not ok and len(errors) < 10:
                    errors.append(f"HTTP {status}")
            except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
                ok = False
                conn.close()
                if len(errors) < 10:
                    errors.append(f"{type(err).__name__}: {err}")
            records.append((t0, time.perf_counter(), ok))
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    lat = np.array([(e - s) * 1000 for s, e, ok in records if ok])
    shift = time.time() - time.perf_counter()
    return {
        "requests": len(records), "failed": sum(1 for *_, ok in records if not ok), "seconds": elapsed,
        "rps": sum(1 for *_, ok in records if ok) / elapsed if elapsed else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "records": [(s + shift, e + shift, ok) for s, e, ok in records],
        "errors": errors,
    }


def main() -> None:
    """Command line entry (used by ``streamfit bench serve`` in a subprocess)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--body", required=True, help="JSON file: a list of request bodies")
    args = ap.parse_args()
    with open(args.body) as f:
        bodies = json.load(f)
    print(json.dumps(asyncio.run(run(args.url, bodies, args.concurrency, args.duration))))


if __name__ == "__main__":
    main()
