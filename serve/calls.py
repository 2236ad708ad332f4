"""Bounded calls from a Router replica to the other planes' actors.

Every call has a timeout from the config (``serving.actor_timeout_s``, ``command_timeout_s`` for
traffic commands and refits). An actor that does not answer in time, is not running, died or is
restarting raises ``Unavailable``: an HTTP 503 with ``Retry-After`` whose detail (and the
``X-Streamfit-Unavailable`` header) names what is unavailable, counted by target — never a hang,
never a 500. An error the actor itself raised is not unavailability: it reaches the caller as it is.

Example:
    >>> import asyncio
    >>> async def never(handle):
    ...     await asyncio.Event().wait()
    >>> calls = ActorCalls(lambda name: name, timeout_s=0.01)
    >>> try:
    ...     asyncio.run(calls.call("controller", "streamfit_controller", never))
    ... except Unavailable as err:
    ...     err.status_code, err.headers["Retry-After"], err.headers[UNAVAILABLE_HEADER], calls.unavailable
    (503, '1', 'controller', {'controller': 1})
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable, Callable

from fastapi import HTTPException
from ray.exceptions import GetTimeoutError, RayActorError, RaySystemError

UNAVAILABLE_HEADER = "X-Streamfit-Unavailable"
WHAT = {"controller": "the rollout controller", "ingest": "the ingest log", "monitor": "the monitor",
        "trainer": "the trainer", "shard": "a feature shard", "slot": "a slot deployment",
        "registry": "the model registry"}
# A dead or restarting actor, or Ray itself unreachable: the same call may work a moment later.
GONE: tuple[type[BaseException], ...] = (RayActorError, RaySystemError, GetTimeoutError, asyncio.TimeoutError)


class Unavailable(HTTPException):
    """503 + Retry-After: ``target`` (controller, ingest, monitor, trainer, shard, slot) cannot answer now."""

    def __init__(self, target: str, why: str, retry_after_s: float = 1.0) -> None:
        wait = max(1, math.ceil(retry_after_s))
        super().__init__(status_code=503, detail=f"{WHAT.get(target, target)} is unavailable ({why}); retry in {wait} s",
                         headers={"Retry-After": str(wait), UNAVAILABLE_HEADER: target})
        self.target = target


def retry_headers(retry_after_s: float) -> dict[str, str]:
    """The ``Retry-After`` header of a 503 (whole seconds, at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


class ActorCalls:
    """Named actors' handles (looked up off the event loop, kept until a call finds them gone) and
    calls to them bounded by a timeout; what cannot answer is counted and raised as ``Unavailable``."""

    def __init__(self, lookup: Callable[[str], Any], timeout_s: float, retry_after_s: float = 1.0,
                 on_unavailable: Callable[[str], None] | None = None) -> None:
        self.lookup, self.timeout_s, self.retry_after_s = lookup, timeout_s, retry_after_s
        self.on_unavailable = on_unavailable
        self.unavailable: dict[str, int] = {}
        self._handles: dict[str, Any] = {}

    def fail(self, target: str, why: str) -> Unavailable:
        """Count ``target`` as unavailable; the 503 to raise."""
        self.unavailable[target] = self.unavailable.get(target, 0) + 1
        if self.on_unavailable is not None:
            self.on_unavailable(target)
        return Unavailable(target, why, self.retry_after_s)

    async def handle(self, target: str, name: str, timeout_s: float | None = None) -> Any:
        """The handle of the actor named ``name`` (``Unavailable`` if it is not running)."""
        if name in self._handles:
            return self._handles[name]
        limit = timeout_s or self.timeout_s
        try:  # a GCS round trip: in a thread, so a slow GCS never stalls the replica's other requests
            handle = await asyncio.wait_for(asyncio.to_thread(self.lookup, name), limit)
        except ValueError:  # no actor of that name: not started yet, or not part of this deployment
            raise self.fail(target, f"{name} is not running") from None
        except GONE as err:
            raise self.fail(target, _why(err, limit)) from None
        self._handles[name] = handle
        return handle

    async def call(self, target: str, name: str, method: Callable[[Any], Awaitable[Any]],
                   timeout_s: float | None = None) -> Any:
        """``await method(handle)`` on the named actor within the timeout; ``Unavailable`` if it cannot answer."""
        limit = timeout_s or self.timeout_s
        handle = await self.handle(target, name, limit)
        try:
            return await asyncio.wait_for(awaited(method(handle)), limit)
        except GONE as err:
            self._handles.pop(name, None)  # looked up again next time: the actor may have been started anew
            raise self.fail(target, _why(err, limit)) from None


async def awaited(ref: Awaitable[Any]) -> Any:
    """``await ref`` as a coroutine (``asyncio.wait_for`` takes Ray's ObjectRefs and Serve's responses then)."""
    return await ref


def _why(err: BaseException, timeout_s: float) -> str:
    if isinstance(err, asyncio.TimeoutError) and not isinstance(err, GetTimeoutError):
        return f"no answer within {timeout_s:g} s"
    return f"{type(err).__name__}: restarting or gone"
