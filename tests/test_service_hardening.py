"""`flyteagents serve` against what an outsider sends it and what a misbehaving agent does.

Each test reproduces one defect found by trying the service as a stranger would, through a
real `flyteagents serve` process over a real channel, reading its log and memory as an
operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import interface_pb2, literals_pb2, types_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flyteidl.service import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa
from service_process import Service

from flyteagents.testing import MotoServer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

RAW = b"\xff\xff\xff\xff"  # not a protobuf message of any type


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("hardening"), "service_serve_agents").ready()
    yield svc
    svc.stop()


def meta(outcome: str, job_id: str = "x") -> bytes:
    # written out, not JobMeta.encode(): that refuses the oversized ones these tests send
    return json.dumps({"job_id": job_id, "outcome": outcome}, separators=(",", ":")).encode()


def get_request(
    resource_meta: bytes, task_type: str = sa.JOB_TYPE, output_prefix: str = ""
) -> agent_pb2.GetTaskRequest:
    return agent_pb2.GetTaskRequest(
        task_category=agent_pb2.TaskCategory(name=task_type), resource_meta=resource_meta, output_prefix=output_prefix
    )


async def error_of(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def log_lines_since(service: Service, offset: int) -> list[str]:
    return service.log()[offset:].splitlines()


async def health_status(address: str, timeout: float = 2) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return response.status


# 1. resource_meta is bounded before it is decoded or remembered


async def test_oversized_resource_meta_is_refused_and_kept_nowhere(service):
    before = service.rss()
    async with grpc.aio.insecure_channel(service.address, options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(ch)
        for i in range(60):  # each a valid JobMeta of 3.9 MB
            big = meta("running", job_id=f"{i}-" + "j" * 3_900_000)
            err = await error_of(stub.GetTask(get_request(big), timeout=10))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "over the 65536 byte limit" in err.details()
    growth = service.rss() - before
    assert growth < 50 * 2**20, f"server grew by {growth / 2**20:.0f} MiB"


# 2, 3. An agent's exception fails its own call only, whatever its class


@pytest.mark.parametrize(
    ("task_type", "outcome", "named"),
    [
        (sa.JOB_TYPE, "exit", "SystemExit"),
        (sa.JOB_TYPE, "interrupt", "KeyboardInterrupt"),
        (sa.JOB_TYPE, "cancelled", "CancelledError"),
        (sa.JOB_TYPE, "generator-exit", "GeneratorExit"),
        (sa.PLAIN_TYPE, "exit", "SystemExit"),  # raised on a worker thread
        (sa.PLAIN_TYPE, "interrupt", "KeyboardInterrupt"),
    ],
)
async def test_base_exceptions_from_an_agent_fail_that_call_only(service, task_type, outcome, named):
    offset = len(service.log())
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        slow = asyncio.ensure_future(stub.CreateTask(sa.create_request(sa.SLOW_TYPE, custom={"sleep": 0.5})))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        err = await error_of(stub.GetTask(get_request(meta(outcome), task_type), timeout=20))
        assert time.monotonic() - started < 5  # answered, not left to the deadline
        assert err.code() == grpc.StatusCode.INTERNAL
        assert named in err.details() and "Traceback" not in err.details()
        assert (await slow).resource_meta  # the call in flight went on
        # and the process is still serving
        ok = await stub.GetTask(get_request(meta("running")), timeout=5)
        assert ok.resource.phase == TaskExecution.RUNNING
    assert service.proc.poll() is None
    assert named in service.log()[offset:]  # the failure is logged, not silent


# 4, 5. The drain: health NOT_SERVING for the whole grace period, and the process bound by it


async def test_health_says_not_serving_for_the_whole_drain_and_calls_are_still_answered(tmp_path):
    svc = Service(tmp_path, "service_serve_agents", env={"FLYTEAGENTS_GRACE_PERIOD": "3"}).ready()
    try:
        assert await health_status(svc.address) == health_pb2.HealthCheckResponse.SERVING
        svc.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.2)
        statuses = []
        while time.monotonic() - signalled < 2.5:
            statuses.append(await health_status(svc.address))
            async with grpc.aio.insecure_channel(svc.address) as channel:  # a new call, routed here late
                answer = await agent_pb2_grpc.AsyncAgentServiceStub(channel).GetTask(
                    get_request(meta("running")), timeout=2
                )
                assert answer.resource.phase == TaskExecution.RUNNING
            await asyncio.sleep(0.25)
        assert len(statuses) >= 5
        assert set(statuses) == {health_pb2.HealthCheckResponse.NOT_SERVING}
        assert await asyncio.to_thread(svc.proc.wait, 15) == 0
        assert time.monotonic() - signalled >= 3
    finally:
        svc.stop()


async def test_grace_period_bounds_plain_function_agents(tmp_path):
    svc = Service(tmp_path, "service_serve_agents", env={"FLYTEAGENTS_GRACE_PERIOD": "1"}).ready()
    try:
        async with grpc.aio.insecure_channel(svc.address) as channel:
            stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
            calls = [
                asyncio.ensure_future(stub.GetTask(get_request(meta("sleep-10"), sa.PLAIN_TYPE), timeout=30))
                for _ in range(8)
            ]
            await asyncio.sleep(0.5)
            svc.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert await asyncio.to_thread(svc.proc.wait, 30) == 0
            took = time.monotonic() - signalled
            for call in calls:
                assert (await error_of(call)).code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        assert took < 5, f"the process outlived its 1 s grace period by {took - 1:.1f} s"
        assert "exiting without 8 plain-function agent calls" in svc.log()
    finally:
        svc.stop()


# 6. Bodies that are not protobuf


UNARY_METHODS = [
    "/flyteidl.service.AsyncAgentService/CreateTask",
    "/flyteidl.service.AsyncAgentService/GetTask",
    "/flyteidl.service.AsyncAgentService/DeleteTask",
    "/flyteidl.service.AsyncAgentService/GetTaskMetrics",
    "/flyteidl.service.AgentMetadataService/ListAgents",
    "/flyteidl.service.AgentMetadataService/GetAgent",
    "/grpc.health.v1.Health/Check",
    "/flyteidl2.connector.AsyncConnectorService/CreateTask",
    "/flyteidl2.connector.AsyncConnectorService/GetTask",
    "/flyteidl2.connector.AsyncConnectorService/DeleteTask",
    "/flyteidl2.connector.AsyncConnectorService/GetTaskMetrics",
    "/flyteidl2.connector.ConnectorMetadataService/ListConnectors",
    "/flyteidl2.connector.ConnectorMetadataService/GetConnector",
]


async def test_undecodable_bodies_are_invalid_argument_in_one_log_line_each(service):
    offset = len(service.log())
    async with grpc.aio.insecure_channel(service.address) as channel:
        for method in UNARY_METHODS:
            err = await error_of(channel.unary_unary(method)(RAW, timeout=5))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "not a valid" in err.details()
        logs = channel.unary_stream("/flyteidl.service.AsyncAgentService/GetTaskLogs")(RAW, timeout=5)
        assert (await error_of(logs.read())).code() == grpc.StatusCode.INVALID_ARGUMENT
        sync = channel.stream_stream("/flyteidl.service.SyncAgentService/ExecuteTaskSync")(iter([RAW, RAW]), timeout=5)
        await sync.read()  # a client learns the status by reading
        assert await sync.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")(
            iter([RAW]), timeout=5
        )
        assert (await error_of(info.read())).code() == grpc.StatusCode.INVALID_ARGUMENT
    lines = log_lines_since(service, offset)
    assert "Traceback" not in "\n".join(lines)
    assert len(lines) <= len(UNARY_METHODS) + 3


# 7. Inputs checked against the declared types


def typed_request(inputs: literals_pb2.LiteralMap | None) -> agent_pb2.CreateTaskRequest:
    request = sa.create_request(sa.JOB_TYPE)
    variables = request.template.interface.inputs.variables
    variables["n"].CopyFrom(interface_pb2.Variable(type=types_pb2.LiteralType(simple=types_pb2.INTEGER)))
    variables["word"].CopyFrom(interface_pb2.Variable(type=types_pb2.LiteralType(simple=types_pb2.STRING)))
    request.ClearField("inputs")
    if inputs is not None:
        request.inputs.CopyFrom(inputs)
    return request


async def test_inputs_must_be_given_and_of_their_declared_kind(service):
    offset = len(service.log())
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        err = await error_of(stub.CreateTask(typed_request(None), timeout=5))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "missing n, word" in err.details()
        wrong = literals_pb2.LiteralMap(
            literals={"n": sa.string_literal("confidential-value-42"), "word": sa.string_literal("w")}
        )
        err = await error_of(stub.CreateTask(typed_request(wrong), timeout=5))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'n'" in err.details() and "a string" in err.details() and "integer" in err.details()
        assert "confidential-value-42" not in err.details()
        right = literals_pb2.LiteralMap(
            literals={
                "n": literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=3))),
                "word": sa.string_literal("w"),
            }
        )
        assert (await stub.CreateTask(typed_request(right), timeout=5)).resource_meta
    assert "confidential-value-42" not in service.log()[offset:]


# 8. Nothing a request carries can start a log line


async def test_request_text_cannot_forge_log_lines(service):
    offset = len(service.log())
    forged = b'{"job_id":"x","a\nFAKE-LOG-LINE ERROR forged":1}'
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        for resource_meta in (forged, forged.replace(b"\n", b"\r\n")):
            await error_of(stub.GetTask(get_request(resource_meta), timeout=5))
        await error_of(
            agent_pb2_grpc.AgentMetadataServiceStub(channel).GetAgent(
                agent_pb2.GetAgentRequest(name="x\nFAKE-LOG-LINE ERROR forged"), timeout=5
            )
        )
    lines = log_lines_since(service, offset)
    assert len(lines) == 3 and not any(line.startswith("FAKE") for line in lines)
    assert any("\\nFAKE-LOG-LINE" in line for line in lines)


# 9. Error details are capped in bytes


async def test_error_details_fit_in_a_header_whatever_the_characters(service):
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = agent_pb2_grpc.AgentMetadataServiceStub(channel)
        err = await error_of(stub.GetAgent(agent_pb2.GetAgentRequest(name="\N{GRINNING FACE}" * 1000), timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert len(err.details().encode()) <= 1000


# 10. Outputs stored as files go where the next task can read them


DOWNSTREAM = """
import sys
from flyteidl.core import literals_pb2
from flytekit.configuration import DataConfig, S3Config
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.data_persistence import FileAccessProvider
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.types.file import FlyteFile

pb = literals_pb2.LiteralMap.FromString(open(sys.argv[1], "rb").read())
config = DataConfig(s3=S3Config(endpoint=sys.argv[2], access_key_id="testing", secret_access_key="testing"))
ctx = FlyteContextManager.current_context()
ctx = ctx.with_file_access(FileAccessProvider("/tmp/downstream-sandbox", "/tmp/downstream-raw", config)).build()
values = TypeEngine.literal_map_to_kwargs(ctx, LiteralMap.from_flyte_idl(pb), {"report": FlyteFile, "tags": set})
with open(values["report"]) as f:
    print(f.read())
print(sorted(values["tags"]))
"""


@pytest.fixture(scope="module")
def moto():
    with MotoServer() as server:
        yield server


async def test_file_outputs_are_stored_under_the_output_prefix_for_the_next_task(tmp_path, moto):
    import boto3

    boto3.client("s3", endpoint_url=moto.endpoint_url, **moto.credentials).create_bucket(Bucket="outputs")
    env = {
        **moto.env,
        "FLYTE_AWS_ENDPOINT": moto.endpoint_url,
        "FLYTE_AWS_ACCESS_KEY_ID": "testing",
        "FLYTE_AWS_SECRET_ACCESS_KEY": "testing",
    }
    svc = Service(tmp_path, "service_serve_agents", env=env).ready()
    try:
        async with grpc.aio.insecure_channel(svc.address) as channel:
            stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
            prefix = "s3://outputs/metadata/exec1/n0/0"
            answer = await stub.GetTask(get_request(meta("file", job_id="job-7"), output_prefix=prefix), timeout=30)
            # with nowhere to store them, the job fails saying so (not a path on the service's disk)
            unstored = await stub.GetTask(get_request(meta("file", job_id="job-7")), timeout=30)
    finally:
        svc.stop()
    resource = answer.resource
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    assert resource.outputs.literals["report"].scalar.blob.uri.startswith(prefix + "/")
    assert unstored.resource.phase == TaskExecution.FAILED
    assert (
        "no output_prefix" in unstored.resource.message and "on the agent service's disk" in unstored.resource.message
    )
    assert not unstored.resource.message.startswith("USER:")
    # the next task: another process, another temporary directory, reading from S3
    outputs = tmp_path / "outputs.pb"
    outputs.write_bytes(resource.outputs.SerializeToString())
    downstream_tmp = tmp_path / "downstream"
    downstream_tmp.mkdir()
    env = {**os.environ, **moto.env, "TMPDIR": str(downstream_tmp)}
    read = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", DOWNSTREAM, str(outputs), moto.endpoint_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert read.returncode == 0, read.stderr[-3000:]
    assert read.stdout.splitlines()[-2:] == ["report of job-7", "['x', 'y']"]


# Operators' switches: reflection off, metrics on an address of their own


def scrape(host: str, port: int) -> bytes:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return response.read()


async def test_no_reflection_and_a_metrics_host_of_its_own(tmp_path):
    svc = Service(tmp_path, "service_serve_agents", args=("--no-reflection", "--metrics-host", "127.0.0.2")).ready()
    try:
        async with grpc.aio.insecure_channel(svc.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            err = await error_of(stub.ServerReflectionInfo(iter([request]), timeout=5).read())
            assert err.code() == grpc.StatusCode.UNIMPLEMENTED
            assert await health_status(svc.address) == health_pb2.HealthCheckResponse.SERVING
        assert b"flyteagents_requests_total" in await asyncio.to_thread(scrape, "127.0.0.2", svc.metrics_port)
        with pytest.raises(OSError):
            await asyncio.to_thread(scrape, "127.0.0.1", svc.metrics_port)
    finally:
        svc.stop()


async def test_reflection_is_on_by_default_and_lists_every_service(service):
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = await stub.ServerReflectionInfo(iter([request]), timeout=5).read()
    names = {s.name for s in response.list_services_response.service}
    assert {"flyteidl.service.AsyncAgentService", "grpc.health.v1.Health"} <= names
