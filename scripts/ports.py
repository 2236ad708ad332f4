"""Free TCP ports that stay free: picked outside the kernel's ephemeral range.

A port found by binding port 0 comes from the ephemeral range, the same range the kernel hands
out next to every other ``bind(0)`` and outgoing connection on the machine (Ray alone opens
hundreds). On a busy node such a port is often taken again in the seconds before Serve's proxy
or HAProxy binds it ("Address already in use"). Ports below that range, and above Ray's worker
ports (10002–19999 by default), are only taken by a process that asks for them by number, so the
picks also stay below Serve's direct-ingress replica ports (30000 and up by default), and one
process never hands out the same port twice: several picks for one start are bound only later.

Example:
    >>> lo, hi = ephemeral_range()
    >>> port = free_port()
    >>> 1024 < port < 65536 and not (lo <= port <= hi and lo > QUIET_FLOOR + 1000)
    True
"""

from __future__ import annotations

import os
import random
import socket

QUIET_FLOOR = 20_000  # above Ray's default worker port range (min/max_worker_port 10002-19999)
_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
_HANDED_OUT: set[int] = set()  # picked in this process: not yet bound, so a bind check cannot see them


def _quiet_ceiling(ephemeral_low: int) -> int:
    """Highest pick + 1: below the ephemeral range and below Serve's direct-ingress port ranges."""
    serve_low = min(int(os.environ.get("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "30000")),
                    int(os.environ.get("RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT", "40000")))
    return min(ephemeral_low, serve_low) if serve_low - QUIET_FLOOR >= 1000 else ephemeral_low


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux), or IANA's 49152–65535 where it cannot be read."""
    try:
        with open(_RANGE_FILE) as f:
            lo, hi = (int(v) for v in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 49152, 65535


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))  # every address: a proxy on 0.0.0.0 conflicts with a socket on 127.0.0.1 too
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port free on every local address right now, outside the ephemeral range when there is room."""
    ceiling = _quiet_ceiling(ephemeral_range()[0])
    if ceiling - QUIET_FLOOR >= 1000:
        rng = random.SystemRandom()  # independent of any seeded global random state
        for _ in range(100):
            port = rng.randrange(QUIET_FLOOR, ceiling)
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)
                return port
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free TCP port found")
