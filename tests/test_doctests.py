"""Every ``>>>`` example in the package runs (the docs are tests), module by module.

pytest's ``--doctest-modules`` would import ``actors/stream/coordinator.py`` as a top-level
``actors`` package (its path), a second copy beside ``streamfit.actors``; walking the
installed package imports each module once, under its real name.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest



def module_names() -> list[str]:
    """Every module of the ``streamfit`` distribution, by import name."""
    names = set()
    # The sub-packages live in other folders (actors/, serve/, scripts/): walk each from its own path.
    for package in ("streamfit", "streamfit.actors", "streamfit.serve", "streamfit.scripts"):
        names.add(package)
        path = importlib.import_module(package).__path__
        names.update(info.name for info in pkgutil.walk_packages(path, package + "."))
    return sorted(names)


MODULES = module_names()


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_every_plane_is_walked_and_has_examples() -> None:
    planes = {"streamfit.actors.stream", "streamfit.actors.training", "streamfit.actors.monitoring",
              "streamfit.actors.rollout", "streamfit.serve", "streamfit.scripts"}
    assert planes <= {n.rsplit(".", 1)[0] for n in MODULES}
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for n in MODULES for t in finder.find(importlib.import_module(n)))
    assert examples >= 40
