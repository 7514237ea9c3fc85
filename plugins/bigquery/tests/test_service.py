"""The BigQuery agent through flyteagents' gRPC service, driven as FlytePropeller drives it."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pandas as pd
import pytest
import pytest_asyncio
from flyteagents_bigquery import BigQueryAgent, BigQueryConfig, BigQueryTask
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import kwtypes
from helpers import execution, inputs_of, template_of

from flyteagents import AgentRegistry
from flyteagents.testing import AgentServer

PROJECT = "test-project"
CATEGORY = agent_pb2.TaskCategory(name="bigquery_query_job_task", version=0)
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(emulator):
    registry = AgentRegistry()
    # A short retry deadline keeps the outage test quick; otherwise the agent as installed.
    registry.register(BigQueryAgent(create_retry_deadline=2))
    async with AgentServer(registry, sync_workers=4) as srv:
        yield srv


async def test_the_plugin_is_found_through_its_entry_point():
    registry = AgentRegistry()
    found = registry.discover()  # as `flyteagents serve` does
    assert found["bigquery_query_job_task"] == "flyteagents_bigquery._agent:BigQueryAgent"
    assert isinstance(registry.get_agent("bigquery_query_job_task"), BigQueryAgent)
    assert [a.name for a in registry.list_agents()] == ["BigQuery Agent"]


def bq_task(query: str, **inputs: type) -> BigQueryTask:
    return BigQueryTask(
        name=f"svc_{uuid.uuid4().hex[:8]}",
        query_template=query,
        task_config=BigQueryConfig(project=PROJECT, location="US"),
        inputs=kwtypes(**inputs) if inputs else None,
        output_structured_dataset_type=pd.DataFrame,
    )


def create_request(task: BigQueryTask, run: str, **inputs) -> agent_pb2.CreateTaskRequest:
    return agent_pb2.CreateTaskRequest(
        template=template_of(task).to_flyte_idl(),
        inputs=inputs_of(task, **inputs).to_flyte_idl() if inputs else None,
        output_prefix="/tmp/out",
        task_execution_metadata=execution(run).to_flyte_idl(),
    )


async def poll(server: AgentServer, meta: bytes, limit: int = 20) -> list[agent_pb2.Resource]:
    seen = []
    for _ in range(limit):
        response = await server.async_stub.GetTask(
            agent_pb2.GetTaskRequest(task_category=CATEGORY, resource_meta=meta), timeout=10
        )
        seen.append(response.resource)
        if response.resource.phase in (TaskExecution.SUCCEEDED, TaskExecution.FAILED, TaskExecution.ABORTED):
            return seen
    raise AssertionError("the job did not finish")


async def test_create_twice_then_poll_to_success_with_outputs_link_and_info(server, emulator):
    t = bq_task("SELECT city, max(miles) AS longest FROM demo.trips WHERE id < @n GROUP BY city", n=int)
    request = create_request(t, "svc-run", n=6)
    first = await server.async_stub.CreateTask(request, timeout=30)
    again = await server.async_stub.CreateTask(request, timeout=30)  # propeller retrying a timed-out create
    assert first.resource_meta == again.resource_meta
    job_ids = [job_id for (_, job_id) in emulator.jobs if job_id.startswith("flyte_svc-run_")]
    assert len(job_ids) == 1
    seen = await poll(server, first.resource_meta)
    # the reattaching create read the job once too, which moved it past PENDING on this server
    assert [TaskExecution.Phase.Name(r.phase) for r in seen] == ["RUNNING", "SUCCEEDED"]
    done = seen[-1]
    uri = done.outputs.literals["results"].scalar.structured_dataset.uri
    assert uri.startswith(f"bq://{PROJECT}:_flyteagents_anon.")
    assert done.log_links[0].name == "BigQuery Console" and job_ids[0] in done.log_links[0].uri
    info = dict(done.custom_info)
    assert info["total_bytes_processed"] > 0 and info["slot_millis"] >= 1


async def test_delete_task_then_get_reports_aborted(server):
    t = bq_task("SELECT * FROM demo.trips")
    created = await server.async_stub.CreateTask(create_request(t, "svc-cancel"), timeout=30)
    await server.async_stub.DeleteTask(
        agent_pb2.DeleteTaskRequest(task_category=CATEGORY, resource_meta=created.resource_meta), timeout=10
    )
    last = (await poll(server, created.resource_meta))[-1]
    assert last.phase == TaskExecution.ABORTED and "cancelled" in last.message


async def test_bad_sql_is_a_failed_phase_with_the_message(server):
    t = bq_task("SELECT FROM WHERE")
    created = await server.async_stub.CreateTask(create_request(t, "svc-bad"), timeout=30)
    last = (await poll(server, created.resource_meta))[-1]
    assert last.phase == TaskExecution.FAILED
    assert "syntax error" in last.message.lower() and "Traceback" not in last.message


async def test_bigquery_outage_on_create_answers_unavailable(server, emulator):
    t = bq_task("SELECT 1 AS one")
    emulator.fail_next("POST", f"/projects/{PROJECT}/jobs", status=503, times=1000)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await server.async_stub.CreateTask(create_request(t, "svc-outage"), timeout=60)
    finally:
        emulator._faults.clear()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "503" in info.value.details() and "Traceback" not in info.value.details()
    created = await server.async_stub.CreateTask(create_request(t, "svc-outage"), timeout=30)  # propeller retries
    assert (await poll(server, created.resource_meta))[-1].phase == TaskExecution.SUCCEEDED


async def test_a_503_on_get_keeps_the_task_running(server, emulator):
    t = bq_task("SELECT 2 AS two")
    created = await server.async_stub.CreateTask(create_request(t, "svc-flaky"), timeout=30)
    emulator.fail_next("GET", "/jobs/flyte_svc-flaky_", status=503, times=1)
    first = await server.async_stub.GetTask(
        agent_pb2.GetTaskRequest(task_category=CATEGORY, resource_meta=created.resource_meta), timeout=10
    )
    assert first.resource.phase == TaskExecution.RUNNING and "503" in first.resource.message
    assert (await poll(server, created.resource_meta))[-1].phase == TaskExecution.SUCCEEDED


async def test_undecodable_resource_meta_is_invalid_argument(server):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.async_stub.GetTask(
            agent_pb2.GetTaskRequest(task_category=CATEGORY, resource_meta=b'{"job_id": 1}'), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_local_workflow_runs_through_the_service_with_flyteagents_endpoint(server, emulator, monkeypatch):
    from test_workflow import city_report

    def served(operation: str) -> float:
        labels = {"task_type": "bigquery_query_job_task", "operation": operation, "code": "OK"}
        return server.metrics.registry.get_sample_value("flyteagents_requests_total", labels) or 0.0

    creates, gets, inserts = served("create"), served("get"), emulator.count("POST", "/jobs")
    monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", server.address)
    # In a thread, as `python wf.py` would run it, so this loop keeps serving.
    top, miles = await asyncio.to_thread(city_report, min_miles=15.0, cities=["city1"])
    ids = [i for i in range(20) if i * 1.5 >= 15.0 and i % 3 == 1]
    assert (top, miles) == ("city1", pytest.approx(sum(i * 1.5 for i in ids)))
    assert emulator.count("POST", "/jobs") - inserts == 1
    assert served("create") - creates == 1  # the service, not this process, ran the agent
    assert served("get") - gets >= 3  # QUEUED, RUNNING, SUCCEEDED


async def test_concurrent_tasks_share_one_client(server):
    agent = server.registry.get_agent("bigquery_query_job_task")
    t = bq_task("SELECT @n * 2 AS doubled", n=int)
    before = agent.clients.created
    created = await asyncio.gather(
        *(server.async_stub.CreateTask(create_request(t, f"svc-many-{i}", n=i), timeout=30) for i in range(12))
    )
    finals = await asyncio.gather(*(poll(server, c.resource_meta) for c in created))
    assert all(seen[-1].phase == TaskExecution.SUCCEEDED for seen in finals)
    assert len({c.resource_meta for c in created}) == 12
    assert agent.clients.created - before <= 1  # one client per (project, credentials), whatever the load
