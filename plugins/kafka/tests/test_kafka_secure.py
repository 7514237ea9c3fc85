"""KafkaSensor over TLS (private CA, mutual TLS) and with a SASL login, configured as docs/plugins/kafka.md shows.

Tansu's own TLS options do not serve TLS in the packaged version (0.6.0), and its SCRAM login
does not complete with aiokafka, so the broker listens in clear text on loopback and advertises
a listener in front of it, as a TLS-terminating load balancer in front of brokers would: every
connection the agent makes, to the bootstrap server and to the advertised broker, goes through
it. For SASL that listener also answers the SASL handshake and PLAIN login itself (Kafka's
SaslHandshake and SaslAuthenticate requests) before passing the connection through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context
from doc_commands import ROOT, code_block
from flyteagents_kafka import KafkaSensor, KafkaSensorConfig
from flyteagents_kafka.testing import TansuBroker
from flyteidl.core.execution_pb2 import TaskExecution
from network_fixtures import Forwarder, PrivateCA, _splice, private_ca

from flyteagents import AgentRegistry, ExternalServiceError
from flyteagents.sensor import SensorEngine, SensorMetadata
from flyteagents.testing import AgentServer, create_task_request, template_of

in_session_loop = pytest.mark.asyncio(loop_scope="session")

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


def documented(name: str, replace: dict[str, str]) -> KafkaSensorConfig:
    """The ``KafkaSensorConfig`` assigned to ``name`` in the docs page, with this test's broker, topic and files."""
    source = code_block("docs/plugins/kafka.md", "python", f"{name} = KafkaSensorConfig(")
    for old, new in replace.items():
        assert old in source, f"docs/plugins/kafka.md no longer shows {old!r}"
        source = source.replace(old, new)
    namespace: dict[str, Any] = {"KafkaSensorConfig": KafkaSensorConfig}
    exec(source, namespace)
    config = namespace[name]
    assert isinstance(config, KafkaSensorConfig)
    return config


def documented_config(ca: PrivateCA, servers: str, topic: str, agent_cert: tuple[str, str]) -> KafkaSensorConfig:
    """The docs page's TLS example, with this test's broker, topic and files."""
    replace = {
        "kafka.internal.example:9093": servers,
        '"orders"': repr(topic),
        "/etc/kafka/private-ca.pem": ca.ca_file,
        "/etc/kafka/agent.pem": agent_cert[0],
        "/etc/kafka/agent-key.pem": agent_cert[1],
    }
    config = documented("tls_config", replace)
    assert config.security_protocol == "SSL"
    return config


def ssl_context(ca: PrivateCA, cert: tuple[str, str]) -> Any:
    return create_ssl_context(cafile=ca.ca_file, certfile=cert[0], keyfile=cert[1], password=KEY_PASSWORD)


async def send_paid_order(servers: str, topic: str, **client_options: Any) -> None:
    """Publish the message the tests' sensors wait for, connecting with the given security options."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, **client_options)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"paid", key=b"order-42")
    finally:
        await producer.stop()


@in_session_loop
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

    await send_paid_order(servers, topic, security_protocol="SSL", ssl_context=ssl_context(ca, agent_cert))
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    assert front.handshakes > handshakes, "the sensor's connections were TLS, through the listener"
    assert "agent" in front.client_subjects, "the agent presented its client certificate"


@in_session_loop
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


# -- SASL ---------------------------------------------------------------------------------------------

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
SASL_AUTHENTICATION_FAILED = 58


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">h", len(data)) + data


class SaslPlainFront(Forwarder):
    """A listener before a broker that asks for a SASL PLAIN login (over TLS with ``cert``), then passes bytes on.

    It answers SaslHandshake (offering PLAIN) and SaslAuthenticate itself, as a broker with SASL
    enabled does, and forwards ApiVersions (allowed before a login) and, after a good login,
    everything. ``logins`` lists the users it let in; ``refused`` counts refused logins.
    """

    def __init__(self, backend: Any, cert: tuple[str, str], users: dict[str, str]) -> None:
        super().__init__(backend, cert)
        self.users = users
        self.logins: list[str] = []
        self.refused = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            upstream = await asyncio.open_connection(*self.backend())
            while True:
                frame = await reader.readexactly(struct.unpack(">i", await reader.readexactly(4))[0])
                api_key, version, correlation = struct.unpack(">hhi", frame[:8])
                client_id_length = struct.unpack(">h", frame[8:10])[0]
                body = frame[10 + max(client_id_length, 0) :]
                if api_key == API_VERSIONS:  # before a login too, as brokers allow
                    upstream[1].write(struct.pack(">i", len(frame)) + frame)
                    size = await upstream[0].readexactly(4)
                    writer.write(size + await upstream[0].readexactly(struct.unpack(">i", size)[0]))
                elif api_key == SASL_HANDSHAKE:
                    writer.write(self._frame(correlation, struct.pack(">hi", 0, 1) + _string("PLAIN")))
                elif api_key == SASL_AUTHENTICATE:
                    (length,) = struct.unpack(">i", body[:4])
                    _, user, password = body[4 : 4 + length].decode().split("\0")
                    ok = self.users.get(user) == password
                    answer = struct.pack(">h", 0 if ok else SASL_AUTHENTICATION_FAILED)
                    answer += struct.pack(">h", -1) if ok else _string("Authentication failed: invalid credentials")
                    answer += struct.pack(">i", 0) + (struct.pack(">q", 0) if version >= 1 else b"")
                    writer.write(self._frame(correlation, answer))
                    await writer.drain()
                    if not ok:
                        self.refused += 1
                        return
                    self.logins.append(user)
                    await _splice((reader, writer), upstream)
                    return
                else:
                    return  # anything else before a login: the connection is dropped, as a broker drops it
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()

    @staticmethod
    def _frame(correlation: int, body: bytes) -> bytes:
        payload = struct.pack(">i", correlation) + body
        return struct.pack(">i", len(payload)) + payload


@pytest.fixture(scope="module")
def sasl_broker(ca: PrivateCA) -> Iterator[tuple[SaslPlainFront, TansuBroker]]:
    broker: TansuBroker | None = None
    front = SaslPlainFront(
        lambda: ("127.0.0.1", broker.port if broker else 0),
        ca.issue("sasl-broker", "localhost"),
        {"flyte-agent": "the-right-password"},
    )
    with front:
        broker = TansuBehindTLS(f"localhost:{front.port}").start()
        try:
            yield front, broker
        finally:
            broker.stop()


@in_session_loop
async def test_the_documented_sasl_config_logs_in_with_the_password_secret(
    sasl_broker: tuple[SaslPlainFront, TansuBroker], ca: PrivateCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    front, _ = sasl_broker
    servers = f"localhost:{front.port}"
    login = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "flyte-agent",
        "sasl_plain_password": "the-right-password",
        "ssl_context": create_ssl_context(cafile=ca.ca_file),
    }
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, **login)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()

    replace = {"kafka.internal.example:9094": servers, '"orders"': repr(topic), "/etc/kafka/private-ca.pem": ca.ca_file}
    config = documented("sasl_config", replace)
    assert config.sasl_password_secret == "kafka-password"
    monkeypatch.setenv("FLYTEAGENTS_SECRET_KAFKA_PASSWORD", "the-right-password")  # as the comment says
    sensor = KafkaSensor(name=f"kafka_sasl_{uuid.uuid4().hex[:6]}", sensor_config=config)
    engine = SensorEngine()
    logins = len(front.logins)
    meta = SensorMetadata.decode((await engine.create(template_of(sensor), "/tmp/kafka-out", None)).encode())
    assert len(front.logins) > logins, "the sensor logged in"
    await send_paid_order(servers, topic, **login)
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message

    # A wrong password: refused, and the message never shows it.
    monkeypatch.setenv("FLYTEAGENTS_SECRET_KAFKA_PASSWORD", "a-wrong-password")
    wrong = dataclasses.replace(config, topic=f"other-{uuid.uuid4().hex[:6]}")  # a new password: a new login
    refused = front.refused
    with pytest.raises(ExternalServiceError) as info:
        await engine.create(template_of(KafkaSensor(name="kafka_sasl_wrong", sensor_config=wrong)), "/tmp/k", None)
    assert front.refused > refused
    assert not info.value.retryable, "asking again gives the same answer"
    assert "refused the SASL login of 'flyte-agent'" in str(info.value) and "kafka-password" in str(info.value)
    assert "a-wrong-password" not in str(info.value)


def test_every_connection_option_in_the_table_is_in_an_example_a_test_runs() -> None:
    """The options table's settings for reaching brokers all appear in the TLS or SASL example run above."""
    page = (ROOT / "docs/plugins/kafka.md").read_text()
    table = page.split("## Options", 1)[1].split("\n\n", 2)[1]
    options = {name for line in table.splitlines() for name in re.findall(r"`([a-z_]+)`", line.split("|")[1])}
    reaching = {o for o in options if o.startswith(("bootstrap_", "security_", "sasl_", "ssl_"))}
    assert reaching == {
        "bootstrap_servers",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password_secret",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_key_password_secret",
    }
    examples = code_block("docs/plugins/kafka.md", "python", "tls_config = ") + code_block(
        "docs/plugins/kafka.md", "python", "sasl_config = "
    )
    assert all(f"{option}=" in examples for option in reaching), reaching - {o for o in reaching if f"{o}=" in examples}
