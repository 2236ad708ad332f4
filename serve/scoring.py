"""Scoring of ``POST /predict``: precomputed rows, and raw events joined with their entities' live features.

A raw event's model row comes from the shard that owns its entity (``Backend.lookup``, micro-batched
per shard by ``lookup.LookupBatcher`` on Ray), in the model's feature order; the row goes to the
slot the traffic split chooses. The answer names the version and slot, and ``features_as_of``:
the event time the shard had applied up to. Events the shard refuses (a field out of range, an
event time too far ahead of or behind the stream's clock) are not scored: one event is a 422
naming the field, a batch lists them under ``rejected``. A shard that cannot answer in time is a
503 with ``Retry-After``. Scoring reads the feature state and never changes it: with
``"ingest": true`` the scored events enter the stream through the ``POST /ingest`` path.

Example:
    >>> reason_field("out_of_range:x0"), reason_field("event_time_future"), reason_field("late")
    ('x0', 'event_time', None)
"""

from __future__ import annotations

import math
import time
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import HTTPException
from fastapi.responses import JSONResponse

from streamfit.serve.calls import Unavailable, retry_headers
from streamfit.serve.lookup import EventRows, LookupAnswer, ShardUnavailable
from streamfit.serve.router import NoModelError, RouterCore, SlotNotReadyError, SlotUnavailable

RETRY_AFTER_S = 1  # a restarting shard loads its checkpoint in about this long
Ingest = Callable[[list[dict[str, Any]]], Awaitable[Any]]


def reason_field(reason: str) -> str | None:
    """The request field a shard's rejection reason is about ('non_numeric:x0' -> 'x0'), if any."""
    if ":" in reason:
        return reason.split(":", 1)[1]
    return "event_time" if reason.startswith("event_time") else None


async def predict_rows(core: RouterCore, x: np.ndarray, key: str | None,
                       pin: str | None) -> tuple[str, int, np.ndarray]:
    """(slot, version, probabilities) for the rows of ``x``; no model yet or a slot deployment that cannot
    answer is a 503 with ``Retry-After``, a pinned slot not ready a 409."""
    try:
        return await core.apredict(x, key=key, pin=pin)
    except NoModelError as err:
        raise HTTPException(status_code=503, detail=str(err), headers=retry_headers(RETRY_AFTER_S)) from None
    except SlotUnavailable as err:
        raise Unavailable("slot", str(err), RETRY_AFTER_S) from None
    except SlotNotReadyError as err:
        raise HTTPException(status_code=409, detail=str(err)) from None


def _finite(v: Any) -> Any:
    """A number as JSON can say it (inf/NaN: None); a category's text as it is."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


class RawScorer:
    """Scores raw events: lookup, predict, log, optionally ingest; answers JSON built from plain lists."""

    def __init__(self, core: RouterCore, backend: Any, fields: list[str], ingest: Ingest | None = None) -> None:
        self.core, self.backend, self.fields, self.ingest = core, backend, list(fields), ingest
        self.categorical = tuple(f for f in self.fields if f in core.categorical)  # sent as text
        self._columns: dict[tuple[str, ...], list[int] | None] = {}
        self._position = {f: i for i, f in enumerate(core.feature_names)}  # a text column's place in a model row

    def _model_rows(self, answer: LookupAnswer, ok: list[int]) -> np.ndarray:
        """The lookup's vectors of rows ``ok``, in the model's feature order."""
        names = tuple(answer.feature_names)
        if names not in self._columns:
            want = self.core.feature_names
            missing = [n for n in want if n not in names]
            if missing:
                raise HTTPException(status_code=500, detail=f"the shards compute no {missing}: schema mismatch")
            self._columns[names] = None if list(names) == want else [names.index(n) for n in want]
        cols = self._columns[names]
        x = answer.features[ok]
        x = x if cols is None else x[:, cols]
        if answer.text:  # categorical columns: their text (NaN in ``features``), in an object array
            x = x.astype(object)
            for f, values in answer.text.items():
                x[:, self._position[f]] = values[ok]
        return x

    async def _lookup(self, rows: EventRows) -> LookupAnswer:
        try:
            return await self.backend.lookup(rows, record=any(rows.event_id))
        except ShardUnavailable as err:
            raise HTTPException(status_code=503, detail=str(err), headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except NotImplementedError:
            raise HTTPException(status_code=501, detail="raw events are not available in this deployment") from None

    def _check_ingest(self, where: str, events: list[Any]) -> None:
        if self.ingest is None:
            raise HTTPException(status_code=409, detail="ingest: true needs stream.source: http (this deployment "
                                                        "reads another source); score without it")
        missing = [i for i, e in enumerate(events) if e.event_id is None]
        if missing:
            loc = ["body", where] + ([] if where == "event" else [missing[0]]) + ["event_id"]
            raise HTTPException(status_code=422, detail=[{"loc": loc, "type": "missing",
                                                          "msg": "ingest: true needs an event_id on every event"}])

    async def score(self, req: Any, key: str | None, pin: str | None) -> JSONResponse:
        """The answer to a raw-event request (``event`` or ``events``)."""
        single = req.event is not None
        where, events = ("event", [req.event]) if single else ("events", req.events)
        if req.ingest:
            self._check_ingest(where, events)
        rows = EventRows.of([vars(e) for e in events], self.fields, self.categorical)
        answer = await self._lookup(rows)
        ok = [i for i, why in enumerate(answer.reasons) if not why]
        rejected = [{"index": i, "reason": why} for i, why in enumerate(answer.reasons) if why]
        if not ok:
            if single:
                why = rejected[0]["reason"]
                field = reason_field(why)
                loc = ["body", "event"] + ([field] if field else [])
                raise HTTPException(status_code=422, detail=[{"loc": loc, "type": "rejected", "msg": f"rejected: {why}"}])
            raise HTTPException(status_code=422, detail={"message": "every event was rejected", "rejected": rejected})
        slot, version, probs = await predict_rows(self.core, self._model_rows(answer, ok), key, pin)
        ingested = await self._ingest(rows, answer, ok) if req.ingest else None
        ids = [rows.event_id[i] for i in ok]
        if any(ids):  # after the ingest: a request retried because its ingest failed is logged once
            now = time.time()
            logged = self.core.answers.logged(probs)  # multiclass: the k class probabilities of each row
            self.backend.log_predictions([(e, version, slot, p, now) for e, p in zip(ids, logged) if e])
        out = [self._entry(req, answer, i, e, p, version, slot) for i, e, p in zip(ok, ids, probs)]
        if single:
            body = out[0] if ingested is None else {**out[0], "ingested": ingested}
        else:
            for entry, i in zip(out, ok):
                entry["index"] = i
            body = {"predictions": out, "rejected": rejected, **({} if ingested is None else {"ingested": ingested})}
        return JSONResponse(body)

    def _entry(self, req: Any, answer: LookupAnswer, i: int, event_id: str, p: np.ndarray, version: int,
               slot: str) -> dict[str, Any]:
        entry: dict[str, Any] = {**self.core.answers.entry(p), "version": version, "model_version": version,
                                 "slot": slot, "features_as_of": _finite(float(answer.as_of[i]))}
        if event_id:
            entry["event_id"] = event_id
        if req.return_features:
            entry["features"] = {n: _finite(v) for n, v in zip(answer.feature_names, answer.features[i].tolist())}
            entry["features"].update({f: t[i] for f, t in answer.text.items()})
        return entry

    async def _ingest(self, rows: EventRows, answer: LookupAnswer, ok: list[int]) -> Any:
        """The scored events into the stream, each at the time it was scored at (the stream's clock if it had none)."""
        events = [{"kind": "event", "event_id": rows.event_id[i], "entity": rows.entity[i],
                   "event_time": float(answer.times[i]),
                   **{f: _finite(v) for f, v in zip(rows.fields, rows.x[i].tolist())},
                   **{f: t[i] for f, t in rows.text.items()}} for i in ok]
        try:
            out = (await self.ingest(events)).model_dump()  # type: ignore[misc]
        except HTTPException:
            raise
        except Exception as err:  # the ingest log is restarting: the client retries (event ids make it idempotent)
            raise HTTPException(status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
                                detail=f"scored, but the events did not enter the stream ({type(err).__name__}); "
                                       "retry the request") from None
        for r in out["rejected"]:
            r["index"] = ok[r["index"]]  # its place in the request
        return out
