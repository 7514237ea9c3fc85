"""KafkaSensor over TLS with a private CA and mutual TLS, configured as docs/plugins/kafka.md shows.

Tansu's own TLS options do not serve TLS in the packaged version (0.6.0), so the broker listens
in clear text on loopback and advertises a TLS listener in front of it, as a TLS-terminating
load balancer in front of brokers would: every connection the agent makes, to the bootstrap
server and to the advertised broker, is TLS checked against the private CA.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context
from doc_commands import code_block
from flyteagents_kafka import KafkaSensor, KafkaSensorConfig
from flyteagents_kafka.testing import TansuBroker
from flyteidl.core.execution_pb2 import TaskExecution
from network_fixtures import Forwarder, PrivateCA, private_ca

from flyteagents import AgentRegistry, ExternalServiceError
from flyteagents.sensor import SensorEngine, SensorMetadata
from flyteagents.testing import AgentServer, create_task_request, template_of

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY_PASSWORD = "key-password-for-tests"


class TansuBehindTLS(TansuBroker):
    """Tansu listening in clear text on loopback, advertising ``advertised`` (the TLS listener) to clients."""

    def __init__(self, advertised: str) -> None:
        super().__init__()
        self.advertised = advertised

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--advertised-listener-url") + 1] = f"tcp://{self.advertised}"
        return command


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return private_ca(tmp_path_factory.mktemp("kafka-ca"))


@pytest.fixture(scope="module")
def tls_broker(ca: PrivateCA) -> Iterator[tuple[Forwarder, TansuBroker]]:
    """A TLS listener for ``localhost`` signed by the private CA, requiring client certificates, before Tansu."""
    broker: TansuBroker | None = None
    front = Forwarder(lambda: ("127.0.0.1", broker.port if broker else 0), ca.issue("broker", "localhost"), ca.ca_file)
    with front:
        broker = TansuBehindTLS(f"localhost:{front.port}").start()
        try:
            yield front, broker
        finally:
            broker.stop()


def documented_config(ca: PrivateCA, servers: str, topic: str, agent_cert: tuple[str, str]) -> KafkaSensorConfig:
    """The ``KafkaSensorConfig`` of the docs page's TLS example, with this test's broker, topic and files."""
    source = code_block("docs/plugins/kafka.md", "python", "ssl_cafile=")
    replace = {
        "kafka.internal.example:9093": servers,
        '"orders"': repr(topic),
        "/etc/kafka/private-ca.pem": ca.ca_file,
        "/etc/kafka/agent.pem": agent_cert[0],
        "/etc/kafka/agent-key.pem": agent_cert[1],
    }
    for old, new in replace.items():
        assert old in source, f"docs/plugins/kafka.md no longer shows {old!r}"
        source = source.replace(old, new)
    namespace: dict[str, Any] = {"KafkaSensorConfig": KafkaSensorConfig}
    exec(source, namespace)
    config = namespace["tls_config"]
    assert isinstance(config, KafkaSensorConfig) and config.security_protocol == "SSL"
    return config


def ssl_context(ca: PrivateCA, cert: tuple[str, str]) -> Any:
    return create_ssl_context(cafile=ca.ca_file, certfile=cert[0], keyfile=cert[1], password=KEY_PASSWORD)


async def test_the_documented_tls_config_reaches_a_broker_behind_a_private_ca(
    tls_broker: tuple[Forwarder, TansuBroker], ca: PrivateCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    front, _ = tls_broker
    servers = f"localhost:{front.port}"
    agent_cert = ca.issue("agent", client=True, password=KEY_PASSWORD.encode())
    monkeypatch.setenv("FLYTEAGENTS_SECRET_KAFKA_AGENT_KEY", KEY_PASSWORD)  # ssl_key_password_secret's value

    topic = f"tls-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers, security_protocol="SSL", ssl_context=ssl_context(ca, agent_cert)
    )
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()

    config = documented_config(ca, servers, topic, agent_cert)
    sensor = KafkaSensor(name=f"kafka_tls_{uuid.uuid4().hex[:6]}", sensor_config=config)
    engine = SensorEngine()
    handshakes = front.handshakes
    meta = SensorMetadata.decode((await engine.create(template_of(sensor), "/tmp/kafka-out", None)).encode())
    assert (await engine.get(meta)).phase == TaskExecution.RUNNING

    producer = AIOKafkaProducer(
        bootstrap_servers=servers, security_protocol="SSL", ssl_context=ssl_context(ca, agent_cert)
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"paid", key=b"order-42")
    finally:
        await producer.stop()
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    assert front.handshakes > handshakes, "the sensor's connections were TLS, through the listener"
    assert "agent" in front.client_subjects, "the agent presented its client certificate"


async def test_a_broker_certificate_the_agent_does_not_trust_fails_at_once_saying_what_to_set(
    tls_broker: tuple[Forwarder, TansuBroker], ca: PrivateCA
) -> None:
    front, _ = tls_broker
    agent_cert = ca.issue("agent-untrusting", client=True)
    config = KafkaSensorConfig(  # no ssl_cafile: the system's CAs, which know nothing of the private CA
        bootstrap_servers=f"localhost:{front.port}",
        topic="orders",
        security_protocol="SSL",
        ssl_certfile=agent_cert[0],
        ssl_keyfile=agent_cert[1],
    )
    sensor = KafkaSensor(name=f"kafka_tls_{uuid.uuid4().hex[:6]}", sensor_config=config)
    with pytest.raises(ExternalServiceError) as info:
        await SensorEngine().create(template_of(sensor), "/tmp/kafka-out", None)
    assert not info.value.retryable, "retrying cannot fix a certificate"
    assert "not trusted" in str(info.value) and "ssl_cafile" in str(info.value), str(info.value)

    registry = AgentRegistry()
    registry.register(SensorEngine())
    async with AgentServer(registry) as server:
        with pytest.raises(grpc.aio.AioRpcError) as rpc:
            await server.async_stub.CreateTask(create_task_request(sensor, "/tmp/kafka-out"), timeout=30)
    assert rpc.value.code() == grpc.StatusCode.FAILED_PRECONDITION, "not UNAVAILABLE, which propeller retries"
    assert "ssl_cafile" in (rpc.value.details() or "")
