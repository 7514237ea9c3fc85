"""examples/kafka_sensor.py runs as a user would run it and prints what the next task made of the message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "kafka_sensor.py"
EXPECTED = "shipping order-42 (from orders[0]@"


@pytest.mark.slow
def test_example_runs_end_to_end() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert EXPECTED in result.stdout, result.stdout
