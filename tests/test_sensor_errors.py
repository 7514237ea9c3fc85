"""Which poke errors keep a sensor RUNNING: the standard library's network errors, against real sockets."""

from __future__ import annotations

import http.server
import logging
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from flyteidl.core.execution_pb2 import TaskExecution

from flyteagents import BaseSensor, ExternalServiceError
from flyteagents.sensor import SensorEngine, SensorMetadata
from flyteagents.sensor._base import is_retryable
from flyteagents.testing import self_signed_certificate, template_of


class UrlSensor(BaseSensor):
    """Done when ``url`` answers 200; lets urllib's errors escape, as a user's sensor would."""

    def poke(self, url: str) -> bool:
        with urllib.request.urlopen(url, timeout=0.5) as answer:
            return answer.status == 200


class GoneSensor(BaseSensor):
    async def poke(self) -> bool:
        raise ExternalServiceError("queue orders does not exist", retryable=False)


class BuggySensor(BaseSensor):
    async def poke(self) -> bool:
        return {}["missing"]  # type: ignore[no-any-return]


class _Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = int(self.path.strip("/") or 200)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    """An HTTP server answering ``/<status>`` with that status."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server with a self-signed certificate nobody trusts."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed_certificate(tmp_path))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def engine() -> SensorEngine:
    return SensorEngine()


async def poke_once(engine: SensorEngine, sensor: BaseSensor, **inputs: str) -> tuple[SensorMetadata, object]:
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine

    ctx = FlyteContextManager.current_context()
    literals = TypeEngine.dict_to_literal_map(ctx, inputs, sensor.python_interface.inputs) if inputs else None
    meta = SensorMetadata.decode((await engine.create(template_of(sensor), "/tmp/out", literals)).encode())
    return meta, await engine.get(meta)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_refused_connection_keeps_the_sensor_running(engine: SensorEngine) -> None:
    sensor = UrlSensor(name="url_refused", max_consecutive_errors=3)
    meta, resource = await poke_once(engine, sensor, url=f"http://127.0.0.1:{free_port()}/")
    assert resource.phase == TaskExecution.RUNNING, resource.message
    assert resource.message.startswith("poke error 1/3: URLError") and "refused" in resource.message
    assert engine.consecutive_errors(meta.sensor_id) == 1


async def test_a_silent_server_is_a_retryable_timeout(engine: SensorEngine) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        _, resource = await poke_once(engine, UrlSensor(name="url_silent"), url=url)
    assert resource.phase == TaskExecution.RUNNING, resource.message
    assert "poke error 1/5" in resource.message and "timed out" in resource.message


async def test_http_answers_retry_only_when_asking_again_may_help(engine: SensorEngine, http_server: str) -> None:
    _, unavailable = await poke_once(engine, UrlSensor(name="url_503"), url=f"{http_server}/503")
    assert unavailable.phase == TaskExecution.RUNNING, unavailable.message
    assert "HTTP Error 503" in unavailable.message
    _, missing = await poke_once(engine, UrlSensor(name="url_404"), url=f"{http_server}/404")
    assert missing.phase == TaskExecution.FAILED
    assert "HTTPError: HTTP Error 404" in missing.message
    _, ok = await poke_once(engine, UrlSensor(name="url_200"), url=f"{http_server}/200")
    assert ok.phase == TaskExecution.SUCCEEDED, ok.message


async def test_an_untrusted_certificate_fails_at_once(engine: SensorEngine, https_server: str) -> None:
    _, resource = await poke_once(engine, UrlSensor(name="url_tls"), url=f"{https_server}/200")
    assert resource.phase == TaskExecution.FAILED
    assert "CERTIFICATE_VERIFY_FAILED" in resource.message


def test_classification_of_standard_library_errors() -> None:
    sensor = UrlSensor(name="url_classes")
    transient = [
        urllib.error.URLError(ConnectionRefusedError(111, "refused")),
        urllib.error.URLError(TimeoutError("timed out")),
        urllib.error.URLError("no reason object"),
        TimeoutError("socket timed out"),
        socket.gaierror(-3, "Temporary failure in name resolution"),
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
        urllib.error.HTTPError("http://x", 429, "Too Many Requests", {}, None),  # type: ignore[arg-type]
    ]
    permanent = [
        urllib.error.HTTPError("http://x", 403, "Forbidden", {}, None),  # type: ignore[arg-type]
        urllib.error.URLError(ssl.SSLCertVerificationError(1, "certificate verify failed")),
        ssl.SSLCertVerificationError(1, "hostname mismatch"),
        ValueError("not a network error"),
    ]
    assert [is_retryable(sensor, e) for e in transient] == [True] * len(transient)
    assert [is_retryable(sensor, e) for e in permanent] == [False] * len(permanent)

    class Forgiving(UrlSensor):
        retryable_errors = (*BaseSensor.retryable_errors, urllib.error.HTTPError)

    forbidden = urllib.error.HTTPError("http://x", 403, "Forbidden", {}, None)  # type: ignore[arg-type]
    assert is_retryable(Forgiving(name="forgiving"), forbidden), "a sensor's own retryable_errors win"


async def test_a_classified_failure_is_logged_as_one_line(
    engine: SensorEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flyteagents")
    _, gone = await poke_once(engine, GoneSensor(name="gone"))
    assert gone.phase == TaskExecution.FAILED and "does not exist" in gone.message
    (line,) = [r for r in caplog.records if "gone" in r.getMessage() or "GoneSensor" in r.getMessage()]
    assert line.exc_info is None and "queue orders does not exist" in line.getMessage()
    caplog.clear()
    _, buggy = await poke_once(engine, BuggySensor(name="buggy"))
    assert buggy.phase == TaskExecution.FAILED and "KeyError" in buggy.message
    (line,) = [r for r in caplog.records if "BuggySensor" in r.getMessage()]
    assert line.exc_info is not None, "an unexpected exception keeps its traceback in the log"
