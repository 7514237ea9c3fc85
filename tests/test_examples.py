"""The core's examples run as a user runs them (the plugins' examples are tested by each plugin)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.slow


def test_file_sensor_waits_for_the_file_and_reads_it() -> None:
    result = subprocess.run(
        [sys.executable, "file_sensor.py"], cwd=EXAMPLES, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "wait_for_export: RUNNING" in result.stderr
    assert "rows: 3" in result.stdout


def test_http_sensor_waits_for_a_late_api_with_a_token_and_reads_its_answer() -> None:
    result = subprocess.run(
        [sys.executable, "http_sensor.py"], cwd=EXAMPLES, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "job_done: RUNNING - poke error 1/20: ConnectionError" in result.stderr  # not up yet
    assert "job_done: SUCCEEDED after " in result.stderr
    assert "demo-token" not in result.stderr
    assert "rows: 3" in result.stdout


def test_time_sensor_waits_a_second_or_until_a_moment() -> None:
    result = subprocess.run(
        [sys.executable, "time_sensor.py"], cwd=EXAMPLES, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    waiting = next(line for line in result.stderr.splitlines() if "settle: RUNNING - waiting (" in line)
    assert ", 1 poke, next in " in waiting
    assert result.stdout.startswith("waited until ")
    past = subprocess.run(
        [sys.executable, "time_sensor.py", "2020-01-01T00:00:00+00:00"],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert past.returncode == 0, past.stderr
    assert "waited until 2020-01-01T00:00:00+00:00" in past.stdout


def test_every_example_is_tested_somewhere() -> None:
    root = EXAMPLES.parent
    tests = "".join(p.read_text() for p in [*root.glob("tests/*.py"), *root.glob("plugins/*/tests/*.py")])
    for example in EXAMPLES.glob("*.py"):
        assert example.name in tests or example.stem in tests, f"no test runs examples/{example.name}"
