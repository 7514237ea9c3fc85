"""Databricks tasks in workflows run locally end to end: the server executes each run's entrypoint."""

from __future__ import annotations

from typing import Any

import pytest
from databricks_test_workflows import failing, pipeline

from flyteagents import TaskFailedError


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
