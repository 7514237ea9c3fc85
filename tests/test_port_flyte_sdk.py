"""A connector written for flyte-sdk (Flyte 2) runs under flyteagents with only its imports changed.

The same flyteidl2 calls, as the Flyte 2 backend makes them, drive the connector first under
flyte-sdk's own connector service (its ``c0`` script, in a process of its own: importing flyte-sdk
replaces fsspec's s3 implementation process-wide) and then, ported, under flyteagents' server: the
answers agree.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl2.connector import connector_pb2, service_pb2_grpc
from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2, security_pb2, tasks_pb2, types_pb2
from flyteidl2.core.execution_pb2 import TaskExecution
from flyteidl2.task import common_pb2

from flyteagents.testing import AgentServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

SOURCE = Path(__file__).parent / "port" / "flyte_sdk_style_connector.py"
FLYTE_IMPORT = "from flyte.connectors import"
FLYTEAGENTS_IMPORT = "from flyteagents.connectors import"
TASK_TYPE = "warehouse_query_v2"


def create_request(execution: str) -> connector_pb2.CreateTaskRequest:
    integer = types_pb2.LiteralType(simple=types_pb2.INTEGER)
    template = tasks_pb2.TaskTemplate(
        id=identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project="p", domain="d", name="nightly"),
        type=TASK_TYPE,
        interface=interface_pb2.TypedInterface(
            inputs=interface_pb2.VariableMap(
                variables=[interface_pb2.VariableEntry(key="limit", value=interface_pb2.Variable(type=integer))]
            )
        ),
    )
    template.custom.update({"query": "SELECT * FROM numbers", "dataset": "analytics"})
    limit = literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=21)))
    return connector_pb2.CreateTaskRequest(
        template=template,
        output_prefix="s3://bucket/out",
        inputs=common_pb2.Inputs(literals=[common_pb2.NamedLiteral(name="limit", value=limit)]),
        task_execution_metadata=connector_pb2.TaskExecutionMetadata(
            task_execution_id=identifier_pb2.TaskExecutionIdentifier(
                node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                    node_id="n0", execution_id=identifier_pb2.WorkflowExecutionIdentifier(name=execution)
                )
            )
        ),
        connection=CONNECTION,
    )


CONNECTION = security_pb2.Connection(secrets={"warehouse_token": "tok-v2"}, configs={"region": "eu"})
CATEGORY = connector_pb2.TaskCategory(name=TASK_TYPE)


async def drive(channel: grpc.aio.Channel, execution: str) -> dict[str, Any]:
    """Create, poll twice, read logs and delete, as the Flyte 2 backend does; what came back."""
    stub = service_pb2_grpc.AsyncConnectorServiceStub(channel)
    metadata = service_pb2_grpc.ConnectorMetadataServiceStub(channel)
    listed = await metadata.ListConnectors(connector_pb2.ListConnectorsRequest())
    created = await stub.CreateTask(create_request(execution))
    resources = []
    for _ in range(2):
        got = await stub.GetTask(
            connector_pb2.GetTaskRequest(
                task_category=CATEGORY, resource_meta=created.resource_meta, connection=CONNECTION
            )
        )
        resources.append(got.resource)
    logs = [
        m
        async for m in stub.GetTaskLogs(
            connector_pb2.GetTaskLogsRequest(task_category=CATEGORY, resource_meta=created.resource_meta, token="p2")
        )
    ]
    delete = connector_pb2.DeleteTaskRequest(
        task_category=CATEGORY, resource_meta=created.resource_meta, connection=CONNECTION
    )
    await stub.DeleteTask(delete)
    done = resources[-1]
    return {
        "connectors": {c.name: [t.name for t in c.supported_task_categories] for c in listed.connectors},
        "resource_meta": json.loads(created.resource_meta),
        "phases": [r.phase for r in resources],
        "links": [(link.name, link.uri.rsplit("/", 1)[0], link.ready) for link in done.log_links],
        "outputs": {named.name: named.value.scalar.primitive for named in done.outputs.literals},
        "log_lines": [line for m in logs if m.HasField("body") for line in m.body.results],
    }


def expected(execution: str) -> dict[str, Any]:
    job = f"{execution}-nightly"
    return {
        "resource_meta": {"job_id": job, "dataset": "analytics"},
        "phases": [TaskExecution.RUNNING, TaskExecution.SUCCEEDED],
        "links": [("Warehouse", "https://warehouse.example/jobs", True)],
        "outputs": {
            "rows": literals_pb2.Primitive(integer=42),
            "dataset": literals_pb2.Primitive(string_value="analytics"),
        },
        "log_lines": [f"{job}: p2"],
    }


def check(result: dict[str, Any], execution: str) -> None:
    assert result["connectors"]["Warehouse Connector"] == [TASK_TYPE]
    assert {k: v for k, v in result.items() if k != "connectors"} == expected(execution)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ready(channel: grpc.aio.Channel, proc: subprocess.Popen) -> None:
    metadata = service_pb2_grpc.ConnectorMetadataServiceStub(channel)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            await metadata.ListConnectors(connector_pb2.ListConnectorsRequest(), timeout=2)
            return
        except grpc.aio.AioRpcError:
            assert time.monotonic() < deadline, "c0 did not start"
            await asyncio.sleep(0.3)


@pytest.fixture
def c0(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """flyte-sdk's connector service, as its ``c0`` script runs it, serving the unported source."""
    source = SOURCE.read_text()
    assert "flyteagents" not in source
    (tmp_path / "port_under_flyte_sdk.py").write_text(source)
    port = free_port()
    command = [str(Path(sys.executable).parent / "c0"), "--port", str(port), "--prometheus_port", str(free_port())]
    proc = subprocess.Popen(
        [*command, "--modules", "port_under_flyte_sdk"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc, port
    proc.kill()
    proc.communicate()


@pytest.mark.slow
async def test_the_source_is_a_working_flyte_sdk_connector(c0: tuple[subprocess.Popen, int]) -> None:
    proc, port = c0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await ready(channel, proc)
        check(await drive(channel, "sdk"), "sdk")


async def test_it_runs_under_flyteagents_with_only_its_imports_changed(
    load_source: Callable[[str, str], ModuleType],
) -> None:
    original = SOURCE.read_text()
    assert FLYTE_IMPORT in original
    ported = original.replace(FLYTE_IMPORT, FLYTEAGENTS_IMPORT)
    changed = [
        line
        for line in difflib.unified_diff(original.splitlines(), ported.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed and all(line[1:].startswith(("from ", "import ")) for line in changed)

    module = load_source(ported, "port_under_flyteagents_v2")
    from flyteagents import AgentRegistry
    from flyteagents.connectors import ConnectorRegistry

    assert isinstance(ConnectorRegistry.get_connector(TASK_TYPE), module.WarehouseConnector)
    async with AgentServer(AgentRegistry.default()) as server:
        result = await drive(server.channel, "ported")
        check(result, "ported")
        job = module.JOBS["ported-nightly"]
        assert job == {"query": "SELECT * FROM numbers", "limit": 21, "polls": 2, "region": "eu", "cancelled": True}
        # FlytePropeller 1.x reaches the same connector through flyteidl's agent protocol.
        v1 = await server.async_stub.GetTask(
            agent_pb2.GetTaskRequest(
                task_category=agent_pb2.TaskCategory(name=TASK_TYPE),
                resource_meta=json.dumps(result["resource_meta"]).encode(),
            )
        )
        assert v1.resource.phase == TaskExecution.SUCCEEDED
        assert v1.resource.outputs.literals["rows"].scalar.primitive.integer == 42
        assert v1.resource.log_links[0].name == "Warehouse"
        # Without the Connection's secret the connector refuses, and the service says so as v1 would.
        request = create_request("no-token")
        request.ClearField("connection")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await server.connector_stub.CreateTask(request)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "tok-v2" not in (info.value.details() or "")
