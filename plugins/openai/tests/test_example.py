"""examples/openai_chatgpt.py runs as a user runs it, against the fake server it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "openai_chatgpt.py"


@pytest.mark.slow
def test_example_runs_with_python(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "FLYTE_OPENAI"))}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "summary='(Explain the topic in one short sentence.) echo: flyte agents'" in lines
    assert "batch: 'echo: Why use flyte agents?'" in lines
    assert "sk-example" not in done.stdout + done.stderr
