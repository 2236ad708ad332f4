"""The planes a monitor samples: handles attached to it, and named actors looked up again when missing.

A handle given with ``attach`` dies with the monitor's process; a plane named here is looked up
(``lookup(name)``, e.g. ``ray.get_actor``) whenever it is missing, so a restarted monitor finds it again.

Example:
    >>> actors = {"streamfit-trainer": "trainer handle"}
    >>> planes = Planes({"trainer": "streamfit-trainer", "controller": "streamfit-rollout"}, ["trainer", "controller"])
    >>> planes.current(actors.__getitem__)
    {'trainer': 'trainer handle'}
"""

from __future__ import annotations

from typing import Any, Callable, Iterable


class Planes:
    """Handles of the planes to sample (plane -> actor handle), refilled by name."""

    def __init__(self, names: dict[str, str] | None, known: Iterable[str]) -> None:
        known = set(known)
        self.names = {p: n for p, n in (names or {}).items() if p in known}
        self.handles: dict[str, Any] = {}

    def attach(self, **handles: Any) -> None:
        """Handles given by whoever started the planes."""
        self.handles.update(handles)

    def current(self, lookup: Callable[[str], Any]) -> dict[str, Any]:
        """The handles there are now, after looking up each missing named plane (``lookup`` raises
        ``KeyError`` or ``ValueError`` for an actor that does not exist: left out, asked again next time)."""
        for plane, name in self.names.items():
            if plane not in self.handles:
                try:
                    self.handles[plane] = lookup(name)
                except (KeyError, ValueError):
                    pass
        return self.handles
