"""The data, training, monitoring and rollout planes: Ray actors, each a thin shell over plain classes.

One sub-package per plane; each says in its docstring what it owns, what it may import and
what it exposes. A plane reaches another only through the names that plane exposes
(``from streamfit.actors.stream import FeatureShard``), never its modules; every plane may use
the core package ``streamfit`` and none may import ``streamfit.serve`` or ``streamfit.scripts``.
``tests/test_import_rules.py`` enforces it.
"""
