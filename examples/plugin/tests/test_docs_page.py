"""docs/writing-a-plugin.md quotes this plugin: every line it shows is the plugin's own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parent.parent
PAGE = PLUGIN.parent.parent / "docs" / "writing-a-plugin.md"
FENCE = re.compile(r"^```(python|toml)\n(.*?)^```", re.S | re.M)


def _code(line: str) -> str:
    """A line without its comment and surrounding space (quoted code may trim or reword comments)."""
    return line.split("  #")[0].strip()


def _quoted_blocks() -> list[tuple[str, str]]:
    if not PAGE.exists():  # the plugin copied out of the repository, without its docs
        pytest.skip("docs/writing-a-plugin.md is not beside this plugin")
    return FENCE.findall(PAGE.read_text())


def test_every_quoted_line_is_in_the_plugin() -> None:
    sources = [*(PLUGIN / "src").rglob("*.py"), *(PLUGIN / "tests").glob("*.py"), PLUGIN / "pyproject.toml"]
    known = {_code(line) for path in sources for line in path.read_text().splitlines()}
    blocks = _quoted_blocks()
    assert len(blocks) >= 4
    missing = [
        line
        for _, block in blocks
        for line in map(_code, block.splitlines())
        if line and line != "..." and not line.startswith("#") and line not in known
    ]
    assert missing == []
