"""The getting-started page, followed command by command as a new user would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "getting-started.md").read_text()
COMMANDS = [
    line.strip()
    for block in re.findall(r"^```bash\n(.*?)^```", PAGE, re.S | re.M)
    for line in block.splitlines()
    if line.strip()
]

pytestmark = pytest.mark.slow


def bash(command: str, cwd: Path, timeout: float = 300) -> str:
    """Run one command from the page, as written, and return its output."""
    assert command in COMMANDS, f"not on the page as written: {command}"
    result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_every_command_on_the_page_is_exercised() -> None:
    exercised = {
        "bash scripts/demo.sh",
        ".venv/bin/pip install -q -e . -e plugins/bigquery",
        "cd examples",
        "../.venv/bin/python quickstart.py",
        "../.venv/bin/pyflyte run quickstart.py wf --path ../README.md",
        "../.venv/bin/flyteagents serve --port 8000 --metrics-port 9090 --modules quickstart",
        "../.venv/bin/flyteagents agents --endpoint 127.0.0.1:8000",
        "FLYTEAGENTS_ENDPOINT=127.0.0.1:8000 ../.venv/bin/python quickstart.py",
        "curl -s 127.0.0.1:9090/metrics | grep flyteagents_requests_total",
    }
    assert set(COMMANDS) == exercised


def test_the_demo_runs() -> None:
    out = bash("bash scripts/demo.sh", ROOT)
    assert "count=6 greeting='hello flyte' squares=[0, 1, 4] summary={'n': 3, 'word': 'flyte'}" in out


def test_installing_the_core_and_one_plugin() -> None:
    bash(".venv/bin/pip install -q -e . -e plugins/bigquery", ROOT, timeout=600)
    check = "import importlib.metadata as m; print(m.version('flyteagents'), m.version('flyteagents-bigquery'))"
    result = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", check], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.split() == ["0.1.0", "0.1.0"], result.stderr


def test_the_quickstart_runs_locally() -> None:
    out = bash("../.venv/bin/python quickstart.py", ROOT / "examples")
    assert "quickstart.file_landed: SUCCEEDED" in out
    assert "9 words, starting with 'agents'" in out
    words = len((ROOT / "README.md").read_text().split())
    out = bash("../.venv/bin/pyflyte run quickstart.py wf --path ../README.md", ROOT / "examples")
    assert f"{words} words, starting with '#'" in out


def test_the_quickstart_runs_through_the_service() -> None:
    command = "../.venv/bin/flyteagents serve --port 8000 --metrics-port 9090 --modules quickstart"
    assert command in COMMANDS
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=ROOT / "examples",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                urllib.request.urlopen("http://127.0.0.1:9090/metrics", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the service never started"
                time.sleep(0.2)
        listed = bash("../.venv/bin/flyteagents agents --endpoint 127.0.0.1:8000", ROOT / "examples")
        assert "quickstart_summary" in listed and "sensor" in listed
        out = bash("FLYTEAGENTS_ENDPOINT=127.0.0.1:8000 ../.venv/bin/python quickstart.py", ROOT / "examples")
        assert "9 words, starting with 'agents'" in out
        metrics = bash("curl -s 127.0.0.1:9090/metrics | grep flyteagents_requests_total", ROOT / "examples")
        assert 'code="OK",operation="do",task_type="quickstart_summary"} 1.0' in metrics
        assert 'code="OK",operation="create",task_type="sensor"} 1.0' in metrics
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)
    assert server.returncode == 0
