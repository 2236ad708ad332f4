"""Readiness of a Router replica: ready for traffic once it holds a model the desired state asks for.

Two layers. Serve sends a replica traffic once its constructor has returned, so a replica
(re)started while a model is live loads it first (``load_before_ready``, bounded by
``serving.flip_timeout_s``): a restart or a scale-up never answers "no model" while other
replicas can. With no model registered yet (a fresh deployment) nothing can load, so every
replica starts; then ``GET /readyz`` answers 503 with ``Retry-After`` until this replica holds a
model, and 200 after. ``GET /healthz`` stays the liveness probe: 200 while the replica answers HTTP
(its ``ready`` field is the same flag). Both are open (no token), for probes and load balancers.

Example:
    >>> from fastapi import FastAPI
    >>> from fastapi.testclient import TestClient
    >>> from streamfit.serve.router import RouterCore
    >>> client = TestClient(add_readiness(FastAPI(), RouterCore(["a"])))
    >>> r = client.get("/readyz")
    >>> r.status_code, r.headers["Retry-After"], r.json()["ready"]
    (503, '1', False)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from streamfit.serve.calls import retry_headers
from streamfit.serve.router import RouterCore

log = logging.getLogger("streamfit.serve")


def readiness(core: RouterCore) -> dict[str, Any]:
    """Whether the replica can score now, the slots that can (with their versions), and why not."""
    ready = core.ready_slots()
    body: dict[str, Any] = {"ready": bool(ready), "slots": {s: core.slots[s].version for s in ready},  # type: ignore[union-attr]
                            "revision": core.revision}
    if not ready:
        body["reason"] = ("no version is live yet: the first model is still to be trained or rolled out"
                          if not any(v is not None for v in core.desired_versions.values())
                          else "loading the desired version")
    return body


def add_readiness(app: FastAPI, core: RouterCore, retry_after_s: float = 1.0) -> FastAPI:
    """Add ``GET /readyz`` to ``app``: 200 once ``core`` holds a model the desired state asks for, else 503."""

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: 503 with Retry-After until this replica holds a model it can serve (liveness: /healthz)."""
        body = readiness(core)
        return JSONResponse(body, status_code=200 if body["ready"] else 503,
                            headers=None if body["ready"] else retry_headers(retry_after_s))

    return app


async def load_before_ready(sync: Callable[[], Awaitable[None]], timeout_s: float) -> bool:
    """One reconcile round (``sync``) before the replica takes traffic, within ``timeout_s``; whether it ran.
    A controller not started yet, or slower than that, only delays loading to the follow loop."""
    try:
        await asyncio.wait_for(sync(), timeout_s)
        return True
    except Exception as err:  # the replica must start anyway: the follow loop keeps trying
        log.warning("no model loaded before taking traffic: %s", err)
        return False
