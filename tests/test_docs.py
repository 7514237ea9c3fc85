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
    command = "bash scripts/docs.sh build"
    assert command in (ROOT / "README.md").read_text()  # the README's command, as written
    result = subprocess.run(
        [*command.split(), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not re.search(r"warning", result.stdout + result.stderr, re.I), result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert api.count("AsyncAgentBase") > 1
    # Every "Example" section of the API reference shows its example as highlighted code.
    examples = re.findall(r'<details class="example" open>\s*<summary>Example</summary>(.*?)</details>', api, re.S)
    assert len(examples) >= 8  # AsyncAgentBase, SyncAgentBase, ResourceMeta, BaseSensor, sync_agent, FileSensor, ...
    for example in examples:
        assert '<div class="highlight"><pre>' in example and "<blockquote>" not in example, example
