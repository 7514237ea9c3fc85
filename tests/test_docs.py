"""The documentation builds cleanly and every complete program in it runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def complete_programs() -> list[tuple[str, str]]:
    """Python blocks with a ``__main__`` guard, by page: the docs' runnable programs."""
    found = []
    for page in sorted([*DOCS.rglob("*.md"), ROOT / "README.md"]):
        for i, block in enumerate(FENCE.findall(page.read_text())):
            if 'if __name__ == "__main__":' in block:
                found.append((f"{page.relative_to(ROOT)}#{i}", block))
    return found


PROGRAMS = complete_programs()


def test_the_docs_have_runnable_programs() -> None:
    pages = {name.split("#")[0] for name, _ in PROGRAMS}
    assert {"docs/async-agents.md", "docs/sync-agents.md"} <= pages


@pytest.mark.slow
@pytest.mark.parametrize(("name", "source"), PROGRAMS, ids=[name for name, _ in PROGRAMS])
def test_program_runs(name: str, source: str, tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(source)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("AsyncAgentBase") > 1
