"""Wait for a Kafka message with a KafkaSensor, then hand it to the next task; run locally.

    python examples/kafka_sensor.py

With ``KAFKA_BOOTSTRAP_SERVERS`` (and ``KAFKA_TOPIC``, default ``orders``) set, it waits
on that cluster for a message with key ``order-42`` produced after it started. Without,
it starts a local Tansu broker (``pip install flyteagents-kafka[test]``), creates the
topic and produces a few messages a second later; only the one with the right key and
a ``"status": "paid"`` value counts.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from flyteagents_kafka import KafkaMessage, KafkaSensor, KafkaSensorConfig
from flytekit import task, workflow


@task
def ship(messages: list[KafkaMessage]) -> str:
    m = messages[0]
    return f"shipping {m.key} (from {m.topic}[{m.partition}]@{m.offset}, trace {m.headers.get('trace', '-')})"


def build(bootstrap_servers: str, topic: str):
    wait_for_order = KafkaSensor(
        name="wait_for_order",
        sensor_config=KafkaSensorConfig(
            bootstrap_servers=bootstrap_servers, topic=topic, key="order-42", value_regex=r'"status":\s*"paid"'
        ),
        poke_interval=0.5,
        timeout=120,
    )

    @workflow
    def wf() -> str:
        return ship(messages=wait_for_order())

    return wf


async def _produce_later(bootstrap_servers: str, topic: str) -> None:
    from aiokafka import AIOKafkaProducer

    await asyncio.sleep(1.5)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        for key, value in [
            ("order-41", '{"status": "paid"}'),
            ("order-42", '{"status": "new"}'),
            ("order-42", '{"status": "paid"}'),
        ]:
            await producer.send_and_wait(topic, value.encode(), key=key.encode(), headers=[("trace", b"t-1")])
    finally:
        await producer.stop()


def main() -> None:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    topic = os.environ.get("KAFKA_TOPIC", "orders")
    if servers:
        print(build(servers, topic)())
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from flyteagents_kafka.testing import TansuBroker

    with TansuBroker() as broker:

        async def create_topic() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(topic, 2, 1)])
            finally:
                await admin.close()

        asyncio.run(create_topic())
        producer = threading.Thread(target=asyncio.run, args=(_produce_later(broker.bootstrap_servers, topic),))
        producer.start()
        started = time.monotonic()
        print(build(broker.bootstrap_servers, topic)())
        print(f"found in {time.monotonic() - started:.1f}s")
        producer.join()


if __name__ == "__main__":
    main()
