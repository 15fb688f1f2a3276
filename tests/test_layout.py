"""The README's code layout names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layout_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Code layout\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_module_has_its_place_in_the_layout() -> None:
    named = set(re.findall(r"`([a-z_]+\.py)`", _layout_section()))
    modules = {p.name for p in (ROOT / "tempwatch").glob("*.py")} - {"__init__.py", "__main__.py"}
    assert modules - named == set(), "add these to the README's Code layout"
    assert named - modules == set(), "the README's Code layout names modules that are gone"
