"""The BigQuery agent answering Flyte 2's connector protocol (flyteidl2), with no change to the agent."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
import pytest_asyncio
from flyteagents_bigquery import BigQueryAgent, BigQueryConfig, BigQueryTask
from flyteidl.admin import agent_pb2
from flyteidl2.connector import connector_pb2
from flyteidl2.core.execution_pb2 import TaskExecution
from flytekit import kwtypes
from helpers import execution, inputs_of, template_of

from flyteagents import AgentRegistry
from flyteagents.testing import AgentServer

PROJECT = "test-project"
CATEGORY = connector_pb2.TaskCategory(name="bigquery_query_job_task", version=0)
pytestmark = pytest.mark.asyncio(loop_scope="session")


def bq_task(query: str, **inputs: type) -> BigQueryTask:
    return BigQueryTask(
        name=f"v2_{uuid.uuid4().hex[:8]}",
        query_template=query,
        task_config=BigQueryConfig(project=PROJECT, location="US"),
        inputs=kwtypes(**inputs) if inputs else None,
        output_structured_dataset_type=pd.DataFrame,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(emulator):
    registry = AgentRegistry()
    registry.register(BigQueryAgent())
    async with AgentServer(registry, sync_workers=4) as srv:
        yield srv


async def poll(server: AgentServer, meta: bytes) -> connector_pb2.Resource:
    for _ in range(20):
        response = await server.connector_stub.GetTask(
            connector_pb2.GetTaskRequest(task_category=CATEGORY, resource_meta=meta, output_prefix="/tmp/out"),
            timeout=10,
        )
        if response.resource.phase in (TaskExecution.SUCCEEDED, TaskExecution.FAILED, TaskExecution.ABORTED):
            return response.resource
    raise AssertionError("the job did not finish")


def v2_create(task: BigQueryTask, run: str, **inputs) -> connector_pb2.CreateTaskRequest:
    """The task's template, inputs and execution metadata as Flyte 2's backend sends them (flyteidl2 messages)."""
    v1 = agent_pb2.CreateTaskRequest(
        template=template_of(task).to_flyte_idl(),
        inputs=inputs_of(task, **inputs).to_flyte_idl() if inputs else None,
        output_prefix="/tmp/out",
        task_execution_metadata=execution(run).to_flyte_idl(),
    )
    return connector_pb2.CreateTaskRequest.FromString(v1.SerializeToString())


async def test_a_query_runs_to_success_with_its_results_as_v2_outputs(server, emulator):
    t = bq_task("SELECT city, max(miles) AS longest FROM demo.trips WHERE id < @n GROUP BY city", n=int)
    created = await server.connector_stub.CreateTask(v2_create(t, "v2-run", n=6), timeout=30)
    done = await poll(server, created.resource_meta)
    assert done.phase == TaskExecution.SUCCEEDED
    (results,) = done.outputs.literals
    assert results.name == "results"
    assert results.value.scalar.structured_dataset.uri.startswith("bq://test-project:_flyteagents_anon.")
    assert done.log_links[0].name == "BigQuery Console"
    assert any(job_id.startswith("flyte_v2-run_") for (_, job_id) in emulator.jobs)


async def test_delete_cancels_and_get_reports_aborted(server):
    created = await server.connector_stub.CreateTask(v2_create(bq_task("SELECT * FROM demo.trips"), "v2-cancel"))
    await server.connector_stub.DeleteTask(
        connector_pb2.DeleteTaskRequest(task_category=CATEGORY, resource_meta=created.resource_meta), timeout=10
    )
    last = await poll(server, created.resource_meta)
    assert last.phase == TaskExecution.ABORTED and "cancelled" in last.message
