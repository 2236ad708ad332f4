"""Helpers for the test servers the suite starts (broker, S3 endpoint): a free port, a clean stop."""

from __future__ import annotations

import signal
import socket
import subprocess

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, grace_s: float = 2.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``grace_s`` (servers wait for open connections)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
