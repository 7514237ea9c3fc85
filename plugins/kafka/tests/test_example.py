"""examples/kafka_sensor.py runs as a user would run it and prints what the next task made of the message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "kafka_sensor.py"
EXPECTED = "shipping order-42 (from orders[0]@"


@pytest.mark.slow
def test_example_runs_end_to_end() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert EXPECTED in result.stdout, result.stdout


@pytest.mark.slow
def test_example_against_a_cluster_named_by_kafka_bootstrap_servers(tansu: Any) -> None:
    """The example as documented for one's own cluster: KAFKA_BOOTSTRAP_SERVERS and KAFKA_TOPIC."""
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=tansu.bootstrap_servers, KAFKA_TOPIC=topic)

    async def create_and_produce_until(done: subprocess.Popen[str]) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap_servers)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap_servers)
        await producer.start()
        try:  # the sensor counts only messages produced after it started: keep producing until it is done
            while done.poll() is None:
                await producer.send_and_wait(topic, b'{"status": "paid"}', key=b"order-42")
                await asyncio.sleep(0.5)
        finally:
            await producer.stop()

    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        asyncio.run(asyncio.wait_for(create_and_produce_until(proc), 180))
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"shipping order-42 (from {topic}[0]@" in out, out
