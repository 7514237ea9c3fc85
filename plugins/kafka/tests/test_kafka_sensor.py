"""KafkaSensor against a real Tansu broker: later messages, filters, restarts, shared connections, config errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from flyteagents_kafka import KafkaMessage, KafkaSensor, KafkaSensorConfig
from flyteagents_kafka._cluster import cluster_for
from flyteagents_kafka.testing import create_topic
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import FlyteContextManager, task, workflow
from flytekit.core.type_engine import TypeEngine

from flyteagents import InvalidTaskError, get_secret
from flyteagents.sensor import SensorEngine, SensorMetadata
from flyteagents.testing import flyte_connection, template_of

# The async tests share the session loop, hence the pooled clients, as pokes in one agent process do.
in_session_loop = pytest.mark.asyncio(loop_scope="session")


def outputs(sensor: Any, resource: Any) -> dict[str, Any]:
    ctx = FlyteContextManager.current_context()
    return TypeEngine.literal_map_to_kwargs(ctx, resource.outputs, sensor.python_interface.outputs)


def roundtrip(meta: SensorMetadata) -> SensorMetadata:
    return SensorMetadata.decode(meta.encode())


async def produce(
    servers: str, topic: str, *messages: tuple[str | None, str, dict[str, str]], partition: int = 0
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        for key, value, headers in messages:
            await producer.send_and_wait(
                topic,
                value.encode(),
                key=key.encode() if key is not None else None,
                headers=[(k, v.encode()) for k, v in headers.items()],
                partition=partition,
            )
    finally:
        await producer.stop()


def sensor_for(servers: str, topic: str, **options: Any) -> KafkaSensor:
    return KafkaSensor(
        name=f"kafka_{uuid.uuid4().hex[:6]}",
        sensor_config=KafkaSensorConfig(bootstrap_servers=servers, topic=topic, **options),
    )


@pytest.fixture
def engine() -> SensorEngine:
    return SensorEngine()


async def start(engine: SensorEngine, sensor: KafkaSensor) -> SensorMetadata:
    return roundtrip(await engine.create(template_of(sensor), "/tmp/kafka-out", None))


@in_session_loop
async def test_message_produced_later_is_found_with_all_fields(tansu: Any, engine: SensorEngine) -> None:
    servers = tansu.bootstrap_servers
    topic = await create_topic(servers, partitions=2)
    await produce(servers, topic, ("old", "before the sensor", {}), ("old", "also before", {}), partition=1)
    sensor = sensor_for(servers, topic)
    meta = await start(engine, sensor)
    assert meta.state == {"offsets": {"0": 0, "1": 2}}

    assert (await engine.get(meta)).phase == TaskExecution.RUNNING, "messages from before the sensor started count"

    before = int(time.time() * 1000)
    await produce(servers, topic, ("k1", "hello", {"source": "test"}), partition=1)
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    (message,) = outputs(sensor, resource)["messages"]
    assert (message.topic, message.partition, message.offset) == (topic, 1, 2)
    assert (message.key, message.value, message.headers) == ("k1", "hello", {"source": "test"})
    assert before - 5000 <= message.timestamp <= int(time.time() * 1000) + 5000


@in_session_loop
async def test_filters_skip_non_matching_messages(tansu: Any, engine: SensorEngine) -> None:
    servers = tansu.bootstrap_servers
    topic = await create_topic(servers, partitions=2)
    sensor = sensor_for(
        servers, topic, key="order-7", headers={"kind": "paid"}, value_regex=r'"amount":\s*\d+', max_messages=5
    )
    meta = await start(engine, sensor)
    await produce(
        servers,
        topic,
        ("order-1", '{"amount": 3}', {"kind": "paid"}),  # wrong key
        ("order-7", '{"amount": 3}', {"kind": "refund"}),  # wrong header
        ("order-7", '{"amount": "x"}', {"kind": "paid"}),  # value does not match
        ("order-7", '{"amount": 3}', {}),  # header missing
    )
    assert (await engine.get(meta)).phase == TaskExecution.RUNNING

    await produce(servers, topic, ("order-7", '{"amount": 42}', {"kind": "paid", "x": "y"}), partition=1)
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    messages = outputs(sensor, resource)["messages"]
    assert [(m.partition, m.value) for m in messages] == [(1, '{"amount": 42}')]


@in_session_loop
async def test_busy_topic_is_read_in_bounded_batches_without_consumer_groups(tansu: Any, engine: SensorEngine) -> None:
    servers = tansu.bootstrap_servers
    topic = await create_topic(servers, partitions=1)
    sensor = sensor_for(servers, topic, value_regex="^needle$", max_bytes_per_poke=1024)
    meta = await start(engine, sensor)
    await produce(servers, topic, *[(None, "hay" * 60 + str(i), {}) for i in range(60)], ("k", "needle", {}))

    phases = []
    for _ in range(60):
        resource = await engine.get(meta)
        phases.append(resource.phase)
        if resource.phase != TaskExecution.RUNNING:
            break
    assert phases[-1] == TaskExecution.SUCCEEDED
    assert len(phases) > 2, "one poke must not read the whole topic past max_bytes_per_poke"
    assert outputs(sensor, resource)["messages"][0].offset == 60

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        assert await admin.list_consumer_groups() == [], "the sensor must never join or commit to a group"
    finally:
        await admin.close()


@in_session_loop
async def test_another_replica_resumes_from_resource_meta(tansu: Any) -> None:
    servers = tansu.bootstrap_servers
    topic = await create_topic(servers, partitions=1)
    sensor = sensor_for(servers, topic, key="late")
    meta = await start(SensorEngine(), sensor)
    await produce(servers, topic, ("early", "no", {}), ("late", "yes", {}))
    resource = await SensorEngine().get(roundtrip(meta))  # a fresh engine: nothing cached
    assert resource.phase == TaskExecution.SUCCEEDED
    assert outputs(sensor, resource)["messages"][0].value == "yes"


@in_session_loop
async def test_topic_created_after_the_sensor_started(tansu: Any, engine: SensorEngine) -> None:
    servers = tansu.bootstrap_servers
    topic = f"later-{uuid.uuid4().hex[:8]}"
    sensor = sensor_for(servers, topic)
    meta = await start(engine, sensor)
    assert meta.state == {"offsets": {}}
    assert (await engine.get(meta)).phase == TaskExecution.RUNNING
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    await produce(servers, topic, ("a", "first", {}))
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message


@in_session_loop
async def test_broker_stopped_and_restarted_between_pokes(own_tansu: Any, engine: SensorEngine) -> None:
    servers = own_tansu.bootstrap_servers
    topic = await create_topic(servers, partitions=1)
    await produce(servers, topic, ("x", "one", {}), ("x", "two", {}))
    sensor = sensor_for(servers, topic, request_timeout=2.0)
    meta = await start(engine, sensor)
    assert (await engine.get(meta)).phase == TaskExecution.RUNNING

    await asyncio.to_thread(own_tansu.stop)
    down = await engine.get(meta)
    assert down.phase == TaskExecution.RUNNING, down.message
    assert "waiting: Kafka unreachable for" in (down.message or ""), down.message

    await asyncio.to_thread(own_tansu.start)
    # The broker kept nothing (in-memory storage): the topic comes back empty, at offset 0.
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    await produce(servers, topic, ("x", "after restart", {}))
    for _ in range(20):
        resource = await engine.get(meta)
        if resource.phase != TaskExecution.RUNNING:
            break
        await asyncio.sleep(0.2)
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    assert outputs(sensor, resource)["messages"][0].value == "after restart"


@in_session_loop
async def test_sensors_share_one_connection_per_broker(tansu: Any, engine: SensorEngine) -> None:
    servers = tansu.bootstrap_servers
    topics = [await create_topic(servers, partitions=1) for _ in range(5)]
    sensors = [sensor_for(servers, t) for t in topics for _ in range(10)]
    metas = [await start(engine, s) for s in sensors]
    results = await asyncio.gather(*(engine.get(m) for m in metas))
    assert {r.phase for r in results} == {TaskExecution.RUNNING}
    cluster = await cluster_for(sensors[0].config)
    assert all([await cluster_for(s.config) is cluster for s in sensors])
    client = await cluster.client()
    open_conns = [c for c in client._conns.values() if c.connected()]
    assert len(open_conns) == 1, open_conns


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bootstrap_servers": "no-port", "topic": "t"}, "bootstrap_servers"),
        ({"bootstrap_servers": "127.0.0.1:1", "topic": "bad topic"}, "valid Kafka topic"),
        ({"bootstrap_servers": "127.0.0.1:1", "topic": "t", "value_regex": "("}, "does not compile"),
        ({"bootstrap_servers": "127.0.0.1:1", "topic": "t", "max_messages": "3"}, "expected int"),
        ({"bootstrap_servers": "127.0.0.1:1", "topic": "t", "nope": 1}, "unknown field"),
        ({"bootstrap_servers": "127.0.0.1:1", "topic": "t", "security_protocol": "SASL_SSL"}, "sasl_mechanism"),
    ],
)
@in_session_loop
async def test_malformed_config_is_invalid_at_create(
    engine: SensorEngine, config: dict[str, Any], message: str
) -> None:
    template = template_of(sensor_for("127.0.0.1:9", "t"))
    template.custom["sensor_config"] = config
    with pytest.raises(InvalidTaskError, match=message):
        await engine.create(template, "/tmp/kafka-out", None)


@in_session_loop
async def test_sasl_password_is_a_secret_name_never_in_resource_meta(
    tansu: Any, engine: SensorEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "bootstrap_servers": tansu.bootstrap_servers,
        "topic": "t",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "alice",
        "sasl_password_secret": "kafka-password",
    }
    template = template_of(sensor_for("127.0.0.1:9", "t"))
    template.custom["sensor_config"] = config
    monkeypatch.delenv("FLYTEAGENTS_SECRET_KAFKA_PASSWORD", raising=False)
    monkeypatch.setenv("FLYTEAGENTS_SECRETS_DIR", "/nonexistent")
    with pytest.raises(InvalidTaskError, match="FLYTEAGENTS_SECRET_KAFKA_PASSWORD") as err:
        await engine.create(template, "/tmp/kafka-out", None)
    assert "kafka-password" in str(err.value)

    monkeypatch.setenv("FLYTEAGENTS_SECRET_KAFKA_PASSWORD", "hunter2-very-secret")
    assert get_secret("kafka-password") == "hunter2-very-secret"
    try:
        meta = await engine.create(template, "/tmp/kafka-out", None)
    except Exception as exc:  # Tansu speaks no SASL here; what matters is what leaks
        assert "hunter2" not in str(exc)
    else:
        assert b"hunter2" not in meta.encode()
    assert "hunter2" not in json.dumps(template.custom)


def test_secret_names_cannot_escape_the_secrets_directory() -> None:
    with pytest.raises(ValueError, match="secret name"):
        KafkaSensorConfig(
            bootstrap_servers="h:1",
            topic="t",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="u",
            sasl_password_secret="../../etc/passwd",
        )


# A module-level sensor and workflow, as users write them; the config is set per test run.
class _Late(threading.Thread):
    def __init__(self, servers: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.servers, self.topic = servers, topic

    def run(self) -> None:
        time.sleep(1.0)
        asyncio.run(produce(self.servers, self.topic, ("wf", "for the next task", {"n": "1"})))


@task
def describe(messages: list[KafkaMessage]) -> str:
    m = messages[0]
    return f"{m.topic}/{m.partition}/{m.offset}: {m.value} {m.headers}"


def test_outputs_reach_the_next_task_in_a_local_workflow(tansu: Any) -> None:
    servers = tansu.bootstrap_servers
    topic = asyncio.run(create_topic(servers, partitions=1))
    wait = KafkaSensor(
        name="wait_for_kafka",
        sensor_config=KafkaSensorConfig(bootstrap_servers=servers, topic=topic),
        poke_interval=0.2,
        timeout=30,
    )

    @workflow
    def wf() -> str:
        return describe(messages=wait())

    producer = _Late(servers, topic)
    producer.start()
    assert wf() == f"{topic}/0/0: for the next task {{'n': '1'}}"
    producer.join(10)


@in_session_loop
async def test_each_flyte2_tasks_own_password_gets_its_own_cluster_client() -> None:
    config = KafkaSensorConfig(
        bootstrap_servers="127.0.0.1:9",
        topic="t",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password_secret="kafka-password",
    )
    with flyte_connection({"kafka-password": "password-of-tenant-a"}):
        first = await cluster_for(config)
        assert await cluster_for(config) is first
    with flyte_connection({"kafka-password": "password-of-tenant-b"}):
        assert await cluster_for(config) is not first  # never tenant A's connections
    assert "password-of" not in repr(first.key)
