"""DatabricksAgent over Flyte 2's connector protocol: each task's own token, from the request's Connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from databricks_test_workflows import double
from flyteidl.admin import agent_pb2
from flyteidl2.connector import connector_pb2
from flyteidl2.core import security_pb2
from flyteidl2.core.execution_pb2 import TaskExecution
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.models.literals import Literal, LiteralMap, Primitive, Scalar

from flyteagents import AgentRegistry
from flyteagents.testing import AgentServer, execution_metadata, template_of

TENANT_TOKEN = "dapi-tenant-a-5566778899aabbcc"
SETTINGS = SerializationSettings(ImageConfig(default_image=Image(name="default", fqn="ghcr.io/example/task", tag="7")))
CATEGORY = connector_pb2.TaskCategory(name="databricks", version=0)
CONNECTION = security_pb2.Connection(task_type="databricks", secrets={"databricks-token": TENANT_TOKEN})
pytestmark = pytest.mark.asyncio(loop_scope="session")


def create_request(name: str, connection: security_pb2.Connection | None) -> connector_pb2.CreateTaskRequest:
    """A Databricks task's CreateTask as Flyte 2's backend sends it (the template's bytes are flyteidl2's too)."""
    meta = execution_metadata(name, project="proj", domain="dev", task="double")
    inputs = LiteralMap({"x": Literal(scalar=Scalar(primitive=Primitive(integer=5)))})
    v1 = agent_pb2.CreateTaskRequest(
        template=template_of(double, SETTINGS).to_flyte_idl(),
        output_prefix="s3://bucket/out",
        inputs=inputs.to_flyte_idl(),
        task_execution_metadata=meta.to_flyte_idl(),
    )
    request = connector_pb2.CreateTaskRequest.FromString(v1.SerializeToString())
    if connection is not None:
        request.connection.CopyFrom(connection)
    return request


@pytest.fixture
async def service(idle: Any) -> Any:
    registry = AgentRegistry()
    registry.discover()
    async with AgentServer(registry) as server:
        yield server


async def test_each_call_uses_the_token_its_connection_carries(service: Any, idle: Any) -> None:
    # The workspace accepts only the tenant's token, not the service's own (FLYTEAGENTS_SECRET_DATABRICKS_TOKEN).
    idle.workspace.tokens = {TENANT_TOKEN}
    stub = service.connector_stub
    created = await stub.CreateTask(create_request("tenant-a", CONNECTION), timeout=5)
    assert TENANT_TOKEN.encode() not in created.resource_meta
    assert len(idle.workspace.snapshot()["runs"]) == 1

    async def phase(connection: security_pb2.Connection | None) -> int:
        request = connector_pb2.GetTaskRequest(
            task_category=CATEGORY, resource_meta=created.resource_meta, connection=connection
        )
        return (await stub.GetTask(request, timeout=5)).resource.phase

    for _ in range(100):
        if await phase(CONNECTION) == TaskExecution.RUNNING:
            break
        await asyncio.sleep(0.01)
    assert await phase(CONNECTION) == TaskExecution.RUNNING
    # Without the Connection the service's own token is used, and this workspace refuses it.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetTask(
            connector_pb2.GetTaskRequest(task_category=CATEGORY, resource_meta=created.resource_meta), timeout=5
        )
    assert "403" in (refused.value.details() or ""), refused.value.code()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateTask(create_request("no-connection", None), timeout=5)
    assert TENANT_TOKEN not in (info.value.details() or "")

    await stub.DeleteTask(
        connector_pb2.DeleteTaskRequest(
            task_category=CATEGORY, resource_meta=created.resource_meta, connection=CONNECTION
        ),
        timeout=5,
    )
    for _ in range(100):
        if await phase(CONNECTION) == TaskExecution.ABORTED:
            break
        await asyncio.sleep(0.01)
    assert await phase(CONNECTION) == TaskExecution.ABORTED
    (run_id,) = idle.workspace.snapshot()["runs"]  # the one run, created and cancelled with the tenant's token
    assert str(json.loads(created.resource_meta)["run_id"]) == run_id
