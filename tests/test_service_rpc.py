"""Every RPC of the agent service and every error code, over a real channel with the flyteidl stubs."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from google.protobuf import json_format
from grpc_health.v1 import health_pb2

from flyteagents import (
    AgentNotFoundError,
    AgentTimeoutError,
    ExternalServiceError,
    InvalidTaskError,
    TaskCategory,
)
from flyteagents.client import RemoteBackend, RemoteJob
from flyteagents.server import SERVICE_NAMES, TaskLogFilter
from flyteagents.testing import AgentServer

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server():
    async with AgentServer(sa.make_registry(), sync_workers=4) as server:
        yield server


def job_agent(server: AgentServer) -> sa.JobAgent:
    agent = server.registry.get_agent(sa.JOB_TYPE)
    assert isinstance(agent, sa.JobAgent)
    return agent


async def create(server: AgentServer, outcome: str = "ok", name: str = "exec1") -> bytes:
    response = await server.async_stub.CreateTask(sa.create_request(sa.JOB_TYPE, name=name, outcome=outcome))
    return response.resource_meta


def get_request(meta: bytes, task_type: str = sa.JOB_TYPE, deprecated: bool = False) -> agent_pb2.GetTaskRequest:
    if deprecated:
        return agent_pb2.GetTaskRequest(task_type=task_type, resource_meta=meta)
    return agent_pb2.GetTaskRequest(task_category=agent_pb2.TaskCategory(name=task_type), resource_meta=meta)


async def rpc_error(aw) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aw
    return info.value


async def sync_call(server: AgentServer, messages: list[agent_pb2.ExecuteTaskSyncRequest]) -> list:
    """Drive ExecuteTaskSync as propeller does: write the messages, close, read every answer."""
    call = server.sync_stub.ExecuteTaskSync()
    for message in messages:
        await call.write(message)
    await call.done_writing()
    return [response async for response in call]


# Metadata


async def test_list_agents_reports_categories_deprecated_types_and_sync(server):
    response = await server.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest())
    by_name = {agent.name: agent for agent in response.agents}
    job = by_name[sa.JobAgent.name]
    assert [(c.name, c.version) for c in job.supported_task_categories] == [(sa.JOB_TYPE, 0)]
    assert list(job.supported_task_types) == [sa.JOB_TYPE]
    assert job.is_sync is False
    assert by_name[sa.EchoAgent.name].is_sync is True


async def test_get_agent_by_name_and_unknown_name(server):
    response = await server.metadata_stub.GetAgent(agent_pb2.GetAgentRequest(name=sa.EchoAgent.name))
    assert list(response.agent.supported_task_types) == [sa.ECHO_TYPE]
    err = await rpc_error(server.metadata_stub.GetAgent(agent_pb2.GetAgentRequest(name="nobody")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "nobody" in err.details()


# Async agents


async def test_create_passes_execution_metadata_and_returns_resource_meta(server):
    meta = await create(server, name="exec-create")
    decoded = sa.JobMeta.decode(meta)
    assert decoded == sa.JobMeta(job_id="exec-create-0", outcome="ok")
    tem = job_agent(server).created[-1]
    assert tem.task_execution_id.node_execution_id.execution_id.name == "exec-create"
    assert tem.namespace == "p-d"


@pytest.mark.parametrize("deprecated", [False, True], ids=["task_category", "task_type"])
async def test_get_succeeded_converts_python_outputs(server, deprecated):
    meta = await create(server)
    response = await server.async_stub.GetTask(get_request(meta, deprecated=deprecated))
    resource = response.resource
    assert resource.phase == TaskExecution.SUCCEEDED
    assert resource.message == "done"
    outputs = resource.outputs.literals
    assert outputs["rows"].scalar.primitive.integer == 3
    assert [lit.scalar.primitive.string_value for lit in outputs["names"].collection.literals] == ["a", "b"]
    assert outputs["scores"].map.literals["a"].scalar.primitive.float_value == 1.5
    assert not resource.HasField("agent_error")


async def test_get_running_carries_custom_info(server):
    response = await server.async_stub.GetTask(get_request(await create(server, "running")))
    assert response.resource.phase == TaskExecution.RUNNING
    assert json_format.MessageToDict(response.resource.custom_info) == {"step": 3.0}


@pytest.mark.parametrize(
    ("outcome", "phase", "kind", "message"),
    [
        ("fail", TaskExecution.FAILED, agent_pb2.AgentError.NON_RECOVERABLE, "syntax error"),
        ("raise-fail", TaskExecution.FAILED, agent_pb2.AgentError.NON_RECOVERABLE, "rejected"),
        ("retry", TaskExecution.RETRYABLE_FAILED, agent_pb2.AgentError.RECOVERABLE, "preempted"),
    ],
)
async def test_job_failures_are_phases_with_agent_error(server, outcome, phase, kind, message):
    response = await server.async_stub.GetTask(get_request(await create(server, outcome)))
    resource = response.resource
    assert resource.phase == phase
    assert message in resource.message
    assert resource.agent_error.kind == kind
    assert resource.agent_error.code


async def test_delete(server):
    meta = await create(server)
    request = agent_pb2.DeleteTaskRequest(task_category=agent_pb2.TaskCategory(name=sa.JOB_TYPE), resource_meta=meta)
    assert await server.async_stub.DeleteTask(request) == agent_pb2.DeleteTaskResponse()
    bad = agent_pb2.DeleteTaskRequest(task_type=sa.JOB_TYPE, resource_meta=b'{"job_id": 1}')
    assert (await rpc_error(server.async_stub.DeleteTask(bad))).code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_task_metrics(server):
    meta = await create(server)
    request = agent_pb2.GetTaskMetricsRequest(task_type=sa.JOB_TYPE, resource_meta=meta, queries=["cpu", "mem"])
    response = await server.async_stub.GetTaskMetrics(request)
    assert [r.metric for r in response.results] == ["cpu", "mem"]
    plain = agent_pb2.GetTaskMetricsRequest(task_type=sa.PLAIN_TYPE, resource_meta=b'{"job_id":"x"}')
    err = await rpc_error(server.async_stub.GetTaskMetrics(plain))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_get_task_logs_streams_header_then_bodies(server):
    meta = await create(server, name="logs")
    request = agent_pb2.GetTaskLogsRequest(task_category=agent_pb2.TaskCategory(name=sa.JOB_TYPE), resource_meta=meta)
    messages = [m async for m in server.async_stub.GetTaskLogs(request)]
    assert [m.WhichOneof("part") for m in messages] == ["header", "body", "body", "body"]
    assert [list(m.body.results) for m in messages[1:]] == [
        [f"logs-0 line {i}a", f"logs-0 line {i}b"] for i in range(3)
    ]


async def test_get_task_logs_from_a_plain_generator(server):
    request = agent_pb2.GetTaskLogsRequest(task_type=sa.PLAIN_TYPE, resource_meta=b'{"job_id":"p"}', token="t1")
    messages = [m async for m in server.async_stub.GetTaskLogs(request)]
    assert messages[0].header.token == "t1"
    assert [list(m.body.results) for m in messages[1:]] == [["first"], ["second"]]


async def test_get_task_logs_unimplemented(server):
    request = agent_pb2.GetTaskLogsRequest(task_type=sa.SLOW_TYPE, resource_meta=b'{"job_id":"s"}')
    err = await rpc_error(_drain(server.async_stub.GetTaskLogs(request)))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


async def _drain(call) -> list:
    return [m async for m in call]


async def test_plain_function_agent_runs_on_the_sync_pool(server):
    response = await server.async_stub.CreateTask(sa.create_request(sa.PLAIN_TYPE))
    got = await server.async_stub.GetTask(get_request(response.resource_meta, sa.PLAIN_TYPE))
    assert got.resource.phase == TaskExecution.RUNNING
    assert server.metrics.registry.get_sample_value("flyteagents_sync_workers_max") == 4


# Sync agents, driven as propeller drives ExecuteTaskSync


async def test_execute_task_sync_answers_once_with_header_resource(server):
    responses = await sync_call(server, sa.sync_requests(sa.ECHO_TYPE, text="hello"))
    assert len(responses) == 1
    resource = responses[0].header.resource
    assert resource.phase == TaskExecution.SUCCEEDED
    outputs = resource.outputs.literals
    assert outputs["loud"].scalar.primitive.string_value == "HELLO"
    assert [lit.scalar.primitive.integer for lit in outputs["sizes"].collection.literals] == [5]
    assert outputs["empty"].collection.literals == []


@pytest.mark.parametrize(
    ("text", "phase", "kind"),
    [
        ("fail", TaskExecution.FAILED, agent_pb2.AgentError.NON_RECOVERABLE),
        ("retry", TaskExecution.RETRYABLE_FAILED, agent_pb2.AgentError.RECOVERABLE),
    ],
)
async def test_execute_task_sync_failures_are_phases(server, text, phase, kind):
    (response,) = await sync_call(server, sa.sync_requests(sa.ECHO_TYPE, text=text))
    assert response.header.resource.phase == phase
    assert response.header.resource.agent_error.kind == kind
    assert response.header.resource.message


async def test_execute_task_sync_protocol_errors(server):
    header, inputs = sa.sync_requests(sa.ECHO_TYPE, text="x")
    no_template = agent_pb2.ExecuteTaskSyncRequest(header=agent_pb2.CreateRequestHeader(output_prefix="/tmp"))
    for messages in ([inputs], [], [header, header], [no_template, inputs]):
        err = await rpc_error(sync_call(server, messages))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, messages
    assert "no task template" in err.details()
    # header only: the template declares an input that never came
    err = await rpc_error(sync_call(server, [header]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing text" in err.details()


# Error codes


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ("unavailable", grpc.StatusCode.UNAVAILABLE),
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT),
        ("timeout", grpc.StatusCode.DEADLINE_EXCEEDED),
        ("boom", grpc.StatusCode.INTERNAL),
    ],
)
async def test_agent_exceptions_map_to_codes(server, outcome, code):
    err = await rpc_error(server.async_stub.GetTask(get_request(await create(server, outcome))))
    assert err.code() == code
    assert "Traceback" not in err.details()
    assert "secret-token" not in err.details()
    create_err = await rpc_error(create(server, f"create-{outcome}"))
    assert create_err.code() == code


async def test_not_found(server):
    err = await rpc_error(server.async_stub.CreateTask(sa.create_request("no_such_type")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_type" in err.details()
    err = await rpc_error(server.async_stub.GetTask(get_request(b"{}", "no_such_type", deprecated=True)))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(sync_call(server, sa.sync_requests("no_such_type")))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_invalid_argument(server):
    cases = [
        server.async_stub.GetTask(get_request(b"not json")),
        server.async_stub.GetTask(get_request(b'{"job_id": "x", "extra": 1}')),
        server.async_stub.GetTask(agent_pb2.GetTaskRequest(resource_meta=b"{}")),  # no category at all
        server.async_stub.CreateTask(agent_pb2.CreateTaskRequest(output_prefix="/tmp")),  # no template
    ]
    mismatched = sa.create_request(sa.JOB_TYPE, outcome="ok")
    mismatched.inputs.literals["surprise"].CopyFrom(sa.string_literal("x"))
    cases.append(server.async_stub.CreateTask(mismatched))
    missing = sa.create_request(sa.JOB_TYPE, outcome="ok")
    del missing.inputs.literals["outcome"]
    cases.append(server.async_stub.CreateTask(missing))
    for case in cases:
        err = await rpc_error(case)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Traceback" not in err.details()
    err = await rpc_error(server.async_stub.CreateTask(mismatched))
    assert "surprise" in err.details()


async def test_failed_precondition_for_the_wrong_kind_of_agent(server):
    err = await rpc_error(server.async_stub.CreateTask(sa.create_request(sa.ECHO_TYPE, text="x")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ExecuteTaskSync" in err.details()
    err = await rpc_error(server.async_stub.GetTask(get_request(b"{}", sa.ECHO_TYPE)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    err = await rpc_error(sync_call(server, sa.sync_requests(sa.JOB_TYPE, outcome="ok")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "CreateTask" in err.details()


async def test_client_deadline(server):
    request = sa.create_request(sa.SLOW_TYPE, custom={"sleep": 2.0})
    err = await rpc_error(server.async_stub.CreateTask(request, timeout=0.2))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# Health, metrics, logs


async def test_health_serving_for_each_service(server):
    for name in ("", *SERVICE_NAMES):
        response = await server.health_stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, name
    assert set(SERVICE_NAMES) == {
        "flyteidl.service.AsyncAgentService",
        "flyteidl.service.SyncAgentService",
        "flyteidl.service.AgentMetadataService",
    }


async def test_metrics_count_by_code_and_time_calls(server):
    registry = server.metrics.registry

    def count(operation: str, code: str, task_type: str = sa.JOB_TYPE) -> float:
        labels = {"task_type": task_type, "operation": operation, "code": code}
        return registry.get_sample_value("flyteagents_requests_total", labels) or 0.0

    before_ok, before_bad = count("get", "OK"), count("get", "INVALID_ARGUMENT")
    before_hist = registry.get_sample_value(
        "flyteagents_request_duration_seconds_count", {"task_type": sa.JOB_TYPE, "operation": "get"}
    )
    meta = await create(server)
    await server.async_stub.GetTask(get_request(meta))
    await rpc_error(server.async_stub.GetTask(get_request(b"nope")))
    await rpc_error(server.async_stub.GetTask(get_request(b"{}", "no_such_type")))
    assert count("get", "OK") == before_ok + 1
    assert count("get", "INVALID_ARGUMENT") == before_bad + 1
    assert count("get", "NOT_FOUND", task_type="unknown") >= 1  # unknown types do not become labels
    after_hist = registry.get_sample_value(
        "flyteagents_request_duration_seconds_count", {"task_type": sa.JOB_TYPE, "operation": "get"}
    )
    assert after_hist == (before_hist or 0) + 2
    assert registry.get_sample_value("flyteagents_requests_in_flight", {"operation": "get"}) == 0


async def test_log_lines_name_the_task_execution(server, caplog):
    caplog.handler.addFilter(TaskLogFilter())
    with caplog.at_level(logging.WARNING, logger="flyteagents.server"):
        await rpc_error(create(server, "create-unavailable", name="exec-logged"))
        await rpc_error(server.async_stub.GetTask(get_request(await create(server, "boom", name="exec-boom"))))
    tasks = [getattr(r, "task", "") for r in caplog.records]
    assert "p/d/exec-logged/n0/0" in tasks
    boom = [r for r in caplog.records if "exec-boom" in getattr(r, "task", "")]
    assert boom and boom[0].exc_info is not None  # the traceback stays in the server log


async def test_output_literal_map_passes_through():
    from flyteagents import AgentRunner
    from flyteagents.server import AgentService

    service = AgentService(sa.make_registry(), AgentRunner(1))
    literal_map = sa.string_inputs(a="x")
    pb = await service.resource_to_proto(
        sa.Resource(phase=TaskExecution.SUCCEEDED, outputs=literal_map), sa.EchoAgent()
    )
    assert pb.outputs == literal_map
    assert isinstance(pb.outputs, literals_pb2.LiteralMap)


# The client local runs use with FLYTEAGENTS_ENDPOINT


@pytest.mark.parametrize(
    ("outcome", "error", "retryable"),
    [
        ("unavailable", ExternalServiceError, True),
        ("invalid", InvalidTaskError, False),
        ("timeout", AgentTimeoutError, False),
    ],
)
async def test_remote_backend_raises_flyteagents_errors(server, outcome, error, retryable):
    backend = RemoteBackend(server.address)
    handle = RemoteJob(TaskCategory(sa.JOB_TYPE), await create(server, outcome))
    with pytest.raises(error) as info:
        await backend.get(handle)
    assert server.address in str(info.value)
    assert getattr(info.value, "retryable", False) is retryable
    with pytest.raises(AgentNotFoundError, match="no_such_type"):
        await backend.get(RemoteJob(TaskCategory("no_such_type"), b"{}"))


async def test_remote_backend_unreachable_service_is_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        backend = RemoteBackend(f"127.0.0.1:{port}")
        with pytest.raises(ExternalServiceError) as info:
            await backend.delete(RemoteJob(TaskCategory(sa.JOB_TYPE), b"{}"))
    assert info.value.retryable
