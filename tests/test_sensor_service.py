"""Sensors through the gRPC agent service: propeller-shaped calls and whole workflows over a real channel."""

from __future__ import annotations

import asyncio
import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import FlyteContextManager, task, workflow
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.sensor.file_sensor import FileSensor as FlytekitFileSensor

from flyteagents import AgentRegistry, BaseSensor, TaskFailedError, sensor
from flyteagents.sensor import FileSensor, SensorEngine
from flyteagents.testing import AgentServer, create_task_request, get_task_request

pytestmark = pytest.mark.asyncio(loop_scope="session")

POKES: dict[str, int] = {}


@dataclass
class Gate:
    opens_at: int


@dataclass
class Opened:
    key: str = ""
    pokes: int = 0


class GateSensor(BaseSensor):
    async def poke(self, key: str) -> Opened | None:
        POKES[key] = POKES.get(key, 0) + 1
        if POKES[key] < self.sensor_config.opens_at:
            return None
        return Opened(key=key, pokes=POKES[key])


@sensor(poke_interval=0.02, sensor_config=Gate(opens_at=2))
async def gate_fn(key: str, sensor_config: Gate) -> bool:
    POKES[key] = POKES.get(key, 0) + 1
    return POKES[key] >= sensor_config.opens_at


class FailingSensor(BaseSensor):
    async def poke(self) -> bool:
        raise ConnectionError("broker unreachable")


class DatedSensor(BaseSensor):
    async def poke(self, day: datetime.datetime) -> bool:
        return True


gate = GateSensor(name="gate", sensor_config=Gate(opens_at=3), poke_interval=0.02)


@task
def announce(key: str, pokes: int) -> str:
    return f"{key} opened after {pokes}"


@workflow
def gate_wf(key: str, fn_key: str) -> str:
    opened = gate(key=key)
    done = gate_fn(key=fn_key)
    opened >> done
    return announce(key=opened.key, pokes=opened.pokes)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server():
    registry = AgentRegistry()
    registry.register(SensorEngine())
    async with AgentServer(registry, sync_workers=4) as server:
        yield server


def create_request(task: Any, **inputs: Any) -> agent_pb2.CreateTaskRequest:
    return create_task_request(task, "/tmp/sensor-out", inputs)


def get_request(meta: bytes) -> agent_pb2.GetTaskRequest:
    return get_task_request(meta, "sensor")


async def test_sensor_engine_is_listed(server):
    response = await server.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest())
    sensors = [a for a in response.agents if a.name == "Sensor"]
    assert [c.name for c in sensors[0].supported_task_categories] == ["sensor"]
    assert sensors[0].is_sync is False


async def test_class_sensor_polled_like_propeller_returns_outputs(server):
    created = await server.async_stub.CreateTask(create_request(gate, key="rpc-1"))
    meta = json.loads(created.resource_meta)
    assert meta["inputs"] == {"key": "rpc-1"} and meta["sensor_config"] == {"opens_at": 3}
    phases = []
    for _ in range(3):
        response = await server.async_stub.GetTask(get_request(created.resource_meta))
        phases.append(response.resource.phase)
        await asyncio.sleep(0.03)  # the next poke is due 0.02-0.022 s later (poke_interval, jitter)
    assert phases == [TaskExecution.RUNNING, TaskExecution.RUNNING, TaskExecution.SUCCEEDED]
    outputs = LiteralMap.from_flyte_idl(response.resource.outputs)
    values = TypeEngine.literal_map_to_kwargs(
        FlyteContextManager.current_context(), outputs, {"key": str, "pokes": int}
    )
    assert values == {"key": "rpc-1", "pokes": 3}
    await server.async_stub.DeleteTask(
        agent_pb2.DeleteTaskRequest(
            task_category=agent_pb2.TaskCategory(name="sensor"), resource_meta=created.resource_meta
        )
    )


async def test_sensors_in_a_workflow_through_the_service(server, monkeypatch):
    monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", server.address)
    # The workflow runs its own event loop; the server keeps serving on this one meanwhile.
    result = await asyncio.to_thread(gate_wf, key="wf-1", fn_key="wf-fn-1")
    assert result == "wf-1 opened after 3"
    assert POKES["wf-fn-1"] == 2


async def test_failing_sensor_fails_through_the_service(server, monkeypatch):
    failing = FailingSensor(name="failing", poke_interval=0.01, max_consecutive_errors=2)
    monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", server.address)
    with pytest.raises(TaskFailedError, match="after 2 consecutive poke errors; last: ConnectionError: broker"):
        await asyncio.to_thread(failing)


async def test_uncarriable_input_is_invalid_argument_naming_it(server):
    request = create_request(DatedSensor(name="dated"), day=datetime.datetime(2026, 1, 2))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.async_stub.CreateTask(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sensor input 'day' (datetime) cannot be carried" in (info.value.details() or "")


async def test_unknown_sensor_module_is_invalid_argument(server):
    request = create_request(gate, key="k")
    request.template.custom.update({"sensor_module": "no_such_module_for_sensors"})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.async_stub.CreateTask(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no_such_module_for_sensors" in (info.value.details() or "")


async def test_flytekit_file_sensor_template_through_the_service(server, tmp_path: Path):
    target = tmp_path / "drop.csv"
    created = await server.async_stub.CreateTask(create_request(FlytekitFileSensor(name="fk"), path=str(target)))
    first = await server.async_stub.GetTask(get_request(created.resource_meta))
    assert first.resource.phase == TaskExecution.RUNNING
    target.write_text("x")
    second = await server.async_stub.GetTask(get_request(created.resource_meta))
    assert second.resource.phase == TaskExecution.SUCCEEDED


async def test_file_sensor_through_the_service(server, tmp_path: Path):
    (tmp_path / "a.csv").write_text("1")
    created = await server.async_stub.CreateTask(create_request(FileSensor(name="files"), path=str(tmp_path / "*.csv")))
    response = await server.async_stub.GetTask(get_request(created.resource_meta))
    assert response.resource.phase == TaskExecution.SUCCEEDED
    outputs = LiteralMap.from_flyte_idl(response.resource.outputs)
    assert outputs.literals["path"].scalar.primitive.string_value == str(tmp_path / "a.csv")


async def test_bad_resource_meta_is_invalid_argument(server):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.async_stub.GetTask(get_request(b'{"sensor_module": 3}'))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
