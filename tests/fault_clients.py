"""What the fault-tolerance test drives the system with: clients that behave like real ones, and a storage fault
made on the real file system.

- ``IngestClient`` pushes batches of events with unique ids to ``POST /ingest`` and, like a real client,
  retries each batch until it is acknowledged (waiting ``Retry-After`` on 429/503); it records every
  acknowledged event and every answer that was neither 200 nor 429/503 with ``Retry-After``.
- ``ScoringClient`` sends raw events to ``POST /predict`` and counts the answers the same way.
- ``BrokenDirectory`` replaces a store's temporary directory with a regular file, so every write through that
  store fails (``create_dir`` on a file, a rename from a directory that moved) until it is healed. The tests run
  as root, for whom permission bits do not stop a write; a file where a directory should be does.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from typing import Any

import httpx

GIVE_UP_S = 300.0  # a batch never acknowledged within this long is recorded as given up
MAX_BACKOFF_S = 2.0


class _Client(threading.Thread):
    """A daemon thread posting to the API until ``stop()``; answers counted by status."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.statuses: Counter[int] = Counter()
        self.unexpected: list[str] = []  # answers a client must never get (or transport errors)
        self.refusals = 0  # answers other than 200 (any), to wait on a fault biting
        self.ok = 0
        self.phase = "start"  # what the test is doing now: named in each unexpected answer
        self.lock = threading.Lock()
        self._stop_asked = threading.Event()

    def ask_to_stop(self) -> None:
        """Ask the loop to end after its current request (a batch: once acknowledged)."""
        self._stop_asked.set()

    def stop(self, timeout_s: float = GIVE_UP_S) -> None:
        """Ask the loop to end after its current request and wait for it."""
        self.ask_to_stop()
        self.join(timeout_s)
        assert not self.is_alive(), f"{type(self).__name__} did not stop within {timeout_s} s"

    def _post(self, c: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response | None:
        """One request; None after a transport error (recorded). A refused answer backs off as asked."""
        try:
            r = c.post(path, json=body)
        except httpx.HTTPError as err:
            with self.lock:
                self.refusals += 1
                self.unexpected.append(f"[{self.phase}] {path}: transport error {type(err).__name__}: {err}")
            time.sleep(0.5)
            return None
        with self.lock:
            self.statuses[r.status_code] += 1
            if r.status_code == 200:
                self.ok += 1
                return r
            self.refusals += 1
            retry_after = r.headers.get("Retry-After")
            if r.status_code not in (429, 503) or retry_after is None:
                self.unexpected.append(f"[{self.phase}] {path}: {r.status_code} (Retry-After {retry_after}) {r.text[:300]}")
        time.sleep(min(float(retry_after), MAX_BACKOFF_S) if retry_after else 0.5)  # a client backing off
        return r


class IngestClient(_Client):
    """Sends ``batch`` events a request, each batch until acknowledged; keeps every acknowledged event."""

    def __init__(self, url: str, headers: dict[str, str], batch: int = 25, entities: int = 40) -> None:
        super().__init__(url, headers)
        self.batch, self.entities = batch, entities
        self.acked: dict[str, dict[str, Any]] = {}  # event id -> the event, once a 200 acknowledged it
        self.duplicates = 0  # acknowledged as already stored (a retry of a request whose answer was lost)
        self.given_up: list[str] = []
        self._last_time = 0.0

    def _events(self, first: int) -> list[dict[str, Any]]:
        # Event times from the wall clock, increasing: never late, never ahead of the event-time guard's clock.
        t = max(time.time(), self._last_time + 0.01)
        self._last_time = t + self.batch * 1e-4
        return [{"event_id": f"ev-{i:07d}", "entity": f"u{i % self.entities}", "event_time": t + j * 1e-4,
                 "x0": float(i % 50 - 25), "x1": float(i % 7), "x2": 0.5} for j, i in enumerate(range(first, first + self.batch))]

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as c:
            first = 0
            while not self._stop_asked.is_set():
                self._until_acknowledged(c, self._events(first))
                first += self.batch

    def _until_acknowledged(self, c: httpx.Client, events: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline:
            r = self._post(c, "/ingest", {"events": events})
            if r is None or r.status_code != 200:
                continue
            out = r.json()
            rejected = {x["index"] for x in out["rejected"]}
            with self.lock:
                if rejected or out["accepted"] + out["duplicates"] != len(events):
                    self.unexpected.append(f"[{self.phase}] /ingest: 200 that does not acknowledge the whole batch: {out}")
                self.duplicates += out["duplicates"]
                for k, e in enumerate(events):
                    if k not in rejected:
                        self.acked[e["event_id"]] = e
            return
        self.given_up.append(events[0]["event_id"])

    def n_acked(self) -> int:
        """Events acknowledged so far."""
        with self.lock:
            return len(self.acked)


class ScoringClient(_Client):
    """Scores one raw event a request (with an event id, so the served vector is recorded)."""

    def __init__(self, url: str, headers: dict[str, str], entities: int = 40) -> None:
        super().__init__(url, headers)
        self.entities = entities

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as c:
            k = 0
            while not self._stop_asked.is_set():
                event = {"entity": f"u{k % self.entities}", "event_id": f"p-{k:07d}", "x0": float(k % 30 - 15),
                         "x1": 1.0, "x2": 0.0}
                self._post(c, "/predict", {"event": event})
                k += 1


class BrokenDirectory:
    """A directory some store writes through, replaced by a regular file until ``heal()``."""

    def __init__(self, path: str) -> None:
        self.path, self.aside = path, f"{path}.moved-aside"

    def __enter__(self) -> "BrokenDirectory":
        if os.path.isdir(self.path):
            os.rename(self.path, self.aside)  # a write in progress finds its temporary file gone
        with open(self.path, "wb"):
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        self.heal()

    def heal(self) -> None:
        """The directory back (empty: the stores create it again as needed)."""
        if os.path.isfile(self.path):
            os.remove(self.path)
        shutil.rmtree(self.aside, ignore_errors=True)
