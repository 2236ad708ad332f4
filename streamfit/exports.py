"""Lazy public names for a package: a plane says what it exposes without importing it all at once.

A Serve replica that needs one name from a plane should not import every library the plane
uses (river, confluent-kafka, Ray Train): each name is imported from its module on first use.

Example:
    >>> getattr_, names = lazy_exports("os", {"join": "path"})
    >>> names, getattr_("join")("a", "b")
    (['join'], 'a/b')
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A module ``__getattr__`` that imports ``name`` from ``package.exports[name]``, and ``__all__``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} exposes no {name!r}")
        return getattr(import_module(f"{package}.{exports[name]}"), name)

    return __getattr__, sorted(exports)
