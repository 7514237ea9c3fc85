"""A workflow author's local runs: ``python wf.py``, ``pyflyte run``, and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custom_agent.py"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def test_python_runs_the_workflow(example_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=example_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "count=6 greeting='hello flyte' squares=[0, 1, 4] summary={'n': 3, 'word': 'flyte'}" in result.stdout
    assert "report=['flyte', 'flyte', 'flyte'] loud='HELLO FLYTE' length=11" in result.stdout


def test_pyflyte_run_runs_the_workflow(example_env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(BIN / "pyflyte"), "run", str(EXAMPLE), "wf", "--n", "2", "--word", "ok"],
        env=example_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "o0=4, o1='hello ok', o2=[0, 1], o3=Summary(n=2, word='ok')" in result.stdout
    assert "o5='HELLO OK', o6=8" in result.stdout


def test_ctrl_c_deletes_the_running_job_once(example_env: dict[str, str], jobs_dir: Path) -> None:
    env = dict(example_env, FLYTEAGENTS_EXAMPLE_DURATION="120")
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not list(jobs_dir.glob("*.json")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the job was never created"
            time.sleep(0.05)
        time.sleep(0.3)  # let it poll a few times
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (job_file,) = jobs_dir.glob("*.json")
    assert proc.returncode == -signal.SIGINT, "it ends as a process stopped by Ctrl-C does"
    assert "[flyteagents] stopped by Ctrl-C; the job it had started was cancelled" in err, err
    assert "Traceback" not in err, "one line, not a traceback through flytekit's frames"
    assert (jobs_dir / "deletions.log").read_text().split() == [job_file.stem]
    assert '"state": "CANCELLED"' in job_file.read_text()


def test_a_terminal_gets_a_live_progress_line(example_env: dict[str, str]) -> None:
    import pty

    env = dict(example_env, FLYTEAGENTS_EXAMPLE_DURATION="1", TERM="xterm")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "report: RUNNING - writing report" in screen
    assert "\x1b[" in screen  # redrawn in place with terminal control sequences
    assert "[flyteagents] report: RUNNING" not in proc.stderr.read().decode()  # type: ignore[union-attr]
