"""Reaching a workspace that is not Databricks' own: TLS with a private CA, http:// URLs, finished runs, Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from databricks_test_workflows import double
from doc_commands import ROOT, commands
from flyteagents_databricks import DatabricksAgent, DatabricksRunMeta, DatabricksSettings
from flyteagents_databricks._client import DatabricksAPIError
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.models.literals import Literal, LiteralMap, Primitive, Scalar

from flyteagents import AgentRegistry, testing

HERE = Path(__file__).parent
TOKEN = "dapi-test-0123456789abcdef"  # the token the tests' servers accept (conftest.py)
DOCS = "docs/plugins/databricks.md"
SETTINGS = SerializationSettings(ImageConfig(default_image=Image(name="default", fqn="ghcr.io/example/task", tag="7")))
CATEGORY = agent_pb2.TaskCategory(name="databricks", version=0)


def inputs(x: int) -> LiteralMap:
    return LiteralMap({"x": Literal(scalar=Scalar(primitive=Primitive(integer=x)))})


def execution(name: str) -> Any:
    return testing.execution_metadata(name, project="proj", domain="dev")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for ``localhost`` (not for 127.0.0.1), as a private CA would issue."""
    return testing.self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(make_server: Any, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    return make_server(tls=certificate, execute=False, run_seconds=float("inf"))


def agent_for(instance: str) -> DatabricksAgent:
    # A generous budget: a certificate error must end the call at once, not when the budget runs out.
    return DatabricksAgent(DatabricksSettings(instance=instance, call_timeout=30, request_timeout=5))


async def test_an_untrusted_certificate_is_a_permanent_error_saying_how_to_trust_it(
    tls_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    port = tls_server.server_address[1]
    agent = agent_for(f"https://localhost:{port}")
    with pytest.raises(DatabricksAPIError) as info:
        await agent.create(testing.template_of(double, SETTINGS), "/tmp/out", inputs(1), execution("tls"))
    assert not info.value.retryable
    assert "not trusted" in str(info.value) and "SSL_CERT_FILE" in str(info.value)
    assert tls_server.workspace.snapshot()["runs"] == {}
    await agent.aclose()


async def test_a_private_ca_is_trusted_through_ssl_cert_file(
    tls_server: Any, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    port = tls_server.server_address[1]
    agent = agent_for(f"https://localhost:{port}")
    meta = await agent.create(testing.template_of(double, SETTINGS), "/tmp/out", inputs(1), execution("ca"))
    assert (await agent.get(resource_meta=meta)).phase in (TaskExecution.QUEUED, TaskExecution.RUNNING)
    await agent.delete(resource_meta=meta)
    await agent.aclose()


async def test_a_certificate_for_another_host_is_a_permanent_error(
    tls_server: Any, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    agent = agent_for(f"https://127.0.0.1:{tls_server.server_address[1]}")  # the certificate names localhost
    with pytest.raises(DatabricksAPIError) as info:
        await agent.get(resource_meta=DatabricksRunMeta(run_id=1, instance=agent.settings.instance or ""))
    assert not info.value.retryable
    assert "does not name that host" in str(info.value)
    await agent.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_through_the_service_an_untrusted_certificate_is_failed_precondition(
    tls_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    registry = AgentRegistry()
    registry.register(agent_for(f"https://localhost:{tls_server.server_address[1]}"))
    request = agent_pb2.CreateTaskRequest(
        template=testing.template_of(double, SETTINGS).to_flyte_idl(),
        output_prefix="s3://bucket/out",
        inputs=inputs(2).to_flyte_idl(),
        task_execution_metadata=execution("svc-tls").to_flyte_idl(),
    )
    async with testing.AgentServer(registry) as service:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await service.async_stub.CreateTask(request, timeout=20)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, "not UNAVAILABLE: retrying cannot fix it"
    assert "SSL_CERT_FILE" in (info.value.details() or "")


async def test_deleting_a_finished_run_is_not_an_error(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server(execute=False, run_seconds=0.05)
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    agent = agent_for(server.instance)
    meta = await agent.create(testing.template_of(double, SETTINGS), "/tmp/out", inputs(1), execution("done"))
    for _ in range(500):
        if (await agent.get(resource_meta=meta)).phase == TaskExecution.SUCCEEDED:
            break
        await asyncio.sleep(0.01)
    status, answer = server.workspace.cancel(meta.run_id)  # what the Jobs API answers for a finished run
    assert (status, answer["error_code"]) == (400, "INVALID_STATE")
    await agent.delete(resource_meta=meta)  # no error
    assert server.workspace.snapshot()["runs"][str(meta.run_id)]["history"][-1] == "TERMINATED:SUCCESS"

    registry = AgentRegistry()
    registry.register(agent)
    async with testing.AgentServer(registry) as service:
        request = agent_pb2.DeleteTaskRequest(
            task_type="databricks", task_category=CATEGORY, resource_meta=meta.encode()
        )
        await service.async_stub.DeleteTask(request, timeout=10)  # OK, not FAILED_PRECONDITION
    await agent.aclose()


@pytest.mark.slow
def test_ctrl_c_on_a_local_run_says_which_run_it_cancelled(make_server: Any) -> None:
    server = make_server(execute=False, run_seconds=float("inf"))
    env = dict(
        os.environ,
        FLYTEAGENTS_DATABRICKS_INSTANCE=server.instance,
        FLYTEAGENTS_SECRET_DATABRICKS_TOKEN=TOKEN,
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    script = "from databricks_test_workflows import double\nprint(double(x=3))\n"
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not server.workspace.snapshot()["runs"] and time.monotonic() < deadline:
            time.sleep(0.05)
        (run_id,) = server.workspace.snapshot()["runs"]
        time.sleep(0.3)  # let it poll once
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert f"cancelled Databricks run {run_id} on {server.instance}" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr, "which run was cancelled, without flytekit's traceback after it"
    assert stderr.rstrip().endswith("[flyteagents] stopped by Ctrl-C; the job it had started was cancelled (see above)")
    assert server.workspace.snapshot()["runs"][run_id]["history"][-1] == "TERMINATED:CANCELED"


@pytest.mark.slow
def test_example_reaches_a_workspace_behind_a_private_ca(certificate: tuple[str, str]) -> None:
    """The docs' commands for https with a private CA, as written: the TLS Jobs API server, then the example."""
    cert, key = certificate
    files = {"cert.pem": cert, "key.pem": key}
    server_command, _ = commands(DOCS, "--tls-cert", {"--port 8443": "--port 0", **files})
    assert server_command.background and server_command.argv[0] == "python"
    server = subprocess.Popen(
        [sys.executable, *server_command.argv[1:]],
        cwd=ROOT,
        env=dict(os.environ, **server_command.env),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip().removeprefix("port=")
        _, example = commands(DOCS, "--tls-cert", {"8443": port, **files})
        assert example.argv[0] == "python"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTEAGENTS_", "FLYTE_DATABRICKS", "SSL_"))}
        env.update(example.env)
        done = subprocess.run(
            [sys.executable, *example.argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distinct/words=0.8" in done.stdout
    assert "[example] local Databricks Jobs API" not in done.stderr, "the example started a server of its own"
