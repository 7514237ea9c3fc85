"""``flyteagents serve`` on a port it cannot have fails in one line naming the port and its flag."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FLYTEAGENTS = str(Path(sys.executable).parent / "flyteagents")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on (the system picks it)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [FLYTEAGENTS, "serve", "--host", "127.0.0.1", "--log-level", "WARNING", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_a_busy_grpc_port_is_one_line_naming_the_flag(busy_port: int) -> None:
    done = serve("--port", str(busy_port), "--metrics-port", "0")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: cannot listen on gRPC port {busy_port} on 127.0.0.1 (--port): Address already in use"
    ]
    assert done.stdout == ""  # it failed before loading and listing any agent


def test_a_busy_metrics_port_is_one_line_naming_the_flag(busy_port: int) -> None:
    done = serve("--port", "0", "--metrics-port", str(busy_port))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: cannot listen on metrics port {busy_port} on 127.0.0.1 (--metrics-port): Address already in use"
    ]


def test_a_second_service_on_the_same_grpc_port_fails_instead_of_sharing_it() -> None:
    # gRPC sets SO_REUSEPORT by default on Linux: without turning it off, a second service on the port
    # of a running one would start and take half of its calls.
    first = subprocess.Popen(
        [FLYTEAGENTS, "serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if found := re.search(r"serving on 127\.0\.0\.1:(\d+)", line):
                port = int(found[1])
                break
        else:
            raise AssertionError("the first service never said where it serves")
        done = serve("--port", str(port), "--metrics-port", "-1")
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            f"Error: cannot listen on gRPC port {port} on 127.0.0.1 (--port): Address already in use"
        ]
        assert first.poll() is None
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.wait(timeout=60)
