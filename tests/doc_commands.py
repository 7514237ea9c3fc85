"""Read commands and code out of the documentation, so tests execute what a page says and the page cannot drift."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "Command", "code_block", "commands"]

ROOT = Path(__file__).resolve().parent.parent


def _blocks(page: Path, language: str) -> list[str]:
    fence = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M)
    return fence.findall(page.read_text())


def code_block(page: str | Path, language: str, containing: str) -> str:
    """The one fenced ``language`` block of ``page`` (relative to the repository) that contains ``containing``."""
    found = [block for block in _blocks(ROOT / page, language) if containing in block]
    assert len(found) == 1, f"{page}: {len(found)} {language} blocks contain {containing!r}"
    return found[0]


@dataclass(frozen=True)
class Command:
    """A shell command line: the variables it sets (``export`` lines and ``VAR=value`` prefixes) and its argv."""

    env: dict[str, str]
    argv: list[str]
    background: bool


def commands(page: str | Path, containing: str, replace: dict[str, str] | None = None) -> list[Command]:
    """The commands of the one ``bash`` block of ``page`` that contains ``containing``, as a shell would read them.

    ``export`` lines set variables for the commands after them. ``replace`` substitutes text
    first (the docs' example ports and file paths for a test's own); each key must appear in
    the block, so a changed page fails the test instead of running something else.
    """
    text = code_block(page, "bash", containing).replace("\\\n", " ")
    for old, new in (replace or {}).items():
        assert old in text, f"{page}: {old!r} is no longer in the documented commands:\n{text}"
        text = text.replace(old, new)
    exported: dict[str, str] = {}
    found = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "export":
            exported.update(word.split("=", 1) for word in words[1:])  # type: ignore[misc]
            continue
        background = words[-1] == "&"
        words = words[:-1] if background else words
        env = dict(exported)
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        found.append(Command(env, words, background))
    return found
