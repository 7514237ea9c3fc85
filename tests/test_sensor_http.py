"""HTTPSensor against real local HTTP(S) servers: late start, 503 then 200, redirects, bearer token from a secret."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import task, workflow

from flyteagents import AgentRegistry, InvalidTaskError, TaskFailedError
from flyteagents.sensor import HTTPResponse, HTTPSensor, HTTPSensorConfig, SensorEngine
from flyteagents.testing import AgentServer, create_task_request, get_task_request

TOKEN = "s3cret-token-value"


class Api:
    """A small HTTP server: it can start late, answers 503 a few times, redirects, and checks a bearer token.

    Routes: ``/old`` redirects to ``/status``; ``/status`` answers 401 without the token, 503 for its
    first ``unavailable`` requests, then 200 with a JSON body; ``/away`` redirects to ``other`` (another
    origin); ``/echo`` answers 200 with the request's headers as JSON.
    """

    def __init__(self, unavailable: int = 2, other: str = "", tls: ssl.SSLContext | None = None) -> None:
        self.unavailable = unavailable
        self.other = other
        self.requests: list[tuple[str, dict[str, str]]] = []
        # Bound but not listening: connections are refused until start() (a server that starts late).
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.tls = tls
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api.requests.append((self.path, dict(self.headers)))
                if self.path == "/old":
                    return self.answer(302, b"", {"Location": "/status"})
                if self.path == "/away":
                    return self.answer(307, b"", {"Location": f"{api.other}/echo"})
                if self.path == "/loop":
                    return self.answer(302, b"", {"Location": "/loop"})
                if self.path == "/echo":
                    return self.answer(200, json.dumps(dict(self.headers)).encode(), {})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.answer(401, b"no", {})
                served = sum(1 for path, _ in api.requests if path == "/status")
                if served <= api.unavailable:
                    return self.answer(503, b"warming up", {"Retry-After": "1"})
                return self.answer(200, b'{"state": "done", "rows": 42}', {"X-Job": "42"})

            def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = tls.wrap_socket(self.sock, server_side=True) if tls else self.sock
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, after: float = 0.0) -> None:
        def run() -> None:
            time.sleep(after)
            self.server.server_activate()
            self.server.serve_forever(poll_interval=0.05)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    yield server
    server.stop()


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLYTEAGENTS_SECRET_STATUS_API_TOKEN", TOKEN)
    return "status-api-token"


def test_waits_for_a_late_server_through_503s_and_a_redirect_with_a_bearer_token(api: Api, token: str) -> None:
    sensor = HTTPSensor(
        name="status_ready",
        bearer_token_secret=token,
        body_contains='"state": "done"',
        poke_interval=0.05,
        max_consecutive_errors=100,
        timeout=30,
    )

    @task
    def rows(body: str) -> int:
        return int(json.loads(body)["rows"])

    @workflow
    def wf(url: str) -> int:
        answer = sensor(url=url)
        return rows(body=answer.body)

    api.start(after=0.3)
    started = time.monotonic()
    assert wf(url=f"{api.url}/old") == 42
    assert time.monotonic() - started >= 0.3
    statuses = [path for path, _ in api.requests]
    assert statuses.count("/status") == 3 and statuses.count("/old") == 3  # 503, 503, 200, each via /old
    assert all(headers.get("Authorization") == f"Bearer {TOKEN}" for _, headers in api.requests)
    answer = sensor(url=f"{api.url}/status")  # a task called outside a workflow: its outputs as a named tuple
    assert list(answer._fields) == [f.name for f in dataclasses.fields(HTTPResponse)]
    assert (answer.status, answer.headers["X-Job"], answer.url) == (200, "42", f"{api.url}/status")
    assert json.loads(answer.body) == {"state": "done", "rows": 42}


def test_a_refused_token_fails_at_once_without_showing_it(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTEAGENTS_SECRET_WRONG_TOKEN", "not-the-token")
    api.start()
    sensor = HTTPSensor(name="refused", bearer_token_secret="wrong-token", poke_interval=0.01)
    with pytest.raises(TaskFailedError, match=r"answered 401") as info:
        sensor(url=f"{api.url}/status")
    assert "not-the-token" not in str(info.value)


def test_a_missing_secret_fails_naming_it_not_its_value(api: Api) -> None:
    api.start()
    sensor = HTTPSensor(name="no_secret", bearer_token_secret="never-set-token", poke_interval=0.01)
    with pytest.raises(TaskFailedError, match=r"secret 'never-set-token' is not available"):
        sensor(url=f"{api.url}/status")


def test_credentials_do_not_follow_a_redirect_to_another_origin(token: str) -> None:
    other = Api()
    other.start()
    first = Api(other=f"http://localhost:{other.port}")
    first.start()
    try:
        sensor = HTTPSensor(
            name="away",
            bearer_token_secret=token,
            secret_headers={"X-Api-Key": token},
            headers={"X-Trace": "t1"},
            poke_interval=0.01,
        )
        answer = sensor(url=f"{first.url}/away")
        seen = json.loads(answer.body)
        assert seen.get("X-Trace") == "t1" and "Authorization" not in seen and "X-Api-Key" not in seen
        assert first.requests[0][1]["Authorization"] == f"Bearer {TOKEN}"
        assert first.requests[0][1]["X-Api-Key"] == TOKEN
        assert answer.url == f"http://localhost:{other.port}/echo"
        no_follow = HTTPSensor(name="stay", follow_redirects=False, expected_status=[307], poke_interval=0.01)
        assert no_follow(url=f"{first.url}/away").headers["Location"].endswith("/echo")
        looping = HTTPSensor(name="loop", max_redirects=3, poke_interval=0.01)
        with pytest.raises(TaskFailedError, match="redirected more than 3 times"):
            looping(url=f"{first.url}/loop")
    finally:
        first.stop()
        other.stop()


def test_unreachable_server_is_a_retryable_error_until_the_limit(api: Api) -> None:
    sensor = HTTPSensor(name="down", poke_interval=0.01, max_consecutive_errors=2)
    with pytest.raises(TaskFailedError, match=r"after 2 consecutive poke errors; last: ConnectionError"):
        sensor(url=f"{api.url}/status")


def _tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 signed by a fresh CA, and the CA's PEM file."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key: Any, issuer: x509.Name | None, issuer_key: Any, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(issuer_key or key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("test CA", ca_key, None, None, True)
    leaf = cert("127.0.0.1", server_key, ca.subject, ca_key, False)
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


def test_tls_trusts_the_system_a_given_ca_or_nothing_when_told(tmp_path: Path, token: str) -> None:
    context, ca_file = _tls(tmp_path)
    api = Api(unavailable=0, tls=context)
    api.start()
    try:
        untrusted = HTTPSensor(
            name="untrusted", bearer_token_secret=token, poke_interval=0.01, max_consecutive_errors=1
        )
        with pytest.raises(TaskFailedError, match=r"ConnectionError: .*(certificate|SSL)"):
            untrusted(url=f"{api.url}/status")
        trusted = HTTPSensor(name="trusted", bearer_token_secret=token, ca_file=str(ca_file), poke_interval=0.01)
        assert trusted(url=f"{api.url}/status").status == 200
        unverified = HTTPSensor(name="unverified", bearer_token_secret=token, verify_tls=False, poke_interval=0.01)
        assert unverified(url=f"{api.url}/status").status == 200
    finally:
        api.stop()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"method": "DELETE"}, "method must be one of"),
        ({"expected_status": [99]}, "not an HTTP status"),
        ({"body_regex": "("}, "does not compile"),
        ({"bearer_token_secret": "../etc/passwd"}, "must be a secret name"),
        ({"request_timeout": 0}, "request_timeout"),
    ],
)
def test_bad_options_are_refused_at_definition(options: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidTaskError, match=error):
        HTTPSensor(name="bad", **options)


def test_a_url_that_is_not_http_fails_the_sensor() -> None:
    with pytest.raises(TaskFailedError, match="must be an http:// or https:// URL"):
        HTTPSensor(name="file_url", poke_interval=0.01)(url="file:///etc/passwd")


@pytest_asyncio.fixture(loop_scope="session")
async def server():
    registry = AgentRegistry()
    registry.register(SensorEngine())
    async with AgentServer(registry) as server:
        yield server


@pytest.mark.asyncio(loop_scope="session")
async def test_through_the_service_the_config_secret_and_outputs_travel(server, api: Api, token: str) -> None:
    sensor = HTTPSensor(
        name="rpc_status",
        sensor_config=HTTPSensorConfig(bearer_token_secret=token, body_regex=r'"rows": \d+'),
        poke_interval=0.05,
        max_consecutive_errors=50,
    )
    created = await server.async_stub.CreateTask(
        create_task_request(sensor, "/tmp/http-out", {"url": api.url + "/old"})
    )
    assert TOKEN not in created.resource_meta.decode()
    api.start(after=0.2)
    request = get_task_request(created.resource_meta, "sensor")
    phases = []
    for _ in range(200):
        response = await server.async_stub.GetTask(request)
        phases.append(response.resource.phase)
        if response.resource.phase != TaskExecution.RUNNING:
            break
        await asyncio.sleep(0.06)
    assert phases[-1] == TaskExecution.SUCCEEDED, response.resource.message
    outputs = response.resource.outputs.literals
    assert outputs["status"].scalar.primitive.integer == 200
    assert '"rows": 42' in outputs["body"].scalar.primitive.string_value
    assert [path for path, _ in api.requests].count("/status") == 3
