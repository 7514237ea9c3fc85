"""DatabricksNotebookTask from a Flyte 2 TaskEnvironment, on the local Jobs API server: locally and
through `flyteagents serve` over v2."""

from __future__ import annotations

import asyncio
from typing import Any

import flyte
import pytest
from flyteagents_databricks.flyte2 import Databricks, DatabricksNotebookTask

from flyteagents import AgentRegistry
from flyteagents.testing.flyte2 import AgentService, run_on_service, serialize

report = DatabricksNotebookTask(
    name="f2_report_notebook",
    notebook_path="/Shared/report",
    task_config=Databricks(databricks_conf={"existing_cluster_id": "0101-abc"}),
    base_parameters={"mode": "full"},
    inputs={"day": str},
    retries=1,
)
databricks_env = flyte.TaskEnvironment.from_task("f2_databricks", report)
env = flyte.TaskEnvironment(name="f2_reports", depends_on=[databricks_env])


@env.task
async def daily(day: str) -> str:
    await report(day=day)
    return f"report for {day} done"


@pytest.fixture(scope="module", autouse=True)
def initialized():
    flyte.init()


@pytest.fixture(autouse=True)
def fresh_registry():
    """A local run registers the installed agent on first use; forget it, so it reads each test's server."""
    AgentRegistry.default().clear()
    yield
    AgentRegistry.default().clear()


def notebook_runs(server: Any) -> list[dict[str, Any]]:
    runs = server.workspace.snapshot()["runs"].values()
    return [r for r in runs if "notebook_task" in r["payload"]["tasks"][0]]


def test_the_template_is_the_flytekit_tasks():
    template = serialize(report)
    custom = dict(template.custom)
    assert template.type == "databricks"
    assert custom["notebookPath"] == "/Shared/report" and dict(custom["notebookBaseParameters"]) == {"mode": "full"}
    assert [v.key for v in template.interface.inputs.variables] == ["day"]


@pytest.fixture
def quick(server, make_server, monkeypatch):
    """A server whose runs do not execute and succeed after 0.1 s (``server`` has set the token)."""
    srv = make_server(execute=False, run_seconds=0.1)
    monkeypatch.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", srv.instance)
    return srv


def test_a_local_run_submits_the_notebook_and_the_next_step_follows(quick):
    server = quick
    out = flyte.with_runcontext(mode="local").run(daily, day="2026-11-30").outputs()[0]
    assert out == "report for 2026-11-30 done"
    (run,) = notebook_runs(server)
    assert run["payload"]["tasks"][0]["notebook_task"] == {
        "notebook_path": "/Shared/report",
        "base_parameters": {"mode": "full", "day": "2026-11-30"},
    }
    assert run["history"][-1] == "TERMINATED:SUCCESS"


def test_through_the_service_over_v2(quick):
    server = quick
    with AgentService() as service:  # it inherits the instance and the token from this environment
        assert asyncio.run(run_on_service(service.address, report, day="2026-12-01")) is None
    (run,) = notebook_runs(server)
    assert run["payload"]["tasks"][0]["notebook_task"]["base_parameters"]["day"] == "2026-12-01"
    assert run["payload"]["idempotency_token"].startswith("flyte-")
