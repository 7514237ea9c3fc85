"""DatabricksNotebookTask from a Flyte 2 TaskEnvironment, on the local Jobs API server: locally and
through `flyteagents serve` over v2."""

from __future__ import annotations

import asyncio
from pathlib import Path
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


# ---- a Python function run on Databricks ---------------------------------------------------------


@pytest.fixture
def function_runs(server, monkeypatch):
    """The Jobs server that executes runs; flyte resolves the tasks' module from this directory."""
    flyte.init(root_dir=Path(__file__).parent)
    yield server
    flyte.init()


def test_a_local_run_executes_the_function_on_databricks_and_returns_its_output(function_runs):
    import flyte2_databricks_tasks as d

    out = flyte.with_runcontext(mode="local").run(d.describe, x=21).outputs()[0]
    assert out == "doubled on Databricks: 42"
    (run,) = function_runs.workspace.snapshot()["runs"].values()
    task = run["payload"]["tasks"][0]
    params = task["spark_python_task"]["parameters"]
    assert params[0] == "a0"  # flyte's own entrypoint ran the function on the cluster
    assert params[params.index("--resolver") + 1 :][-4:] == ["mod", "flyte2_databricks_tasks", "instance", "double"]
    assert task["new_cluster"]["spark_env_vars"]["CLUSTER_OWNED"] == "yes"
    assert run["history"][-1] == "TERMINATED:SUCCESS"


def test_a_failing_function_fails_the_local_run_with_its_error(function_runs):
    import flyte2_databricks_tasks as d

    with pytest.raises(Exception, match="FAILED"):
        flyte.with_runcontext(mode="local").run(d.explode, x=7)


def test_the_function_runs_through_the_service_over_v2(function_runs, tmp_path, monkeypatch):
    import flyte2_databricks_tasks as d

    template = serialize(d.double)
    assert template.type == "databricks" and template.container.args[0] == "a0"
    assert dict(dict(template.custom)["databricksConf"])["new_cluster"]["node_type_id"] == "m5.large"
    # What a Flyte 2 cluster's runs find in their environment (a pod gets them from the backend).
    for name, value in {
        "FLYTE_INTERNAL_EXECUTION_PROJECT": "p",
        "FLYTE_INTERNAL_EXECUTION_DOMAIN": "d",
        "_U_ORG_NAME": "o",
        "_U_RUN_BASE": str(tmp_path / "base"),
    }.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "out").mkdir()
    with AgentService() as service:
        doubled = asyncio.run(run_on_service(service.address, d.double, output_prefix=str(tmp_path / "out"), x=2))
    assert doubled == 4  # read from the outputs.pb the function's run wrote
    (run,) = function_runs.workspace.snapshot()["runs"].values()
    assert run["payload"]["tasks"][0]["spark_python_task"]["parameters"][0] == "a0"
    assert run["history"][-1] == "TERMINATED:SUCCESS"
