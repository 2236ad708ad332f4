"""Request load against /predict that counts served and failed requests (bounded, 127.0.0.1).

``RequestLoop`` sends requests from a background thread at a fixed rate; where rows come from
is up to a row source: ``RandomRows`` (any valid feature vector) or ``StreamRows`` (the real
stream's events with their features and event ids, so that labels arriving later score each
version's live accuracy).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Callable

import httpx
import numpy as np

from streamfit.config import Config
from streamfit.actors.stream import LocalRunner, SyntheticSource

Row = tuple[dict[str, float], str | None, str | None]  # features, event id, routing key


class RandomRows:
    """Feature vectors drawn at random (counts as small integers)."""

    def __init__(self, feature_names: list[str], seed: int = 0) -> None:
        self.names = feature_names
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> Row:
        vals = self.rng.normal(0.0, 1.0, size=len(self.names))
        row = {n: float(v) for n, v in zip(self.names, vals)}
        for n in self.names:
            if n.startswith("count_") or n.startswith("label_count"):
                row[n] = float(self.rng.integers(1, 20))
        return row, None, None


class StreamRows:
    """The synthetic stream's events, with the features the pipeline computes for them, kept in step
    with the pipeline's position (``advance_to``)."""

    def __init__(self, cfg: Config, keep: int = 500) -> None:
        self.runner = LocalRunner(cfg.features, SyntheticSource(cfg.stream, cfg.features))
        self.shard = self.runner.shards[0]
        self.keep = keep
        self.rows: list[Row] = []
        self.next = 0
        self.lock = threading.Lock()

    def advance_to(self, position: int) -> None:
        """Compute features up to the pipeline's source position."""
        self.runner.run_until(position)
        recent = self.shard.recent_events(self.keep)
        names = self.shard.feature_names
        rows = [({n: float(v) for n, v in zip(names, vals)}, eid, ent)
                for eid, ent, vals in zip(recent["event_id"], recent["entity"], recent[names].to_numpy())]
        with self.lock:
            self.rows, self.next = rows, 0

    def __call__(self) -> Row | None:
        with self.lock:
            if not self.rows:
                return None
            row = self.rows[self.next % len(self.rows)]
            self.next += 1
            return row


class RequestLoop:
    """Sends /predict requests at about ``rate`` per second until stopped."""

    def __init__(self, url: str, rows: Callable[[], Row | None], rate: float = 20.0, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/") + "/predict"
        self.rows = rows
        self.rate = rate
        self.timeout_s = timeout_s
        self.served = 0
        self.failed = 0
        self.versions: Counter[int] = Counter()
        self.slots: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamfit-load", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            next_at = time.perf_counter()
            while not self._stop.is_set():
                row = self.rows()
                if row is not None:
                    features, event_id, key = row
                    body: dict[str, Any] = {"features": features}
                    if event_id is not None:
                        body["event_id"] = event_id
                    if key is not None:
                        body["routing_key"] = key
                    self._send(client, body)
                next_at += 1.0 / self.rate
                delay = next_at - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.perf_counter()

    def _send(self, client: httpx.Client, body: dict[str, Any]) -> None:
        try:
            r = client.post(self.url, json=body)
            if r.status_code == 200:
                out = r.json()
                self.served += 1
                self.versions[out["model_version"]] += 1
                self.slots[out["slot"]] += 1
            else:
                self._fail(f"HTTP {r.status_code}: {r.text[:200]}")
        except httpx.HTTPError as err:
            self._fail(f"{type(err).__name__}: {err}")

    def _fail(self, why: str) -> None:
        self.failed += 1
        if len(self.failures) < 20:
            self.failures.append(why)

    def start(self) -> "RequestLoop":
        """Start sending in the background."""
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """Stop, wait for the thread, and return the counts."""
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 5)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Served, failed, versions and slots seen so far."""
        return {"served": self.served, "failed": self.failed, "versions": dict(self.versions),
                "slots": dict(self.slots), "failures": list(self.failures)}
