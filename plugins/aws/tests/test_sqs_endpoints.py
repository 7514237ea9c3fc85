"""Reaching a queue that is not on AWS, and the agent's missing settings, against a real moto_server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from doc_commands import ROOT, Command, commands
from flyteagents_aws import SQSSensor, SQSSensorConfig
from flyteagents_aws._clients import _CLIENTS
from flyteagents_aws._config import resolve_endpoint
from flyteidl.core.execution_pb2 import TaskExecution
from network_fixtures import ConnectProxy, Forwarder, private_ca

from flyteagents.sensor import SensorEngine, SensorMetadata
from flyteagents.testing import MotoServer, template_of

DOCS = "docs/plugins/aws.md"


@pytest.fixture
def no_endpoint_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent environment that names no SQS endpoint (the session fixture sets one for moto)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS", raising=False)


async def poke(sensor: SQSSensor, tmp_path: Path) -> Any:
    engine = SensorEngine()
    meta = SensorMetadata.decode((await engine.create(template_of(sensor), str(tmp_path), None)).encode())
    return await engine.get(meta)


def sensor_on(queue_url: str, **options: Any) -> SQSSensor:
    config = SQSSensorConfig(queue_url=queue_url, wait_seconds=0, **options)
    return SQSSensor(name=f"sqs_{uuid.uuid4().hex[:6]}", sensor_config=config)


@pytest.mark.parametrize(
    ("queue_url", "environ", "expected"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", {}, ("eu-west-1", None)),
        ("https://eu-west-1.queue.amazonaws.com/123456789012/q", {}, ("eu-west-1", None)),
        ("https://queue.amazonaws.com/123456789012/q", {}, ("us-east-1", None)),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", {}, ("cn-north-1", None)),
        ("http://localhost:4566/000000000000/q", {}, (None, "http://localhost:4566")),
        ("http://localhost:4566/000000000000/q", {"AWS_ENDPOINT_URL": "http://proxy:1"}, (None, None)),
        ("http://localhost:4566/000000000000/q", {"AWS_ENDPOINT_URL_SQS": "http://proxy:1"}, (None, None)),
        ("http://localhost:4566/000000000000/q", {"AWS_REGION": "eu-west-3"}, ("eu-west-3", "http://localhost:4566")),
        ("http://h:1/0/q", {"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "us-west-1"}, (None, "http://h:1")),
    ],
)
def test_region_and_endpoint_come_from_the_queue_url(
    queue_url: str, environ: dict[str, str], expected: tuple[str | None, str | None]
) -> None:
    assert resolve_endpoint(SQSSensorConfig(queue_url=queue_url), environ) == expected


def test_the_config_and_the_environment_win_over_the_queue_url() -> None:
    config = SQSSensorConfig(
        queue_url="https://sqs.eu-west-1.amazonaws.com/1/q", region="us-west-2", endpoint_url="https://vpce.example"
    )
    assert resolve_endpoint(config, {}) == ("us-west-2", "https://vpce.example")


async def test_a_local_queue_url_is_its_own_endpoint(
    moto: MotoServer, sqs: Any, queue_url: str, no_endpoint_variable: None, tmp_path: Path
) -> None:
    assert queue_url.startswith(moto.endpoint_url)
    sqs.send_message(QueueUrl=queue_url, MessageBody="here")
    resource = await poke(sensor_on(queue_url), tmp_path)  # no endpoint_url, no AWS_ENDPOINT_URL
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message


async def test_no_region_anywhere_fails_saying_where_to_set_it(
    moto: MotoServer, queue_url: str, no_endpoint_variable: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    resource = await poke(sensor_on(queue_url), tmp_path)
    assert resource.phase == TaskExecution.FAILED
    assert "no AWS region" in resource.message and "AWS_DEFAULT_REGION" in resource.message


async def test_no_credentials_fail_saying_how_to_give_them(
    moto: MotoServer, queue_url: str, no_endpoint_variable: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    resource = await poke(sensor_on(queue_url, region="us-east-1"), tmp_path)
    assert resource.phase == TaskExecution.FAILED
    assert "no AWS credentials" in resource.message and "AWS_ACCESS_KEY_ID" in resource.message


async def test_a_missing_queue_fails_and_logs_one_line(
    moto: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    missing = f"{moto.endpoint_url}/123456789012/ghost-{uuid.uuid4().hex[:6]}"
    resource = await poke(sensor_on(missing, endpoint_url=moto.endpoint_url, region="us-east-1"), tmp_path)
    assert resource.phase == TaskExecution.FAILED
    assert "does not exist" in resource.message.lower() or "NonExistentQueue" in resource.message
    (line,) = [r for r in caplog.records if "failed" in r.getMessage() and "SQSSensor" in r.getMessage()]
    assert line.exc_info is None, "a missing queue is one log line, not a traceback"


def run_documented(command: Command) -> subprocess.CompletedProcess[str]:
    """Run a command from docs/plugins/aws.md from the repository's root, with only the AWS settings it names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.lower().endswith("_proxy")}
    env.update(command.env)
    assert command.argv[0] == "python"
    argv = [sys.executable, *command.argv[1:]]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def send_events(sqs: Any, queue_url: str) -> None:
    for event in ("deleted", "uploaded"):
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"event": event, "key": f"{event}.csv"}))


@pytest.mark.slow
def test_example_with_sqs_queue_url_of_a_local_server(moto: MotoServer, sqs: Any, queue_url: str) -> None:
    """The docs' command for one's own queue, as written: only SQS_QUEUE_URL, region and keys."""
    send_events(sqs, queue_url)
    (command,) = commands(DOCS, "SQS_QUEUE_URL=http://", {"http://127.0.0.1:5000/123456789012/uploads": queue_url})
    result = run_documented(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processing uploaded.csv" in result.stdout, result.stdout


@pytest.mark.slow
def test_example_through_a_proxy_to_an_endpoint_behind_a_private_ca(tmp_path: Path) -> None:
    """The docs' HTTPS_PROXY command, as written: the proxy tunnels every call, AWS_CA_BUNDLE trusts the CA."""
    import boto3

    ca = private_ca(tmp_path)
    with TlsMoto(ca.issue("sqs", "localhost", "sqs.internal.example"), trust=ca.ca_file) as server:
        sqs = boto3.client("sqs", endpoint_url=server.endpoint_url, verify=ca.ca_file, **server.credentials)
        queue_url = sqs.create_queue(QueueName="uploads")["QueueUrl"]
        send_events(sqs, queue_url)
        with ConnectProxy({"sqs.internal.example:443": ("127.0.0.1", server.port)}) as proxy:
            replace = {"http://proxy.internal.example:3128": proxy.url, "/etc/ssl/private-ca.pem": ca.ca_file}
            (command,) = commands(DOCS, "HTTPS_PROXY=", replace)
            result = run_documented(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processing uploaded.csv" in result.stdout, result.stdout
    # Only the proxy could resolve the name: every call went through it.
    assert proxy.tunnels and set(proxy.tunnels) == {"sqs.internal.example:443"}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost: a private CA's, as far as the client can tell."""
    from flyteagents.testing import self_signed_certificate

    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


class TlsMoto(MotoServer):
    """moto_server over https with a given certificate (for localhost)."""

    def __init__(self, certificate: tuple[str, str], trust: str | None = None) -> None:
        super().__init__()
        self.certificate = certificate
        self.trust = trust or certificate[0]  # the CA file that signed it (a self-signed one is its own)

    @property
    def endpoint_url(self) -> str:
        return f"https://localhost:{self.port}"

    def command(self) -> list[str]:
        cert, key = self.certificate
        return [*super().command(), "-c", cert, "-k", key]

    def ready(self) -> bool:
        import ssl
        import urllib.error
        import urllib.request

        context = ssl.create_default_context(cafile=self.trust)
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=1, context=context):
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


async def test_a_queue_behind_a_private_ca(
    certificate: tuple[str, str], moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An https queue URL whose certificate the agent does not trust fails at once; AWS_CA_BUNDLE fixes it."""
    import boto3

    with TlsMoto(certificate) as server:
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        monkeypatch.delenv("AWS_ENDPOINT_URL_SQS", raising=False)
        sqs = boto3.client("sqs", endpoint_url=server.endpoint_url, verify=certificate[0], **server.credentials)
        queue_url = sqs.create_queue(QueueName=f"tls-{uuid.uuid4().hex[:6]}")["QueueUrl"]
        assert queue_url.startswith("https://localhost:")
        sqs.send_message(QueueUrl=queue_url, MessageBody="over tls")
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        refused = await poke(sensor_on(queue_url), tmp_path)
        monkeypatch.setenv("AWS_CA_BUNDLE", certificate[0])
        trusted = await poke(sensor_on(queue_url, region="us-east-1"), tmp_path)  # another client key: a new client
    assert refused.phase == TaskExecution.FAILED, refused.message
    assert "not trusted" in refused.message and "AWS_CA_BUNDLE" in refused.message
    assert trusted.phase == TaskExecution.SUCCEEDED, trusted.message


# -- every variable of the page's "Reaching the queue" table, in the agent's environment -------------


def documented_variables() -> set[str]:
    """The environment variables in the first column of the page's "Reaching the queue" table."""
    page = (ROOT / DOCS).read_text()
    section = page.split("## Reaching the queue", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| ")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


@pytest.fixture
def agent_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An agent environment with none of the table's variables, no AWS config files, no proxy."""
    for name in [*documented_variables(), "https_proxy", "no_proxy", "HTTP_PROXY", "http_proxy"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def moto_front(moto: MotoServer) -> Forwarder:
    """A TCP front for moto that keeps what clients send (the signed requests)."""
    return Forwarder(lambda: (moto.host, moto.port))


async def fresh_poke(sensor: SQSSensor, tmp_path: Path) -> Any:
    """One poke on a loop of its own: new clients, reading the environment as a newly started agent does."""

    async def poke_and_close() -> Any:
        try:
            return await poke(sensor, tmp_path)
        finally:
            await _CLIENTS.aclose()

    return await asyncio.to_thread(asyncio.run, poke_and_close())


async def endpoint_variables(env: pytest.MonkeyPatch, moto: MotoServer, sqs: Any, tmp_path: Path) -> None:
    """An AWS queue URL, reached at the endpoint the variables name; the SQS-specific one wins."""
    name = f"aws-named-{uuid.uuid4().hex[:6]}"
    sqs.send_message(QueueUrl=sqs.create_queue(QueueName=name)["QueueUrl"], MessageBody="here")
    queue_url = f"https://sqs.us-east-1.amazonaws.com/123456789012/{name}"
    env.setenv("AWS_ACCESS_KEY_ID", "testing")
    env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto_front(moto) as general, moto_front(moto) as sqs_only:
        env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{general.port}")
        first = await fresh_poke(sensor_on(queue_url, delete_on_receive=False), tmp_path)
        assert first.phase == TaskExecution.SUCCEEDED, first.message
        assert general.handshakes and not sqs_only.handshakes
        env.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{sqs_only.port}")
        calls = general.handshakes
        second = await fresh_poke(sensor_on(queue_url), tmp_path)
        assert second.phase == TaskExecution.SUCCEEDED, second.message
        assert sqs_only.handshakes and general.handshakes == calls


async def region_variables(env: pytest.MonkeyPatch, moto: MotoServer, sqs: Any, tmp_path: Path) -> None:
    """moto keeps queues per region: a queue in eu-west-1 is found only when the agent signs for eu-west-1."""
    import boto3

    eu = boto3.client("sqs", endpoint_url=moto.endpoint_url, **{**moto.credentials, "region_name": "eu-west-1"})
    queue_url = eu.create_queue(QueueName=f"eu-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    eu.send_message(QueueUrl=queue_url, MessageBody="bonjour")
    env.setenv("AWS_ACCESS_KEY_ID", "testing")
    env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    wrong = await fresh_poke(sensor_on(queue_url), tmp_path)
    env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    right = await fresh_poke(sensor_on(queue_url, delete_on_receive=False), tmp_path)
    env.delenv("AWS_DEFAULT_REGION")
    env.setenv("AWS_REGION", "eu-west-1")
    also = await fresh_poke(sensor_on(queue_url), tmp_path)
    assert wrong.phase == TaskExecution.FAILED, wrong.message
    assert right.phase == TaskExecution.SUCCEEDED, right.message
    assert also.phase == TaskExecution.SUCCEEDED, also.message


async def credential_variables(env: pytest.MonkeyPatch, moto: MotoServer, sqs: Any, tmp_path: Path) -> None:
    """The keys and session token in the environment sign the agent's requests (read off the wire)."""
    queue_url = sqs.create_queue(QueueName=f"keys-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY")
    env.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    env.setenv("AWS_SESSION_TOKEN", "env-session-token")
    with moto_front(moto) as front:
        env.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{front.port}")
        await fresh_poke(sensor_on(queue_url), tmp_path)
    assert b"Credential=AKIAENVIRONMENTKEY/" in front.received
    assert b"env-session-token" in front.received and b"env-secret" not in front.received


async def profile_variable(env: pytest.MonkeyPatch, moto: MotoServer, sqs: Any, tmp_path: Path) -> None:
    queue_url = sqs.create_queue(QueueName=f"profile-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    credentials = tmp_path / "credentials"
    credentials.write_text("[team]\naws_access_key_id = AKIAPROFILEKEY\naws_secret_access_key = profile-secret\n")
    env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env.setenv("AWS_PROFILE", "team")
    with moto_front(moto) as front:
        env.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{front.port}")
        await fresh_poke(sensor_on(queue_url), tmp_path)
    assert b"Credential=AKIAPROFILEKEY/" in front.received


async def proxy_variables(env: pytest.MonkeyPatch, moto: MotoServer, sqs: Any, tmp_path: Path) -> None:
    """An https endpoint through HTTPS_PROXY, trusted through AWS_CA_BUNDLE; NO_PROXY's hosts directly."""
    import boto3

    ca = private_ca(tmp_path)
    with TlsMoto(ca.issue("sqs", "localhost"), trust=ca.ca_file) as server:
        tls_sqs = boto3.client("sqs", endpoint_url=server.endpoint_url, verify=ca.ca_file, **server.credentials)
        queue_url = tls_sqs.create_queue(QueueName="proxied")["QueueUrl"]
        tls_sqs.send_message(QueueUrl=queue_url, MessageBody="through")
        for name, value in server.env.items():
            if name != "AWS_ENDPOINT_URL":
                env.setenv(name, value)
        env.setenv("AWS_CA_BUNDLE", ca.ca_file)
        with ConnectProxy({f"localhost:{server.port}": ("127.0.0.1", server.port)}) as proxy:
            env.setenv("HTTPS_PROXY", proxy.url)
            through = await fresh_poke(sensor_on(queue_url, delete_on_receive=False), tmp_path)
            tunnels = len(proxy.tunnels)
            env.setenv("NO_PROXY", "localhost")
            direct = await fresh_poke(sensor_on(queue_url), tmp_path)
    assert through.phase == TaskExecution.SUCCEEDED, through.message
    assert tunnels >= 1 and set(proxy.tunnels) == {f"localhost:{server.port}"}
    assert direct.phase == TaskExecution.SUCCEEDED, direct.message
    assert len(proxy.tunnels) == tunnels, "NO_PROXY's hosts are reached directly"


AWS_CASES: dict[str, tuple[tuple[str, ...], Any]] = {
    "endpoints": (("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"), endpoint_variables),
    "regions": (("AWS_DEFAULT_REGION", "AWS_REGION"), region_variables),
    "keys": (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), credential_variables),
    "profile": (("AWS_PROFILE",), profile_variable),
    "proxy": (("HTTPS_PROXY", "NO_PROXY", "AWS_CA_BUNDLE"), proxy_variables),
}


def test_every_documented_variable_has_a_case() -> None:
    assert documented_variables() == {name for names, _ in AWS_CASES.values() for name in names}


@pytest.mark.parametrize("case", sorted(AWS_CASES))
async def test_documented_variable(
    case: str, agent_env: pytest.MonkeyPatch, moto: MotoServer, sqs: Any, tmp_path: Path
) -> None:
    await AWS_CASES[case][1](agent_env, moto, sqs, tmp_path)
