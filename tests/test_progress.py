"""Progress of local runs: phase, message, log links, elapsed time, pokes; periodic lines when piped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flyteidl.core.execution_pb2 import TaskExecution, TaskLog

from flyteagents import Resource
from flyteagents._local import _Reporter


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
    now = [100.0]
    reporter = _Reporter("wait_for_file", pokes=True, period=30, clock=lambda: now[0])
    waiting = Resource(phase=TaskExecution.RUNNING, message="waiting")
    for _ in range(13):  # a poke every 10 s for two minutes
        reporter.update(waiting, next_in=10)
        now[0] += 10
    reporter.update(Resource(phase=TaskExecution.SUCCEEDED), next_in=10)
    assert lines(capsys.readouterr().err) == [
        "[flyteagents] wait_for_file: RUNNING - waiting (0.0s, 1 poke, next in 10.0s)",
        "[flyteagents] wait_for_file: RUNNING - waiting (30.0s, 4 pokes, next in 10.0s)",
        "[flyteagents] wait_for_file: RUNNING - waiting (1m00s, 7 pokes, next in 10.0s)",
        "[flyteagents] wait_for_file: RUNNING - waiting (1m30s, 10 pokes, next in 10.0s)",
        "[flyteagents] wait_for_file: RUNNING - waiting (2m00s, 13 pokes, next in 10.0s)",
        "[flyteagents] wait_for_file: SUCCEEDED after 2m10s, 14 pokes",
    ]


def test_a_bad_period_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTEAGENTS_PROGRESS_PERIOD", "half a minute")
    with pytest.raises(ValueError, match="PROGRESS_PERIOD must be a number of seconds, not 'half a minute'"):
        _Reporter("report")


def test_minutes_and_hours_read_short() -> None:
    from flyteagents._local import _seconds

    assert [_seconds(s) for s in (0.04, 59.94, 65, 3600 * 2 + 125)] == ["0.0s", "59.9s", "1m05s", "2h02m"]


SENSOR_SCRIPT = """
from flytekit import workflow

from flyteagents import sensor

POKES = []


@sensor(poke_interval=0.05)
def fifth_time_lucky() -> bool:
    POKES.append(1)
    return len(POKES) == 5


@workflow
def wf() -> None:
    fifth_time_lucky()


if __name__ == "__main__":
    wf()
"""


@pytest.mark.slow
def test_a_piped_local_sensor_run_shows_its_pokes(tmp_path: Path) -> None:
    (tmp_path / "lucky.py").write_text(SENSOR_SCRIPT)
    env = dict(os.environ, FLYTEAGENTS_PROGRESS_PERIOD="0")  # a line for every poke
    env.pop("FLYTEAGENTS_ENDPOINT", None)
    done = subprocess.run(
        [sys.executable, "lucky.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    shown = [re.sub(r"\d+\.\ds", "Ns", line) for line in lines(done.stderr)]
    assert shown == [
        *(f"[flyteagents] lucky.fifth_time_lucky: RUNNING - waiting (Ns, {n}, next in Ns)" for n in
          ["1 poke", "2 pokes", "3 pokes", "4 pokes"]),
        "[flyteagents] lucky.fifth_time_lucky: SUCCEEDED after Ns, 5 pokes",
    ]  # fmt: skip
    assert "via agent service" not in done.stderr
