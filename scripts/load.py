"""A light, bounded request load against /predict that counts served and failed requests.

Runs in a background thread so the demo (and tests) can check that traffic flips lose
no request.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import numpy as np


class RequestLoop:
    """Sends /predict requests at about ``rate`` per second until stopped."""

    def __init__(self, url: str, feature_names: list[str], rate: float = 20.0, seed: int = 0,
                 timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/") + "/predict"
        self.feature_names = feature_names
        self.rate = rate
        self.timeout_s = timeout_s
        self.served = 0
        self.failed = 0
        self.versions: Counter[int] = Counter()
        self.slots: Counter[str] = Counter()
        self.failures: list[str] = []
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamfit-load", daemon=True)

    def _row(self) -> dict[str, float]:
        vals = self._rng.normal(0.0, 1.0, size=len(self.feature_names))
        row = {n: float(v) for n, v in zip(self.feature_names, vals)}
        for n in self.feature_names:
            if n.startswith("count_"):
                row[n] = float(self._rng.integers(1, 20))
        return row

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            next_at = time.perf_counter()
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, json={"features": self._row()})
                    if r.status_code == 200:
                        body = r.json()
                        self.served += 1
                        self.versions[body["model_version"]] += 1
                        self.slots[body["slot"]] += 1
                    else:
                        self._fail(f"HTTP {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as err:
                    self._fail(f"{type(err).__name__}: {err}")
                next_at += 1.0 / self.rate
                delay = next_at - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.perf_counter()

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
