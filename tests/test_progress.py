"""Progress of local runs: phase, message, log links, elapsed time, pokes; periodic lines when piped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flyteidl.core.execution_pb2 import TaskExecution, TaskLog

from flyteagents import Resource
from flyteagents._local import _Reporter

ROOT = Path(__file__).resolve().parent.parent


def lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("[flyteagents]")]


def test_a_job_shows_phase_message_links_and_elapsed_time(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = _Reporter("report", period=3600)
    link = TaskLog(name="console", uri="https://console/run/7")
    reporter.update(Resource(phase=TaskExecution.QUEUED, message="queued"))
    reporter.update(Resource(phase=TaskExecution.RUNNING, message="step 1", log_links=[link]))
    reporter.update(Resource(phase=TaskExecution.RUNNING, message="step 1", log_links=[link]))  # no change
    reporter.update(Resource(phase=TaskExecution.SUCCEEDED))
    reporter.close()
    shown = lines(capsys.readouterr().err)
    assert [re.sub(r"\d+\.\ds", "Ns", line) for line in shown] == [
        "[flyteagents] report: QUEUED - queued (Ns)",
        "[flyteagents] report: RUNNING - step 1 [console: https://console/run/7] (Ns)",
        "[flyteagents] report: SUCCEEDED after Ns",
    ]


def test_an_unchanged_run_prints_a_line_every_period(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = _Reporter("wait_for_file", pokes=True, period=0.2)
    waiting = Resource(phase=TaskExecution.RUNNING, message="waiting")
    deadline = time.monotonic() + 0.7
    while time.monotonic() < deadline:
        reporter.update(waiting, next_in=0.05)
        time.sleep(0.05)
    reporter.update(Resource(phase=TaskExecution.SUCCEEDED), next_in=0.05)
    shown = lines(capsys.readouterr().err)
    assert 3 <= len(shown) - 1 <= 5  # the first line, then one every 0.2 s, then the end
    counts = [int(m[1]) for line in shown[:-1] if (m := re.search(r", (\d+) pokes?, next in 0\.1s\)$", line))]
    assert len(counts) == len(shown) - 1 and counts[0] == 1 and counts == sorted(counts)
    elapsed = [float(m[1]) for line in shown[:-1] if (m := re.search(r"\((\d+\.\d)s,", line))]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= 0.4
    assert re.fullmatch(r"\[flyteagents\] wait_for_file: SUCCEEDED after 0\.\ds, \d+ pokes", shown[-1])


def test_minutes_and_hours_read_short() -> None:
    from flyteagents._local import _seconds

    assert [_seconds(s) for s in (0.04, 59.94, 65, 3600 * 2 + 125)] == ["0.0s", "59.9s", "1m05s", "2h02m"]


@pytest.mark.slow
def test_a_piped_local_sensor_run_shows_its_pokes(tmp_path: Path) -> None:
    env = dict(os.environ, FLYTEAGENTS_PROGRESS_PERIOD="0.3")
    env.pop("FLYTEAGENTS_ENDPOINT", None)
    done = subprocess.run(
        [sys.executable, "quickstart.py"], cwd=ROOT / "examples", env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    shown = lines(done.stderr)
    waiting = [line for line in shown if "file_landed: RUNNING - waiting" in line]
    assert len(waiting) >= 2, shown  # the file lands after a second: at least one periodic line
    assert all(re.search(r"\(\d+\.\ds, \d+ pokes?, next in 0\.2s\)$", line) for line in waiting), waiting
    assert re.search(r"file_landed: SUCCEEDED after \d+\.\ds, \d+ pokes$", shown[-1]), shown
    assert "via agent service" not in done.stderr
