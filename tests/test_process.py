"""ServerProcess: start waits until ready, a failed start reports the output, stop always ends it."""

from __future__ import annotations

import sys
import urllib.request

import pytest

from flyteagents.testing import ServerProcess


class HttpServer(ServerProcess):
    name = "http.server"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", str(self.port), "--bind", self.host]


class Crashing(ServerProcess):
    name = "crasher"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "print('boom: bad flag'); raise SystemExit(3)"]


def test_start_waits_until_the_port_answers_and_stop_ends_it() -> None:
    with HttpServer() as server:
        assert server.running and server.pid is not None
        with urllib.request.urlopen(f"http://{server.host}:{server.port}/", timeout=5) as resp:
            assert resp.status == 200
        port, proc = server.port, server._proc
        assert server.restart() is server and server.port == port and server._proc is not proc
    assert not server.running and proc is not None and proc.poll() is not None


def test_a_server_that_exits_reports_its_output() -> None:
    server = Crashing(startup_timeout=10)
    with pytest.raises(RuntimeError, match=r"crasher did not start on 127\.0\.0\.1:\d+: boom: bad flag"):
        server.start()
    assert not server.running
