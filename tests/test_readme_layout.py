"""The README's layout table lists every module, in the row of its folder."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_rows() -> dict[str, str]:
    """README table rows keyed by the folder in their first cell (``actors/stream/``)."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z_/]+/)`\s*\|(.*)$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_module_is_listed_in_its_folder_row() -> None:
    rows = layout_rows()
    missing = []
    for folder in ("streamfit", "actors", "serve", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "__init__.py":
                continue
            key = f"{path.parent.relative_to(ROOT)}/"
            if f"`{path.name}`" not in rows.get(key, ""):
                missing.append(f"{key}{path.name}")
    assert missing == []


def test_every_listed_module_exists() -> None:
    stale = []
    for folder, row in layout_rows().items():
        for name in re.findall(r"`([a-z_]+\.py)`", row):
            if not (ROOT / folder / name).exists():
                stale.append(f"{folder}{name}")
    assert stale == []
