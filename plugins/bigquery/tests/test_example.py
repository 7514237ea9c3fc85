"""examples/bigquery_sql.py runs as a user would run it, against the local BigQuery server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run_example(name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` as a user would, with no emulator or credentials of the caller's; it must succeed."""
    env = {k: v for k, v in os.environ.items() if k not in ("BIGQUERY_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_example_runs_against_the_local_server(tmp_path: Path) -> None:
    result = run_example("bigquery_sql.py", tmp_path)
    ids = [i for i in range(20) if i * 1.5 >= 6.0 and i % 3 in (0, 2)]
    trips = {c: sum(1 for i in ids if i % 3 == c) for c in (0, 2)}
    top = min(trips, key=lambda c: (-trips[c], c))
    expected = f"2 cities; busiest city{top} with {trips[top]} trips, {sum(i * 1.5 for i in ids):.1f} miles in all"
    assert expected in result.stdout
    assert "SUCCEEDED" in result.stderr  # the local executor's progress lines


@pytest.mark.slow
def test_flyte2_example_waits_for_the_file_then_queries(tmp_path: Path) -> None:
    result = run_example("flyte2_pipeline.py", tmp_path)
    ids = [i for i in range(20) if i * 1.5 >= 6.0]
    trips = {c: sum(1 for i in ids if i % 3 == c) for c in range(3)}
    top = min(trips, key=lambda c: (-trips[c], c))
    assert f"3 cities over 6.0 miles; busiest city{top} with {trips[top]} trips" in result.stdout
    assert "wait_for_threshold: SUCCEEDED" in result.stderr and "f2_trips_by_city: SUCCEEDED" in result.stderr
