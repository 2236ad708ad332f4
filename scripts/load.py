"""Request load against /predict that counts served and failed requests (bounded, 127.0.0.1).

``RequestLoop`` sends requests from a background thread at a fixed rate; what it sends is up to
a source of requests: ``StreamEvents`` (the real stream's raw events — entity, event time, event
id and fields — as a client sends them: the Router joins each entity's live features, and the
labels arriving later score each version's live accuracy and the served features' skew) or
``RandomRows`` (any valid precomputed feature vector, for clients that compute features).

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"kind": ["event", "label"], "event_id": ["ev1", "ev0"], "entity": ["u3", "u2"],
    ...                    "event_time": [10.5, 11.0], "x0": [0.25, float("nan")], "label": [float("nan"), 1.0]})
    >>> event_bodies(df, ["x0"])
    [{'entity': 'u3', 'event_time': 10.5, 'event_id': 'ev1', 'x0': 0.25}]
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Callable, Union

import httpx
import numpy as np
import pandas as pd

from streamfit.config import Config
from streamfit.actors.stream import synthetic_source
from streamfit.schema import ENTITY, EVENT, EVENT_ID, EVENT_TIME, KIND, validate

Row = tuple[dict[str, float], Union[str, None], Union[str, None]]  # precomputed features, event id, routing key
Event = dict[str, Any]  # a raw event: entity, event_time, event_id and the configured fields
# event id, event time, version, prediction (binary 0/1, multiclass the class index, regression the value), wall time
Answer = tuple[str, float, int, float, float]


def event_bodies(df: pd.DataFrame, fields: list[str]) -> list[Event]:
    """The event rows of a stream batch as raw events a client sends (a missing field is left out)."""
    events = df[df[KIND] == EVENT]
    out = []
    for rec in events[[ENTITY, EVENT_TIME, EVENT_ID, *fields]].to_dict("records"):
        # Numbers go as numbers; a categorical field's text stays text.
        out.append({k: (float(v) if k == EVENT_TIME or (k in fields and not isinstance(v, str)) else str(v))
                    for k, v in rec.items() if not (isinstance(v, float) and np.isnan(v))})
    return out


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


class StreamEvents:
    """The synthetic stream's own events, regenerated from its seed, as a client scores them: as they
    happen, just before the stream has them. ``advance_to(position)`` takes the next ``keep`` events
    from the pipeline's source position on (those the schema accepts: a client checks what it sends),
    so each scored event's served features are logged before its label arrives and the trainer's row
    for it can use them."""

    def __init__(self, cfg: Config, keep: int = 500) -> None:
        self.source = synthetic_source(cfg.stream, cfg.features, cfg.model)
        self.features = cfg.features
        self.model = cfg.model
        self.fields = [f.name for f in cfg.features.fields]
        self.keep = keep
        self.position = -1
        self.events: list[Event] = []
        self.next = 0
        self.lock = threading.Lock()

    def advance_to(self, position: int) -> None:
        """Take the events of the source positions from ``position`` on (not yet read by the pipeline)."""
        if position == self.position:
            return
        frames, n, pos = [], 0, position
        while n < self.keep and not self.source.at_end(pos):
            df, pos = self.source.read(pos)
            frames.append(df)
            n += int((df[KIND] == EVENT).sum())
        events: list[Event] = []
        if frames:
            clean, reason = validate(pd.concat(frames, ignore_index=True), self.features, self.model)
            events = event_bodies(clean[reason == ""], self.fields)[:self.keep]
        with self.lock:
            self.position, self.events, self.next = position, events, 0

    def __call__(self) -> Event | None:
        with self.lock:
            if not self.events:
                return None
            event = self.events[self.next % len(self.events)]
            self.next += 1
            return event


def answered_value(answer: dict[str, Any]) -> float:
    """The number an answer predicts: binary 0/1, multiclass the class index, regression the value.

    >>> answered_value({"prediction": "mid", "class_index": 1}), answered_value({"prediction": 41.5})
    (1.0, 41.5)
    """
    return float(answer["class_index"] if "class_index" in answer else answer["prediction"])


class RequestLoop:
    """Sends /predict requests at about ``rate`` per second until stopped: a ``Row`` as precomputed
    ``features``, an ``Event`` as a raw ``event`` (counted in ``raw_served``). With ``record``, every answer
    to an event that has an id is kept in ``answers`` (what the freshness figures score)."""

    def __init__(self, url: str, rows: Callable[[], Row | Event | None], rate: float = 20.0,
                 timeout_s: float = 10.0, record: bool = False) -> None:
        self.url = url.rstrip("/") + "/predict"
        self.rows = rows
        self.rate = rate
        self.timeout_s = timeout_s
        self.served = 0
        self.raw_served = 0
        self.failed = 0
        self.retried = 0  # 503 + Retry-After answers retried once
        self.versions: Counter[int] = Counter()
        self.slots: Counter[str] = Counter()
        self.failures: list[str] = []
        self.record = record
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamfit-load", daemon=True)

    @staticmethod
    def body(row: Row | Event) -> dict[str, Any]:
        """The request body of a precomputed row or of a raw event."""
        if isinstance(row, dict):
            return {"event": row}
        features, event_id, key = row
        body: dict[str, Any] = {"features": features}
        if event_id is not None:
            body["event_id"] = event_id
        if key is not None:
            body["routing_key"] = key
        return body

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            next_at = time.perf_counter()
            while not self._stop.is_set():
                row = self.rows()
                if row is not None:
                    self._send(client, self.body(row))
                next_at += 1.0 / self.rate
                delay = next_at - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.perf_counter()

    def _send(self, client: httpx.Client, body: dict[str, Any]) -> None:
        try:
            r = client.post(self.url, json=body)
            if r.status_code == 503 and "Retry-After" in r.headers:
                # As a real client does: a shard that was briefly too slow asked us to come back; once, counted.
                self.retried += 1
                self._stop.wait(min(float(r.headers["Retry-After"]), 1.0))
                r = client.post(self.url, json=body)
            if r.status_code == 200:
                out = r.json()
                self.served += 1
                self.raw_served += "event" in body
                version = out["model_version"] if "model_version" in out else out["version"]
                self.versions[version] += 1
                self.slots[out["slot"]] += 1
                event = body.get("event")
                if self.record and event and event.get("event_id"):
                    self.answers.append((event["event_id"], float(event["event_time"]), int(version),
                                         answered_value(out), time.time()))
            else:
                self._fail(f"HTTP {r.status_code}: {r.text[:200]}")
        except httpx.HTTPError as err:
            self._fail(f"{type(err).__name__}: {err}")
        except (KeyError, TypeError, ValueError) as err:  # an answer of an unexpected shape: counted, the loop goes on
            self._fail(f"unexpected answer: {type(err).__name__}: {err}")

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
        """Served (of which from raw events), failed, versions and slots seen so far."""
        return {"served": self.served, "raw_served": self.raw_served, "failed": self.failed, "retried": self.retried,
                "versions": dict(self.versions), "slots": dict(self.slots), "failures": list(self.failures)}
