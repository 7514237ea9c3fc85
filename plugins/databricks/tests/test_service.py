"""DatabricksAgent served by the real agent service, driven over gRPC as FlytePropeller drives it."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Any

import grpc
import pytest
from databricks_test_workflows import double
from flyteagents_databricks import DatabricksAgent
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.models.core import identifier as id_models
from flytekit.models.literals import Literal, LiteralMap, Primitive, Scalar
from flytekit.models.task import TaskExecutionMetadata
from flytekit.tools.translator import get_serializable

from flyteagents import AgentRegistry
from flyteagents.testing import AgentServer

TOKEN = "dapi-test-0123456789abcdef"
SETTINGS = SerializationSettings(ImageConfig(default_image=Image(name="default", fqn="ghcr.io/example/task", tag="7")))
CATEGORY = agent_pb2.TaskCategory(name="databricks", version=0)
# The service fixture's grpc server lives on the session loop; the tests must run there too.
pytestmark = pytest.mark.asyncio(loop_scope="session")


def create_request(name: str, attempt: int = 0) -> agent_pb2.CreateTaskRequest:
    template = get_serializable(OrderedDict(), SETTINGS, double).template
    wf = id_models.WorkflowExecutionIdentifier("proj", "dev", name)
    meta = TaskExecutionMetadata(
        task_execution_id=id_models.TaskExecutionIdentifier(
            task_id=id_models.Identifier(id_models.ResourceType.TASK, "proj", "dev", "double", "v1"),
            node_execution_id=id_models.NodeExecutionIdentifier("n0", wf),
            retry_attempt=attempt,
        ),
        namespace="proj-dev",
        labels={},
        annotations={},
        k8s_service_account="",
        environment_variables={},
        identity=None,
    )
    inputs = LiteralMap({"x": Literal(scalar=Scalar(primitive=Primitive(integer=5)))})
    return agent_pb2.CreateTaskRequest(
        template=template.to_flyte_idl(),
        output_prefix="s3://bucket/out",
        inputs=inputs.to_flyte_idl(),
        task_execution_metadata=meta.to_flyte_idl(),
    )


@pytest.fixture
def workspace(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    srv = make_server(execute=False, run_seconds=float("inf"))
    monkeypatch.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", srv.instance)
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    return srv


@pytest.fixture
async def service(workspace: Any) -> Any:
    registry = AgentRegistry()
    registry.discover()  # found through the installed entry point, as `flyteagents serve` finds it
    async with AgentServer(registry) as server:
        yield server


async def get(server: Any, meta: bytes) -> agent_pb2.Resource:
    request = agent_pb2.GetTaskRequest(task_type="databricks", task_category=CATEGORY, resource_meta=meta)
    return (await server.async_stub.GetTask(request, timeout=5)).resource


async def test_propeller_create_get_delete(service: Any, workspace: Any) -> None:
    created = await service.async_stub.CreateTask(create_request("svc"), timeout=5)
    again = await service.async_stub.CreateTask(create_request("svc"), timeout=5)
    assert json.loads(created.resource_meta)["run_id"] == json.loads(again.resource_meta)["run_id"]
    assert TOKEN.encode() not in created.resource_meta
    assert len(workspace.workspace.snapshot()["runs"]) == 1

    for _ in range(100):
        resource = await get(service, created.resource_meta)
        if resource.phase == TaskExecution.RUNNING:
            break
        await asyncio.sleep(0.01)
    assert resource.phase == TaskExecution.RUNNING
    assert resource.log_links[0].name == "Databricks Console"

    await service.async_stub.DeleteTask(
        agent_pb2.DeleteTaskRequest(
            task_type="databricks", task_category=CATEGORY, resource_meta=created.resource_meta
        ),
        timeout=5,
    )
    for _ in range(100):
        resource = await get(service, created.resource_meta)
        if resource.phase == TaskExecution.ABORTED:
            break
        await asyncio.sleep(0.01)
    assert resource.phase == TaskExecution.ABORTED and "CANCELED" in resource.message

    listed = await service.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=5)
    categories = {(c.name, c.version) for a in listed.agents for c in a.supported_task_categories}
    assert ("databricks", 0) in categories


async def test_service_status_codes(service: Any, workspace: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get(service, b"not json")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    bad = create_request("bad")
    bad.template.custom.Clear()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await service.async_stub.CreateTask(bad, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in (info.value.details() or "")

    created = await service.async_stub.CreateTask(create_request("unavailable"), timeout=5)
    # The workspace keeps answering 503: a retryable UNAVAILABLE within the call's budget, not INTERNAL.
    agent = service.registry.get_agent("databricks")
    assert isinstance(agent, DatabricksAgent)
    agent.pool.client_kwargs["call_timeout"] = 0.3
    workspace.workspace.faults.append({"path": "runs/get", "status": 503, "count": 10_000})
    meta = json.loads(created.resource_meta)
    fresh = json.dumps({**meta, "secret": "rotated"}).encode()  # a new token: a new client, short budget
    workspace.workspace.tokens.add(TOKEN + "-rotated")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYTEAGENTS_SECRET_ROTATED", TOKEN + "-rotated")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get(service, fresh)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "503" in (info.value.details() or "") and TOKEN not in (info.value.details() or "")
    workspace.workspace.faults.clear()
