"""The shape the layout promises: small modules, thin Ray actors and Serve deployments."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("streamfit", "actors", "serve", "scripts") for p in sorted((ROOT / folder).rglob("*.py"))]
MAX_MODULE_LINES = 400
MAX_SHELL_LINES = 60


def shells(tree: ast.Module) -> list[ast.ClassDef]:
    """Classes decorated as Ray actors (``@ray.remote``) or Serve deployments (``@serve.deployment``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for dec in node.decorator_list:
                text = ast.unparse(dec)
                if text.startswith(("ray.remote", "serve.deployment")):
                    found.append(node)
    return found


def body_lines(cls: ast.ClassDef) -> int:
    """Lines of a class body that are code (docstrings, comments and blank lines do not count)."""
    first = cls.body[0]
    skip_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
    body = cls.body[1:] if skip_doc else cls.body
    lines = set()
    for stmt in body:
        for node in ast.walk(stmt):
            if hasattr(node, "lineno") and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
                lines.update(range(node.lineno, getattr(node, "end_lineno", node.lineno) + 1))
    return len(lines)


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_actors_and_deployments_are_thin_shells() -> None:
    thick = {}
    for path in SOURCES:
        for cls in shells(ast.parse(path.read_text())):
            if (n := body_lines(cls)) > MAX_SHELL_LINES:
                thick[f"{path.relative_to(ROOT)}::{cls.name}"] = n
    assert thick == {}


def test_the_shell_check_sees_actors() -> None:
    found = {cls.name for p in SOURCES for cls in shells(ast.parse(p.read_text()))}
    assert {"FeatureShardActor", "CoordinatorActor", "TrainerActor", "MonitorActor", "RolloutControllerActor"} <= found
