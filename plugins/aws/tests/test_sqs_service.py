"""SQSSensor through the agent service over a real gRPC channel, the way FlytePropeller drives it."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
import pytest_asyncio
from flyteagents_aws import SQSSensor, SQSSensorConfig
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution

from flyteagents import AgentRegistry
from flyteagents.sensor import SensorEngine
from flyteagents.testing import AgentServer, create_task_request, get_task_request

pytestmark = pytest.mark.asyncio(loop_scope="session")


def create_request(config: dict[str, Any], output_prefix: str = "/tmp/sqs-rpc") -> agent_pb2.CreateTaskRequest:
    sensor = SQSSensor(name="sqs_rpc", sensor_config=SQSSensorConfig(queue_url="http://h/1/q"))
    # poke_interval 0: every GetTask pokes, so back-to-back polls see each change at once
    return create_task_request(sensor, output_prefix, custom={"sensor_config": config, "poke_interval": 0})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server() -> Any:
    registry = AgentRegistry()
    registry.register(SensorEngine())
    async with AgentServer(registry) as running:
        yield running


async def test_malformed_config_is_invalid_argument_at_create(server: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.async_stub.CreateTask(create_request({"queue_url": "https://x/1/q", "wait_seconds": 20}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "wait_seconds" in (err.value.details() or "")
    assert "Traceback" not in (err.value.details() or "")


async def test_lost_answer_through_the_service(
    server: Any, moto: Any, sqs: Any, queue_url: str, output_prefix: str
) -> None:
    config = {"queue_url": queue_url, "endpoint_url": moto.endpoint_url, "wait_seconds": 0}
    created = await server.async_stub.CreateTask(create_request(config, output_prefix))
    poll = get_task_request(created.resource_meta, "sensor")
    assert (await server.async_stub.GetTask(poll)).resource.phase == TaskExecution.RUNNING
    sqs.send_message(QueueUrl=queue_url, MessageBody="exactly once")
    first = await server.async_stub.GetTask(poll)
    sqs.send_message(QueueUrl=queue_url, MessageBody="still queued")
    again = await server.async_stub.GetTask(poll)  # the first answer was lost
    assert first.resource.phase == again.resource.phase == TaskExecution.SUCCEEDED
    assert first.resource.outputs == again.resource.outputs
    assert "exactly once" in str(again.resource.outputs)
    left = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in left] == ["still queued"]


async def test_a_missing_queue_fails_with_one_log_line(
    server: Any, moto: Any, output_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flyteagents")
    missing = f"{moto.endpoint_url}/123456789012/nowhere"
    created = await server.async_stub.CreateTask(
        create_request({"queue_url": missing, "wait_seconds": 0}, output_prefix)
    )
    resource = (await server.async_stub.GetTask(get_task_request(created.resource_meta, "sensor"))).resource
    assert resource.phase == TaskExecution.FAILED
    assert "NonExistentQueue" in resource.message or "does not exist" in resource.message.lower()
    lines = [r for r in caplog.records if "nowhere" in r.getMessage() or "NonExistentQueue" in r.getMessage()]
    assert lines, "the failure is logged"
    assert all(r.exc_info is None for r in lines), "one line each, no traceback"
