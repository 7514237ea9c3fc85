"""KafkaSensor from a Flyte 2 TaskEnvironment, on a Tansu broker: locally and through `flyteagents serve` over v2."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import flyte
import pytest
from aiokafka import AIOKafkaProducer
from flyteagents_kafka.flyte2 import KafkaMessage, KafkaSensor, KafkaSensorConfig
from flyteagents_kafka.testing import create_topic

from flyteagents.testing.flyte2 import AgentService, run_on_service

env = flyte.TaskEnvironment(name="f2_kafka_orders")


@env.task
async def order_values(messages: list[KafkaMessage]) -> list[str]:
    return [m.value for m in messages if m.value is not None]


@pytest.fixture(scope="module", autouse=True)
def initialized():
    flyte.init()


async def produce_until(servers: str, topic: str, done: threading.Event) -> None:
    """Produce the awaited message every 0.2 s until the run ends: the sensor counts only messages after its start."""
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        while not done.is_set():
            await producer.send_and_wait(topic, b"noise", key=b"other")
            await producer.send_and_wait(topic, b"paid", key=b"42")
            await asyncio.sleep(0.2)
    finally:
        await producer.stop()


def producing(servers: str, topic: str) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(produce_until(servers, topic, done)))
    thread.start()
    return thread, done


def sensor_for(servers: str, topic: str, name: str) -> KafkaSensor:
    config = KafkaSensorConfig(bootstrap_servers=servers, topic=topic, key="42", max_messages=1)
    return KafkaSensor(name=name, sensor_config=config, poke_interval=0.1, timeout=60)


def test_a_local_run_waits_for_the_keyed_message_and_the_next_task_reads_it(tansu: Any):
    topic = asyncio.run(create_topic(tansu.bootstrap_servers))
    wait = sensor_for(tansu.bootstrap_servers, topic, "f2_wait_for_key")
    flyte.TaskEnvironment.from_task("f2_kafka_local", wait)
    thread, done = producing(tansu.bootstrap_servers, topic)
    try:
        messages = flyte.with_runcontext(mode="local").run(wait).outputs()[0]
    finally:
        done.set()
        thread.join()
    assert [(m.key, m.value, m.topic) for m in messages] == [("42", "paid", topic)]
    assert flyte.with_runcontext(mode="local").run(order_values, messages=messages).outputs()[0] == ["paid"]


def test_through_the_service_over_v2_the_message_reaches_the_next_task(tansu: Any):
    topic = asyncio.run(create_topic(tansu.bootstrap_servers))
    wait = sensor_for(tansu.bootstrap_servers, topic, "f2_wait_remote")
    flyte.TaskEnvironment.from_task("f2_kafka_remote", wait)
    with AgentService() as service:
        thread, done = producing(tansu.bootstrap_servers, topic)
        try:
            messages = asyncio.run(run_on_service(service.address, wait))
        finally:
            done.set()
            thread.join()
    assert [(m.key, m.value) for m in messages] == [("42", "paid")]
    assert isinstance(messages[0], KafkaMessage)
    assert flyte.with_runcontext(mode="local").run(order_values, messages=messages).outputs()[0] == ["paid"]
