"""TLS and mutual TLS to the agent service, with certificates made in the test."""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flyteidl.admin import agent_pb2
from flyteidl.service import agent_pb2_grpc

from flyteagents.client import AgentClient, channel_credentials
from flyteagents.server import server_credentials
from flyteagents.testing import AgentServer

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(subject: str, key, issuer_name: x509.Name | None, issuer_key, *, ca: bool = False, server: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all PEM."""

    def __init__(self) -> None:
        ca_key = _key()
        ca = _cert("flyteagents test CA", ca_key, None, None, ca=True)
        server_key, client_key = _key(), _key()
        self.ca = ca.public_bytes(serialization.Encoding.PEM)
        self.server_cert = _cert("127.0.0.1", server_key, ca.subject, ca_key, server=True).public_bytes(
            serialization.Encoding.PEM
        )
        self.server_key = _pem_key(server_key)
        self.client_cert = _cert("propeller", client_key, ca.subject, ca_key).public_bytes(serialization.Encoding.PEM)
        self.client_key = _pem_key(client_key)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


async def _list(endpoint: str, credentials: grpc.ChannelCredentials) -> list[str]:
    async with AgentClient(endpoint, credentials=credentials, timeout=5) as client:
        return [agent.name for agent in await client.list_agents()]


async def test_tls(pki):
    creds = server_credentials(pki.server_cert, pki.server_key)
    async with AgentServer(
        sa.make_registry(), server_credentials=creds, channel_credentials=channel_credentials(pki.ca)
    ) as server:
        response = await server.async_stub.CreateTask(sa.create_request(sa.JOB_TYPE, outcome="ok"))
        assert sa.JobMeta.decode(response.resource_meta).outcome == "ok"
        # A plaintext client cannot talk to a TLS server.
        async with grpc.aio.insecure_channel(server.address) as plain:
            stub = agent_pb2_grpc.AgentMetadataServiceStub(plain)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=3)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_rejects_a_client_without_certificate(pki):
    creds = server_credentials(pki.server_cert, pki.server_key, client_ca=pki.ca)
    with_cert = channel_credentials(pki.ca, pki.client_cert, pki.client_key)
    async with AgentServer(sa.make_registry(), server_credentials=creds, channel_credentials=with_cert) as server:
        assert sa.JobAgent.name in await _list(server.address, with_cert)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _list(server.address, channel_credentials(pki.ca))  # trusts the server, shows no certificate
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        stranger = Pki()  # a certificate from another CA is refused too
        with pytest.raises(grpc.aio.AioRpcError):
            await _list(server.address, channel_credentials(pki.ca, stranger.client_cert, stranger.client_key))
