"""SQSSensor from a Flyte 2 TaskEnvironment, against moto_server: locally and through `flyteagents serve` over v2."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import flyte
import pytest
from flyteagents_aws.flyte2 import SQSMessage, SQSSensor, SQSSensorConfig

from flyteagents.testing.flyte2 import AgentService, run_on_service, serialize


def sensor_for(moto: Any, queue_url: str, name: str) -> SQSSensor:
    config = SQSSensorConfig(
        queue_url=queue_url,
        endpoint_url=moto.endpoint_url,
        region="us-east-1",
        wait_seconds=0,
        json_path="$.status",
        json_value="paid",
    )
    return SQSSensor(name=name, sensor_config=config, poke_interval=0.1, timeout=60)


env = flyte.TaskEnvironment(name="f2_orders")


@env.task
async def order_ids(messages: list[SQSMessage]) -> list[str]:
    return sorted(json.loads(m.body)["id"] for m in messages)


@pytest.fixture(scope="module", autouse=True)
def initialized():
    flyte.init()


def send_later(sqs: Any, queue_url: str, delay: float, *bodies: dict[str, Any]) -> threading.Thread:
    def send() -> None:
        time.sleep(delay)
        for body in bodies:
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_local_run_waits_for_the_matching_message_and_the_next_task_reads_it(moto, sqs, queue_url):
    wait = sensor_for(moto, queue_url, "f2_wait_for_paid")
    flyte.TaskEnvironment.from_task("f2_sqs_local", wait)
    sender = send_later(sqs, queue_url, 0.5, {"id": "o1", "status": "new"}, {"id": "o2", "status": "paid"})
    messages = flyte.with_runcontext(mode="local").run(wait).outputs()[0]
    sender.join()
    assert [json.loads(m.body)["id"] for m in messages] == ["o2"]
    assert flyte.with_runcontext(mode="local").run(order_ids, messages=messages).outputs()[0] == ["o2"]


def test_the_template_is_the_flytekit_sensors(moto, queue_url):
    wait = sensor_for(moto, queue_url, "f2_sqs_template")
    flyte.TaskEnvironment.from_task("f2_sqs_template_env", wait)  # flyte serializes tasks of an environment
    template = serialize(wait)
    custom = dict(template.custom)
    assert template.type == "sensor"
    assert (custom["sensor_module"], custom["sensor_name"]) == ("flyteagents_aws._sensor", "SQSSensor")
    assert dict(custom["sensor_config"])["queue_url"] == queue_url


def test_through_the_service_over_v2_the_messages_reach_the_next_task(moto, sqs, queue_url, tmp_path):
    wait = sensor_for(moto, queue_url, "f2_wait_remote")
    flyte.TaskEnvironment.from_task("f2_sqs_remote", wait)
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"id": "o3", "status": "paid"}))
    with AgentService() as service:
        messages = asyncio.run(run_on_service(service.address, wait, output_prefix=str(tmp_path)))
    assert [json.loads(m.body)["id"] for m in messages] == ["o3"]
    assert isinstance(messages[0], SQSMessage)
    assert flyte.with_runcontext(mode="local").run(order_ids, messages=messages).outputs()[0] == ["o3"]
    assert (
        int(
            sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                "ApproximateNumberOfMessages"
            ]
        )
        == 0
    )  # consumed
