"""One vocabulary for state that is checkpointed or persisted: ``snapshot()`` and ``restore()``.

A snapshot is plain data — numbers, strings, lists, dicts and numpy arrays — so any store
(Arrow files, JSON, Ray's object store) can carry it. ``restore`` replaces the object's
state in place with a snapshot's: an object restored into a fresh instance and fed the same
inputs afterwards behaves exactly like the one that was never interrupted.
``tests/test_stateful_contract.py`` checks that for every implementation.

Example:
    >>> class Counter:
    ...     def __init__(self) -> None:
    ...         self.n = 0
    ...     def add(self, k: int) -> None:
    ...         self.n += k
    ...     def snapshot(self) -> dict[str, Any]:
    ...         return {"n": self.n}
    ...     def restore(self, snap: dict[str, Any]) -> None:
    ...         self.n = int(snap["n"])
    >>> a = Counter(); a.add(3)
    >>> b = Counter(); b.restore(a.snapshot()); b.add(1)
    >>> b.n, isinstance(b, Stateful)
    (4, True)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Stateful(Protocol):
    """State that can be saved as plain data and put back in place."""

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume exactly here, as plain data (callers must not mutate it)."""
        ...

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace this object's state with ``snap`` (the output of ``snapshot()``), in place."""
        ...
