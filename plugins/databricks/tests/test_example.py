"""examples/databricks_task.py runs as documented: it starts the local Jobs API server and prints the outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_example_runs_against_the_local_server() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTEAGENTS_", "FLYTE_DATABRICKS"))}
    done = subprocess.run(
        [sys.executable, "examples/databricks_task.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stats=WordStats(words=10, distinct=8, longest='question') distinct/words=0.8" in done.stdout
    assert "refresh_dashboard: SUCCEEDED" in done.stderr
