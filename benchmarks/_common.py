"""Helpers the benchmarks share: a free loopback port, a process's CPU time, an agent service process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

from flyteidl.admin import agent_pb2
from flyteidl.core import identifier_pb2

from flyteagents.testing import ServerProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
VENV_BIN = Path(sys.executable).parent


def serve_command(*args: str) -> list[str]:
    """``flyteagents serve *args`` on loopback, stopping at once on SIGTERM (no drain: no load balancer to tell)."""
    return [str(VENV_BIN / "flyteagents"), "serve", "--host", "127.0.0.1", "--grace-period", "0", *args]


def finish(held: bool) -> NoReturn:
    """End a run with its verdict: print it, and exit 0 when every floor held, 1 when one was missed."""
    print("all floors hold" if held else "some floors MISSED", flush=True)
    sys.exit(0 if held else 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads, live and exited) has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def closed_loop(call: Callable[[], Awaitable[object]], requests: int, concurrency: int) -> list[float]:
    """Make ``requests`` calls, ``concurrency`` in flight, each starting when one ends; their latencies in seconds."""
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop a process started with ``start_new_session=True`` and its children: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def execution_metadata() -> agent_pb2.TaskExecutionMetadata:
    """The task execution metadata FlytePropeller sends with CreateTask and ExecuteTaskSync."""
    return agent_pb2.TaskExecutionMetadata(
        task_execution_id=identifier_pb2.TaskExecutionIdentifier(
            task_id=identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project="p", domain="d", name="t"),
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                node_id="n0", execution_id=identifier_pb2.WorkflowExecutionIdentifier(project="p", domain="d", name="e")
            ),
        ),
        namespace="p-d",
        k8s_service_account="default",
    )


class ServiceProcess(ServerProcess):
    """An agent service (``flyteagents serve``, ``pyflyte serve connector``) in its own process.

    ``start()`` runs it and returns once its port accepts connections; ``stop()`` ends it.
    """

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str]) -> None:
        super().__init__(port=port, startup_timeout=180.0)
        self.name = name
        self._argv = argv
        self._env = env

    def command(self) -> list[str]:
        """The service's command line."""
        return self._argv

    def environment(self) -> dict[str, str]:
        """The service's environment."""
        return self._env


# Runs `pyflyte serve connector` unchanged, except that its gRPC and Prometheus servers
# listen on loopback only (the CLI always binds every interface).
FLYTEKIT_LAUNCHER = """
import sys, grpc.aio, prometheus_client
_server = grpc.aio.server
def server(*args, **kwargs):
    s = _server(*args, **kwargs)
    add = s.add_insecure_port
    s.add_insecure_port = lambda address: add(address.replace("[::]", "127.0.0.1"))
    return s
grpc.aio.server = server
_http = prometheus_client.start_http_server
prometheus_client.start_http_server = lambda port, addr="", **kw: _http(port, addr="127.0.0.1", **kw)
from flytekit.clis.sdk_in_container.pyflyte import main
sys.argv = ["pyflyte", "serve", "connector", *sys.argv[1:]]
main()
"""
