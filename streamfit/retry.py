"""Waiting and retrying with backoff, in one place (tenacity underneath).

``wait_until`` polls a condition until it holds or a deadline passes, backing off from a short
first interval; ``retrying`` retries a call that fails with a transient error. Nothing in
streamfit writes its own poll or retry loop.

Example:
    >>> calls = []
    >>> wait_until(lambda: calls.append(1) or len(calls) >= 3, timeout_s=5, interval_s=0.001)
    True
    >>> wait_until(lambda: False, timeout_s=0.01, interval_s=0.005)
    False
    >>> flaky = iter([ConnectionError("once"), "ok"])
    >>> def call():
    ...     v = next(flaky)
    ...     if isinstance(v, Exception):
    ...         raise v
    ...     return v
    >>> retrying(call, on=(ConnectionError,), attempts=3, first_wait_s=0.001)
    'ok'
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from tenacity import (RetryError, Retrying, retry_if_exception_type, retry_if_result, stop_after_attempt,
                      stop_after_delay, wait_exponential)

T = TypeVar("T")


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes (backing off up to 4 × ``interval_s``)."""
    poll = Retrying(stop=stop_after_delay(timeout_s), retry=retry_if_result(lambda ok: not ok),
                    wait=wait_exponential(multiplier=interval_s / 2, min=interval_s / 4, max=4 * interval_s),
                    reraise=True)
    try:
        return bool(poll(predicate))
    except RetryError:
        return bool(predicate())


def retrying(fn: Callable[..., T], *args: Any, on: tuple[type[BaseException], ...] = (OSError,),
             attempts: int = 5, first_wait_s: float = 0.05, max_wait_s: float = 2.0, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)``, retrying errors of the types ``on`` with exponential backoff."""
    for attempt in Retrying(stop=stop_after_attempt(attempts), retry=retry_if_exception_type(on), reraise=True,
                            wait=wait_exponential(multiplier=first_wait_s, min=first_wait_s, max=max_wait_s)):
        with attempt:
            return fn(*args, **kwargs)
    raise AssertionError("unreachable: tenacity reraises the last error")
