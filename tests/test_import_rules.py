"""The import rules of the layout: imports point down (scripts -> serve -> actors -> core), and a
plane of ``actors`` is reached from outside only through the names its package exposes."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"streamfit": "streamfit", "actors": "streamfit.actors", "serve": "streamfit.serve",
           "scripts": "streamfit.scripts"}
LAYER = {"streamfit": 0, "streamfit.actors": 1, "streamfit.serve": 2, "streamfit.scripts": 3}
PLANES = ("stream", "training", "monitoring", "rollout")


def modules() -> list[tuple[str, Path]]:
    """(dotted name, path) of every source module of the distribution."""
    out = []
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append((".".join([package, *parts]), path))
    return out


def layer_of(module: str) -> str:
    """The top-level package a module belongs to (streamfit, streamfit.actors, ...)."""
    for package in ("streamfit.actors", "streamfit.serve", "streamfit.scripts"):
        if module == package or module.startswith(package + "."):
            return package
    return "streamfit"


def plane_of(module: str) -> str | None:
    """The plane of an ``actors`` module (None outside the planes)."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "actors" and parts[2] in PLANES else None


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every streamfit import in a file, at any depth (lazy imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("streamfit"):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("streamfit")]
    return sorted(found)


def violations(mods: list[tuple[str, Path]] | None = None) -> list[str]:
    """Every import that breaks a rule, as ``path:line: why``."""
    bad = []
    for module, path in modules() if mods is None else mods:
        here_layer, here_plane = layer_of(module), plane_of(module)
        for line, target, names in imports(path):
            where = f"{path.name}:{line}: {module} imports {target}"
            if LAYER[layer_of(target)] > LAYER[here_layer]:
                bad.append(f"{where} (imports point down: scripts -> serve -> actors -> core)")
                continue
            there_plane = plane_of(target)
            if there_plane is None or there_plane == here_plane:
                continue
            if target != f"streamfit.actors.{there_plane}":
                bad.append(f"{where} (reach another plane through its package, not its modules)")
                continue
            exposed = set(importlib.import_module(target).__all__)
            hidden = [n for n in names if n not in exposed]
            if hidden:
                bad.append(f"{where} {hidden} (not exposed by the plane's __all__)")
    return bad


def test_imports_follow_the_layout() -> None:
    assert violations() == []


def test_the_check_catches_a_bad_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from streamfit.serve.api import build_api\n"
                   "def f():\n    from streamfit.actors.training.trainer import TrainerCore\n"
                   "from streamfit.actors.training import nothing_exposed\n")
    found = violations([("streamfit.actors.stream.bad", bad)])
    assert len(found) == 3, found
    assert "point down" in found[0] and "through its package" in found[1] and "not exposed" in found[2]


def test_every_plane_says_what_it_owns_and_exposes() -> None:
    for plane in PLANES:
        package = importlib.import_module(f"streamfit.actors.{plane}")
        doc = package.__doc__ or ""
        assert "Owns:" in doc and "May import:" in doc and "Exposes" in doc, plane
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{plane} exposes {name} but has none"


def test_serve_app_does_not_import_river() -> None:
    import subprocess
    import sys

    code = "import sys, streamfit.serve.app; print('river' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
