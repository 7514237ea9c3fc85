"""Databricks tasks run locally end to end, in-process and through the agent service: the local
Jobs API server executes each run's entrypoint, so outputs really flow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from databricks_test_workflows import double, failing, pipeline
from flyteagents_databricks import DatabricksAgent

from flyteagents import AgentRegistry, TaskFailedError
from flyteagents.testing import AgentServer


def test_workflow_outputs_flow_between_databricks_runs(server: Any, local_agent: Any) -> None:
    assert pipeline(x=4, word="spark") == "spark x8"
    snap = server.workspace.snapshot()
    runs = list(snap["runs"].values())
    assert len(runs) == 2
    for run in runs:
        task = run["payload"]["tasks"][0]
        params = task["spark_python_task"]["parameters"]
        assert params[0] == "pyflyte-execute"
        assert not any("{{" in p for p in params), params
        assert task["new_cluster"]["docker_image"]["url"]
        assert task["new_cluster"]["spark_env_vars"]["FLYTE_FAIL_ON_ERROR"] == "true"
        assert task["new_cluster"]["spark_env_vars"]["CLUSTER_OWNED"] == "yes"
        assert task["new_cluster"]["spark_conf"] == {"spark.speculation": "false"}
        assert run["payload"]["idempotency_token"].startswith("flyte-")
        assert run["history"][:3] == ["PENDING", "QUEUED", "RUNNING"]
        assert run["history"][-2:] == ["TERMINATING", "TERMINATED:SUCCESS"]


def test_failed_run_message_reaches_the_user(server: Any, local_agent: Any) -> None:
    with pytest.raises(TaskFailedError) as info:
        failing(x=7)
    text = str(info.value)
    assert "FAILED" in text
    assert "cannot handle x=7" in text


@pytest.mark.asyncio(loop_scope="session")
async def test_task_runs_through_the_agent_service(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = AgentRegistry()
    registry.register(DatabricksAgent())
    async with AgentServer(registry) as service:
        monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", service.address)
        # The local run blocks its thread; the service answers on this loop meanwhile.
        result = await asyncio.to_thread(double, x=21)
    assert result == 42
    (run,) = server.workspace.snapshot()["runs"].values()
    assert run["history"][-1] == "TERMINATED:SUCCESS"
