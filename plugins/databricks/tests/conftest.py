"""Fixtures: a local Databricks Jobs API 2.1 server, and the agent pointed at it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flyteagents_databricks import DatabricksAgent, DatabricksSettings

from flyteagents import AgentRegistry

HERE = Path(__file__).parent
TOKEN = "dapi-test-0123456789abcdef"


def _load_server_module() -> Any:
    name = "flyteagents_databricks_tests_jobs_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "jobs_server.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


jobs_server_module = _load_server_module()
# The workflows module is imported by its top-level name, as the runs' subprocesses import it.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture
def make_server() -> Iterator[Any]:
    """Start Jobs API servers with these Workspace options (``tls=(cert, key)``: https); all stop after the test."""
    servers = []

    def make(tls: tuple[str, str] | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("code_path", [str(HERE)])
        ws = jobs_server_module.Workspace({TOKEN}, **kwargs)
        server = jobs_server_module.JobsServer(ws, tls=tls).serve_in_thread()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def server(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A server that runs submitted tasks, set as the default workspace with the token as a secret."""
    srv = make_server()
    monkeypatch.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", srv.instance)
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    return srv


@pytest.fixture
def idle(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A server whose runs do not execute and last until cancelled."""
    srv = make_server(execute=False, run_seconds=float("inf"))
    monkeypatch.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", srv.instance)
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    return srv


@pytest.fixture
def agent(server: Any) -> DatabricksAgent:
    return DatabricksAgent(DatabricksSettings.from_env())


@pytest.fixture
def local_agent(agent: DatabricksAgent) -> Iterator[DatabricksAgent]:
    """The agent local workflow runs use (the default registry's), pointed at this test's server."""
    AgentRegistry.register(agent, override=True)
    yield agent
    AgentRegistry.default().clear()
