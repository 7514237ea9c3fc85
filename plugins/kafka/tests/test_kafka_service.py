"""KafkaSensor through the agent service over a real gRPC channel, the way FlytePropeller drives it."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from flyteagents_kafka import KafkaSensor, KafkaSensorConfig
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution

from flyteagents import AgentRegistry
from flyteagents.sensor import SensorEngine
from flyteagents.testing import AgentServer, create_task_request, get_task_request

pytestmark = pytest.mark.asyncio(loop_scope="session")


def create_request(config: dict[str, Any]) -> agent_pb2.CreateTaskRequest:
    sensor = KafkaSensor(name="kafka_rpc", sensor_config=KafkaSensorConfig(bootstrap_servers="h:1", topic="t"))
    # poke_interval 0: every GetTask pokes, so back-to-back polls see each change at once
    return create_task_request(sensor, "/tmp/kafka-rpc", custom={"sensor_config": config, "poke_interval": 0})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server() -> Any:
    registry = AgentRegistry()
    registry.register(SensorEngine())
    async with AgentServer(registry) as running:
        yield running


async def test_malformed_config_is_invalid_argument_at_create(server: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.async_stub.CreateTask(create_request({"bootstrap_servers": "no port", "topic": "t"}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bootstrap_servers" in (err.value.details() or "")
    assert "Traceback" not in (err.value.details() or "")


async def test_message_arrives_later_through_the_service(server: Any, tansu: Any) -> None:
    topic = f"rpc-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    created = await server.async_stub.CreateTask(
        create_request({"bootstrap_servers": tansu.bootstrap_servers, "topic": topic, "key": "go"})
    )
    waiting = await server.async_stub.GetTask(get_task_request(created.resource_meta, "sensor"))
    assert waiting.resource.phase == TaskExecution.RUNNING

    producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap_servers)
    await producer.start()
    await producer.send_and_wait(topic, b"payload", key=b"go")
    await producer.stop()
    done = await server.async_stub.GetTask(get_task_request(created.resource_meta, "sensor"))
    assert done.resource.phase == TaskExecution.SUCCEEDED, done.resource.message
    assert "payload" in str(done.resource.outputs.literals["messages"])
