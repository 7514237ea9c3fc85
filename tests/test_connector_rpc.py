"""Flyte 2's connector protocol, driven with flyteidl2's stubs the way the Flyte 2 backend drives it.

The backend reads the template and inputs, builds a ``Connection`` from the template's custom
``secrets``/``configs`` with the secret values filled in, calls CreateTask, then polls GetTask with
the same Connection and finally DeleteTask with it; it lists connectors every poll interval.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from flyteidl.admin import agent_pb2
from flyteidl2.connector import connector_pb2
from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2, security_pb2, tasks_pb2, types_pb2
from flyteidl2.core.execution_pb2 import TaskExecution
from flyteidl2.task import common_pb2
from flytekit import kwtypes
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet
from grpc_health.v1 import health_pb2

from flyteagents import (
    AsyncAgentBase,
    AsyncAgentExecutorMixin,
    ExternalServiceError,
    InvalidTaskError,
    Resource,
    ResourceMeta,
    SyncAgentExecutorMixin,
    UnsupportedOperationError,
    get_secret,
)
from flyteagents.sensor import SensorEngine
from flyteagents.server import CONNECTOR_SERVICE_NAMES, SERVICE_NAMES, TaskLogFilter
from flyteagents.testing import AgentServer, create_task_request

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa
from test_sensor_service import gate

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "s3cr3t-connection-value-7f1c"
CRED_TYPE = "v2_cred"


@dataclass
class CredMeta(ResourceMeta):
    job_id: str


class CredentialAgent(AsyncAgentBase):
    """Reads the secret ``api-token`` in every call (plain functions: they run on the worker threads)."""

    name = "Connector Test Credential Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name=CRED_TYPE, metadata_type=CredMeta)
        self.seen: list[tuple[str, str]] = []
        self.arguments: dict[str, Any] = {}

    def create(self, task_template, output_prefix, inputs=None, task_execution_metadata=None, **kw):
        self.arguments = {"task_template": task_template, "inputs": inputs, "meta": task_execution_metadata, **kw}
        token = get_secret("api-token")
        self.seen.append(("create", token))
        logging.getLogger("flyteagents.tests").warning("calling the job API with %s", token)
        text = inputs.literals["text"].scalar.primitive.string_value if inputs is not None else ""
        if text == "reject":
            raise ExternalServiceError(f"the job API refused token {token}", retryable=False)
        if text == "leak":  # a bug: the backend stores resource_meta
            return CredMeta(job_id=f"job-for-{token}")
        return CredMeta(job_id="cred-1")

    def get(self, resource_meta: CredMeta, **kw) -> Resource:
        self.seen.append(("get", get_secret("api-token")))
        return Resource(phase=TaskExecution.SUCCEEDED, outputs={"answer": "42"})

    def delete(self, resource_meta: CredMeta, **kw) -> None:
        self.seen.append(("delete", get_secret("api-token")))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server():
    registry = sa.make_registry()
    registry.register(SensorEngine())
    registry.register(CredentialAgent())
    async with AgentServer(registry, sync_workers=4) as server:
        yield server


# Requests as the Flyte 2 backend builds them, from flyteidl2's own messages.


def string_literal(value: str) -> literals_pb2.Literal:
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value=value)))


def template(task_type: str, inputs: tuple[str, ...] = ()) -> tasks_pb2.TaskTemplate:
    string = types_pb2.LiteralType(simple=types_pb2.STRING)
    return tasks_pb2.TaskTemplate(
        id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.TASK, project="p", domain="d", name=f"tests.{task_type}", version="v2"
        ),
        type=task_type,
        interface=interface_pb2.TypedInterface(
            inputs=interface_pb2.VariableMap(
                variables=[
                    interface_pb2.VariableEntry(key=n, value=interface_pb2.Variable(type=string)) for n in inputs
                ]
            )
        ),
    )


def execution_metadata(name: str) -> connector_pb2.TaskExecutionMetadata:
    return connector_pb2.TaskExecutionMetadata(
        task_execution_id=identifier_pb2.TaskExecutionIdentifier(
            task_id=identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project="p", domain="d", name="t"),
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                node_id="n0",
                execution_id=identifier_pb2.WorkflowExecutionIdentifier(project="p", domain="d", name=name),
            ),
            retry_attempt=1,
        ),
        namespace="p-d",
    )


def connection(**secrets: str) -> security_pb2.Connection:
    return security_pb2.Connection(task_type=CRED_TYPE, secrets=secrets, configs={"region": "eu"})


def create_request(
    task_type: str, name: str = "exec-v2", conn: security_pb2.Connection | None = None, **inputs: str
) -> connector_pb2.CreateTaskRequest:
    return connector_pb2.CreateTaskRequest(
        template=template(task_type, tuple(inputs)),
        output_prefix="/tmp/flyteagents-tests/v2-out",
        inputs=common_pb2.Inputs(
            literals=[common_pb2.NamedLiteral(name=k, value=string_literal(v)) for k, v in inputs.items()]
        ),
        task_execution_metadata=execution_metadata(name),
        connection=conn,
    )


def category(task_type: str) -> connector_pb2.TaskCategory:
    return connector_pb2.TaskCategory(name=task_type, version=0)


def get_request(meta: bytes, task_type: str = sa.JOB_TYPE, conn=None) -> connector_pb2.GetTaskRequest:
    return connector_pb2.GetTaskRequest(
        task_category=category(task_type), resource_meta=meta, output_prefix="/tmp/out", connection=conn
    )


def delete_request(meta: bytes, task_type: str = sa.JOB_TYPE, conn=None) -> connector_pb2.DeleteTaskRequest:
    return connector_pb2.DeleteTaskRequest(task_category=category(task_type), resource_meta=meta, connection=conn)


async def rpc_error(aw) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aw
    return info.value


async def create(server: AgentServer, outcome: str = "ok", name: str = "exec-v2") -> bytes:
    response = await server.connector_stub.CreateTask(create_request(sa.JOB_TYPE, name=name, outcome=outcome))
    return response.resource_meta


# Metadata


async def test_list_connectors_has_async_agents_and_the_sensor_engine_not_sync_agents(server):
    response = await server.connector_metadata_stub.ListConnectors(connector_pb2.ListConnectorsRequest())
    categories = {c.name: [(t.name, t.version) for t in c.supported_task_categories] for c in response.connectors}
    assert categories[sa.JobAgent.name] == [(sa.JOB_TYPE, 0)]
    assert categories["Sensor"] == [("sensor", 0)]
    assert sa.EchoAgent.name not in categories  # a sync agent: Flyte 2 cannot call it


async def test_get_connector_by_name_and_unknown_names(server):
    response = await server.connector_metadata_stub.GetConnector(
        connector_pb2.GetConnectorRequest(name=sa.JobAgent.name)
    )
    assert [c.name for c in response.connector.supported_task_categories] == [sa.JOB_TYPE]
    for name in ("no such connector", sa.EchoAgent.name):
        err = await rpc_error(server.connector_metadata_stub.GetConnector(connector_pb2.GetConnectorRequest(name=name)))
        assert err.code() == grpc.StatusCode.NOT_FOUND


# An async agent through create, get and delete


async def test_create_hands_the_agent_flytekit_models_and_returns_resource_meta(server):
    agent = server.registry.get_agent(CRED_TYPE)
    request = create_request(CRED_TYPE, name="models", conn=connection(**{"api-token": SECRET}), text="hi")
    response = await server.connector_stub.CreateTask(request)
    assert CredMeta.decode(response.resource_meta) == CredMeta(job_id="cred-1")
    args = agent.arguments
    # The same flytekit models a Flyte 1 agent gets, whatever protocol the call came in by.
    assert isinstance(args["task_template"], TaskTemplate) and args["task_template"].type == CRED_TYPE
    assert isinstance(args["inputs"], LiteralMap)
    assert args["inputs"].literals["text"].scalar.primitive.string_value == "hi"
    assert isinstance(args["meta"], TaskExecutionMetadata)
    assert args["meta"].task_execution_id.node_execution_id.execution_id.name == "models"
    assert args["meta"].task_execution_id.retry_attempt == 1
    assert SECRET not in repr(sorted(args))  # the Connection is not handed over as arguments


async def test_get_answers_outputs_as_v2_named_literals(server):
    meta = await create(server)
    response = await server.connector_stub.GetTask(get_request(meta))
    resource = response.resource
    assert resource.phase == TaskExecution.SUCCEEDED and resource.message == "done"
    outputs = {named.name: named.value for named in resource.outputs.literals}
    assert outputs["rows"].scalar.primitive.integer == 3
    assert [lit.scalar.primitive.string_value for lit in outputs["names"].collection.literals] == ["a", "b"]
    assert outputs["scores"].map.literals["a"].scalar.primitive.float_value == 1.5
    assert len(UnknownFieldSet(response)) == 0 and len(UnknownFieldSet(resource)) == 0


async def test_running_carries_custom_info(server):
    response = await server.connector_stub.GetTask(get_request(await create(server, "running")))
    assert response.resource.phase == TaskExecution.RUNNING
    assert json_format.MessageToDict(response.resource.custom_info) == {"step": 3.0}


@pytest.mark.parametrize(
    ("outcome", "phase", "message"),
    [
        ("fail", TaskExecution.FAILED, "syntax error"),
        ("raise-fail", TaskExecution.FAILED, "rejected"),
        ("retry", TaskExecution.RETRYABLE_FAILED, "preempted"),
    ],
)
async def test_job_failures_are_the_same_phases_as_v1_without_agent_error(server, outcome, phase, message):
    response = await server.connector_stub.GetTask(get_request(await create(server, outcome)))
    resource = response.resource
    assert resource.phase == phase and message in resource.message
    assert len(UnknownFieldSet(resource)) == 0  # flyteidl's agent_error does not leak as an unknown field


async def test_delete_and_malformed_resource_meta(server):
    meta = await create(server)
    assert await server.connector_stub.DeleteTask(delete_request(meta)) == connector_pb2.DeleteTaskResponse()
    for bad in (b'{"job_id": 1}', b"not json", b""):
        err = await rpc_error(server.connector_stub.DeleteTask(delete_request(bad)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        err = await rpc_error(server.connector_stub.GetTask(get_request(bad)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_task_metrics(server):
    meta = await create(server)
    request = connector_pb2.GetTaskMetricsRequest(task_category=category(sa.JOB_TYPE), resource_meta=meta)
    request.queries.extend(["cpu", "mem"])
    response = await server.connector_stub.GetTaskMetrics(request)
    assert [r.metric for r in response.results] == ["cpu", "mem"]
    plain = connector_pb2.GetTaskMetricsRequest(task_category=category(sa.PLAIN_TYPE), resource_meta=b'{"job_id":"x"}')
    assert (await rpc_error(server.connector_stub.GetTaskMetrics(plain))).code() == grpc.StatusCode.UNIMPLEMENTED


async def test_get_task_logs_streams_a_header_then_bodies(server):
    meta = await create(server, name="logs")
    request = connector_pb2.GetTaskLogsRequest(task_category=category(sa.JOB_TYPE), resource_meta=meta, token="t9")
    messages = [m async for m in server.connector_stub.GetTaskLogs(request)]
    assert [m.WhichOneof("part") for m in messages] == ["header", "body", "body", "body"]
    assert messages[0].header.token == "t9"
    assert [list(m.body.results) for m in messages[1:]] == [
        [f"logs-1 line {i}a", f"logs-1 line {i}b"] for i in range(3)
    ]


# Errors: the same codes as v1


async def test_unknown_task_type_is_not_found(server):
    err = await rpc_error(server.connector_stub.CreateTask(create_request("no_such_type")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(server.connector_stub.GetTask(get_request(b"{}", "no_such_type")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await rpc_error(server.connector_stub.DeleteTask(delete_request(b"{}", "no_such_type")))
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ("create-timeout", grpc.StatusCode.DEADLINE_EXCEEDED),
        ("create-unavailable", grpc.StatusCode.UNAVAILABLE),
        ("create-invalid", grpc.StatusCode.INVALID_ARGUMENT),
        ("create-boom", grpc.StatusCode.INTERNAL),
    ],
)
async def test_agent_exceptions_map_to_the_same_codes(server, outcome, code):
    err = await rpc_error(create(server, outcome))
    assert err.code() == code
    assert "Traceback" not in (err.details() or "") and "secret-token-123" not in (err.details() or "")


async def test_inputs_not_in_the_interface_are_invalid_argument(server):
    request = create_request(sa.JOB_TYPE, outcome="ok")
    request.inputs.literals.add(name="extra", value=string_literal("x"))
    err = await rpc_error(server.connector_stub.CreateTask(request))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "extra" in (err.details() or "")


async def test_a_sync_agent_is_refused_with_a_reason(server):
    err = await rpc_error(server.connector_stub.CreateTask(create_request(sa.ECHO_TYPE, text="x")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "sync agent" in (err.details() or "") and "Flyte 2" in (err.details() or "")


# Sensors


async def test_a_sensor_through_create_get_delete(server):
    v1 = create_task_request(gate, "/tmp/sensor-out", {"key": "v2-gate"})
    request = connector_pb2.CreateTaskRequest(
        template=tasks_pb2.TaskTemplate.FromString(v1.template.SerializeToString()),
        output_prefix="/tmp/sensor-out",
        inputs=common_pb2.Inputs(
            literals=[
                common_pb2.NamedLiteral(name=k, value=literals_pb2.Literal.FromString(v.SerializeToString()))
                for k, v in v1.inputs.literals.items()
            ]
        ),
    )
    created = await server.connector_stub.CreateTask(request)
    phases = []
    for _ in range(3):
        response = await server.connector_stub.GetTask(get_request(created.resource_meta, "sensor"))
        phases.append(response.resource.phase)
    assert phases == [TaskExecution.RUNNING, TaskExecution.RUNNING, TaskExecution.SUCCEEDED]
    outputs = {named.name: named.value for named in response.resource.outputs.literals}
    assert outputs["key"].scalar.primitive.string_value == "v2-gate"
    assert outputs["pokes"].scalar.primitive.integer == 3
    await server.connector_stub.DeleteTask(delete_request(created.resource_meta, "sensor"))


# Connection secrets


async def test_connection_secret_reaches_the_agent_in_every_call_and_nowhere_else(server, caplog, monkeypatch):
    monkeypatch.setenv("FLYTEAGENTS_SECRET_API_TOKEN", "the-service-own-token")
    agent = server.registry.get_agent(CRED_TYPE)
    agent.seen.clear()
    caplog.handler.addFilter(TaskLogFilter())
    conn = connection(**{"api-token": SECRET})
    with caplog.at_level(logging.INFO):
        created = await server.connector_stub.CreateTask(create_request(CRED_TYPE, conn=conn, text="hi"))
        got = await server.connector_stub.GetTask(get_request(created.resource_meta, CRED_TYPE, conn))
        await server.connector_stub.DeleteTask(delete_request(created.resource_meta, CRED_TYPE, conn))
        # Without a Connection (and over v1) the service's own secret answers: nothing was kept.
        await server.connector_stub.GetTask(get_request(created.resource_meta, CRED_TYPE))
        await server.async_stub.DeleteTask(
            agent_pb2.DeleteTaskRequest(task_type=CRED_TYPE, resource_meta=created.resource_meta)
        )
    assert agent.seen == [
        ("create", SECRET),
        ("get", SECRET),
        ("delete", SECRET),
        ("get", "the-service-own-token"),
        ("delete", "the-service-own-token"),
    ]
    assert SECRET.encode() not in created.resource_meta
    assert SECRET.encode() not in got.SerializeToString()
    logged = [r for r in caplog.records if r.name == "flyteagents.tests"]
    assert logged and all(SECRET not in caplog.handler.format(r) for r in caplog.records)
    assert "calling the job API with [redacted]" in caplog.handler.format(logged[0])
    assert SECRET not in repr(server.metrics.registry.collect())


async def test_connection_secret_is_masked_in_error_details_and_logs(server, caplog):
    caplog.handler.addFilter(TaskLogFilter())
    request = create_request(CRED_TYPE, conn=connection(**{"api-token": SECRET}), text="reject")
    with caplog.at_level(logging.INFO):
        err = await rpc_error(server.connector_stub.CreateTask(request))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "refused token [redacted]" in (err.details() or "")
    assert caplog.records and all(SECRET not in caplog.handler.format(r) for r in caplog.records)


async def test_a_resource_meta_holding_a_connection_secret_is_not_sent(server, caplog):
    caplog.handler.addFilter(TaskLogFilter())
    request = create_request(CRED_TYPE, conn=connection(**{"api-token": SECRET}), text="leak")
    with caplog.at_level(logging.INFO):
        err = await rpc_error(server.connector_stub.CreateTask(request))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "put a secret into its resource_meta" in (err.details() or "") and SECRET not in (err.details() or "")
    assert any("holding a Connection secret" in r.getMessage() for r in caplog.records)
    # a short secret is not looked for (it would match ordinary bytes by chance)
    short = create_request(CRED_TYPE, conn=connection(**{"api-token": "job"}), text="leak")
    assert CredMeta.decode((await server.connector_stub.CreateTask(short)).resource_meta).job_id == "job-for-job"


# Health, reflection, metrics, and turning a protocol off


async def test_health_serving_for_both_protocols(server):
    assert set(CONNECTOR_SERVICE_NAMES) == {
        "flyteidl2.connector.AsyncConnectorService",
        "flyteidl2.connector.ConnectorMetadataService",
    }
    for name in ("", *SERVICE_NAMES, *CONNECTOR_SERVICE_NAMES):
        response = await server.health_stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, name


async def test_metrics_are_labelled_by_protocol(server):
    registry = server.metrics.registry

    def count(protocol: str | None) -> float:
        labels = {"task_type": sa.JOB_TYPE, "operation": "get", "code": "OK"}
        if protocol:
            labels["protocol"] = protocol
        return registry.get_sample_value("flyteagents_requests_total", labels) or 0.0

    v1_before, v2_before = count(None), count("v2")
    await server.connector_stub.GetTask(get_request(await create(server)))
    assert count("v2") == v2_before + 1 and count(None) == v1_before
    latency = {"task_type": sa.JOB_TYPE, "operation": "get", "protocol": "v2"}
    assert registry.get_sample_value("flyteagents_request_duration_seconds_count", latency) >= 1
    assert registry.get_sample_value("flyteagents_requests_in_flight", {"operation": "get", "protocol": "v2"}) == 0
    listed = {"task_type": "unknown", "operation": "list_connectors", "code": "OK", "protocol": "v2"}
    await server.connector_metadata_stub.ListConnectors(connector_pb2.ListConnectorsRequest())
    assert registry.get_sample_value("flyteagents_requests_total", listed) >= 1


@pytest.mark.parametrize("protocol", ["v1", "v2"])
async def test_either_protocol_can_be_turned_off(protocol):
    async with AgentServer(sa.make_registry(), protocols=(protocol,)) as server:
        v1_call = server.async_stub.GetTask(agent_pb2.GetTaskRequest(task_type=sa.JOB_TYPE, resource_meta=b"{}"))
        v2_call = server.connector_stub.GetTask(get_request(b"{}"))
        off, on = (v2_call, v1_call) if protocol == "v1" else (v1_call, v2_call)
        assert (await rpc_error(off)).code() == grpc.StatusCode.UNIMPLEMENTED
        assert (await rpc_error(on)).code() == grpc.StatusCode.INVALID_ARGUMENT  # answered: the meta lacks job_id


async def test_no_protocol_is_a_clear_error():
    from flyteagents.server import build_server

    with pytest.raises(ValueError, match="protocols must be some of v1, v2"):
        build_server(sa.make_registry(), protocols=("v3",))


# Local runs through the service over v2 (FLYTEAGENTS_ENDPOINT with FLYTEAGENTS_PROTOCOL=v2)


class CredentialTask(AsyncAgentExecutorMixin, PythonTask):
    """A task for CredentialAgent whose Connection names its secret, as a Flyte 2 task's custom does."""

    def __init__(self) -> None:
        super().__init__(
            task_type=CRED_TYPE,
            name="connector_tests.credential",
            task_config=None,
            interface=Interface(inputs=kwtypes(text=str), outputs=kwtypes(answer=str)),
        )

    def get_custom(self, settings: Any) -> dict[str, Any]:
        return {"secrets": {"api-token": "MY_LAPTOP_API_TOKEN"}, "configs": {"region": "eu"}}


class EchoTask(SyncAgentExecutorMixin, PythonTask):
    def __init__(self) -> None:
        super().__init__(
            task_type=sa.ECHO_TYPE,
            name="connector_tests.echo",
            task_config=None,
            interface=Interface(inputs=kwtypes(text=str), outputs=kwtypes(loud=str)),
        )


async def test_a_local_run_can_go_through_the_service_over_v2(server, monkeypatch):
    agent = server.registry.get_agent(CRED_TYPE)
    monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", server.address)
    monkeypatch.setenv("FLYTEAGENTS_SECRET_API_TOKEN", "the-service-own-token")
    monkeypatch.setenv("MY_LAPTOP_API_TOKEN", SECRET)
    for protocol, token in (("v2", SECRET), ("v1", "the-service-own-token")):
        monkeypatch.setenv("FLYTEAGENTS_PROTOCOL", protocol)
        agent.seen.clear()
        # The task runs its own event loop; the server keeps serving on this one meanwhile.
        assert await asyncio.to_thread(CredentialTask(), text="hi") == "42"
        assert agent.seen == [("create", token), ("get", token)], protocol
    monkeypatch.delenv("MY_LAPTOP_API_TOKEN")
    monkeypatch.setenv("FLYTEAGENTS_PROTOCOL", "v2")
    with pytest.raises(InvalidTaskError, match="names 'MY_LAPTOP_API_TOKEN': set that environment variable"):
        await asyncio.to_thread(CredentialTask(), text="hi")
    with pytest.raises(UnsupportedOperationError, match="no sync call"):
        await asyncio.to_thread(EchoTask(), text="hi")
    monkeypatch.setenv("FLYTEAGENTS_PROTOCOL", "v3")
    with pytest.raises(InvalidTaskError, match="FLYTEAGENTS_PROTOCOL must be v1 or v2"):
        await asyncio.to_thread(CredentialTask(), text="hi")
