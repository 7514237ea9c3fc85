"""A seeded fuzz run against `flyteagents serve`: every RPC, well-formed, malformed and raw bytes.

Thousands of requests a stranger could send, over a real channel to a real server process.
Whatever comes in, the answer is a status a client can act on (never UNKNOWN, INTERNAL only
where the agent itself failed), no traceback reaches the client, the log grows by at most a
line per request, the memory stays put and the server stays healthy.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import string
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import interface_pb2, literals_pb2, types_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

sys.path.insert(0, str(Path(__file__).parent))
import service_agents as sa
from service_process import Service

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

SEED = 20261130
REQUESTS = 2400
IN_FLIGHT = 8

ASYNC = "/flyteidl.service.AsyncAgentService/"
SYNC = "/flyteidl.service.SyncAgentService/ExecuteTaskSync"
METADATA = "/flyteidl.service.AgentMetadataService/"
HEALTH = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
UNARY = [
    ASYNC + "CreateTask",
    ASYNC + "GetTask",
    ASYNC + "DeleteTask",
    ASYNC + "GetTaskMetrics",
    METADATA + "ListAgents",
    METADATA + "GetAgent",
    HEALTH,
]
# Flyte 2's connector protocol: its messages share flyteidl's field numbers (Inputs' named literals
# are LiteralMap's entries on the wire), so each is sent as the bytes of its Flyte 1 twin.
V2 = {
    "/flyteidl2.connector.AsyncConnectorService/CreateTask": ASYNC + "CreateTask",
    "/flyteidl2.connector.AsyncConnectorService/GetTask": ASYNC + "GetTask",
    "/flyteidl2.connector.AsyncConnectorService/DeleteTask": ASYNC + "DeleteTask",
    "/flyteidl2.connector.AsyncConnectorService/GetTaskMetrics": ASYNC + "GetTaskMetrics",
    "/flyteidl2.connector.AsyncConnectorService/GetTaskLogs": ASYNC + "GetTaskLogs",
    "/flyteidl2.connector.ConnectorMetadataService/ListConnectors": METADATA + "ListAgents",
    "/flyteidl2.connector.ConnectorMetadataService/GetConnector": METADATA + "GetAgent",
}
#: Task types: the served ones (but the slow one, whose test agent sleeps as long as asked) and strangers.
TASK_TYPES = [sa.JOB_TYPE, sa.PLAIN_TYPE, sa.ECHO_TYPE, "sensor", "", "no_such", "svc_job\n", "\N{SNOWMAN}" * 40]
#: Outcomes the test agents act on without failing themselves (an agent's own bug is INTERNAL, by design).
OUTCOMES = ["ok", "running", "fail", "raise-fail", "retry", "unavailable", "invalid", "timeout"]


class Fuzzer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def text(self, longest: int = 40) -> str:
        alphabet = string.printable + "\x00\x1b\u2028\N{GRINNING FACE}\N{SNOWMAN}é"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, longest)))

    def raw(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(1, 64))

    def mutate(self, data: bytes) -> bytes:
        """A serialized message with bytes flipped, cut or repeated."""
        data = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            if not data:
                break
            i = self.rng.randrange(len(data))
            op = self.rng.random()
            if op < 0.5:
                data[i] = self.rng.randrange(256)
            elif op < 0.75:
                del data[i:]
            else:
                data[i:i] = data[i : i + self.rng.randint(1, 8)]
        return bytes(data)

    def literal_type(self, depth: int = 0) -> types_pb2.LiteralType:
        choice = self.rng.random()
        if depth < 2 and choice < 0.15:
            return types_pb2.LiteralType(collection_type=self.literal_type(depth + 1))
        if depth < 2 and choice < 0.25:
            return types_pb2.LiteralType(map_value_type=self.literal_type(depth + 1))
        if depth < 2 and choice < 0.3:
            variants = [self.literal_type(depth + 1) for _ in range(2)]
            return types_pb2.LiteralType(union_type=types_pb2.UnionType(variants=variants))
        return types_pb2.LiteralType(simple=self.rng.choice(list(types_pb2.SimpleType.values())))

    def literal(self, depth: int = 0) -> literals_pb2.Literal:
        choice = self.rng.random()
        if depth < 2 and choice < 0.15:
            items = [self.literal(depth + 1) for _ in range(self.rng.randint(0, 3))]
            return literals_pb2.Literal(collection=literals_pb2.LiteralCollection(literals=items))
        if depth < 2 and choice < 0.25:
            items = {self.text(8): self.literal(depth + 1) for _ in range(self.rng.randint(0, 3))}
            return literals_pb2.Literal(map=literals_pb2.LiteralMap(literals=items))
        if choice < 0.3:
            return literals_pb2.Literal(scalar=literals_pb2.Scalar(none_type=literals_pb2.Void()))
        primitive = self.rng.choice(
            [
                literals_pb2.Primitive(integer=self.rng.randint(-(2**63), 2**63 - 1)),
                literals_pb2.Primitive(float_value=self.rng.random() * 1e300),
                literals_pb2.Primitive(string_value=self.rng.choice([*OUTCOMES, "z" + self.text()])),
                literals_pb2.Primitive(boolean=self.rng.random() < 0.5),
            ]
        )
        return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=primitive))

    def inputs_and_template(self, task_type: str) -> tuple[literals_pb2.LiteralMap | None, Any]:
        template = sa.template(task_type)
        template.task_type_version = self.rng.choice([0, 0, 0, 1, -5])
        names = self.rng.sample(["outcome", "text", "n", "x" + self.text(6)], self.rng.randint(0, 3))
        variables = template.interface.inputs.variables
        for name in names:
            # the test agents read outcome and text as strings: declared otherwise, they would fail themselves
            string_type = types_pb2.LiteralType(simple=types_pb2.STRING)
            typed = name in ("outcome", "text") or self.rng.random() < 0.6
            variables[name].CopyFrom(interface_pb2.Variable(type=string_type if typed else self.literal_type()))
        if self.rng.random() < 0.1:
            template.ClearField("interface")
        if self.rng.random() < 0.3:
            template.custom.update({self.text(8): self.text(), "n": self.rng.random()})
        if self.rng.random() < 0.15:
            return None, template
        given = {name: self.literal() if self.rng.random() < 0.3 else self.string(name) for name in names}
        if self.rng.random() < 0.15:
            given["stray" + self.text(4)] = self.literal()
        return literals_pb2.LiteralMap(literals=given), template

    def string(self, name: str) -> literals_pb2.Literal:
        value = self.rng.choice(OUTCOMES) if name in ("outcome", "text") else "z" + self.text()
        return sa.string_literal(value)

    def resource_meta(self) -> bytes:
        choice = self.rng.random()
        if choice < 0.35:
            return json.dumps({"job_id": self.text(20), "outcome": self.rng.choice(OUTCOMES)}).encode()
        if choice < 0.5:
            return json.dumps({"job_id": self.text(), "outcome": self.rng.random(), self.text(5): [1, {}]}).encode()
        if choice < 0.6:
            return b'{"job_id":"x","a\nFAKE-LOG-LINE ERROR":1}'
        if choice < 0.7:
            return b"[" * self.rng.randint(1, 5000)  # deep nesting
        if choice < 0.8:
            return json.dumps({"job_id": "j" * self.rng.randint(60_000, 200_000)}).encode()
        return self.raw()

    def category(self) -> agent_pb2.TaskCategory:
        return agent_pb2.TaskCategory(name=self.rng.choice(TASK_TYPES), version=self.rng.choice([0, 0, 1]))

    def request(self) -> tuple[str, Any]:
        """(method, request message, list of messages for ExecuteTaskSync, or raw bytes)."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.12:  # raw bytes, or a valid message mangled
            method = rng.choice([*UNARY, ASYNC + "GetTaskLogs", SYNC, REFLECTION, *V2])
            if rng.random() < 0.5:
                return method, self.raw()
            return method, self.mutate(self.request_for(rng.choice(UNARY[:4]))[1].SerializeToString())
        method = rng.choice([*UNARY, ASYNC + "GetTaskLogs", SYNC, SYNC, REFLECTION, *V2])
        if method in V2:
            return method, self.request_for(V2[method])[1]
        return self.request_for(method)

    def request_for(self, method: str) -> tuple[str, Any]:
        rng = self.rng
        task_type = rng.choice(TASK_TYPES)
        if method == ASYNC + "CreateTask":
            inputs, template = self.inputs_and_template(task_type)
            request = agent_pb2.CreateTaskRequest(template=template, output_prefix=rng.choice(["", "/tmp/fz", "s3://"]))
            if inputs is not None:
                request.inputs.CopyFrom(inputs)
            if rng.random() < 0.7:
                request.task_execution_metadata.CopyFrom(sa.exec_metadata(self.text(10), retry=rng.randint(0, 3)))
            return method, request
        if method == SYNC:
            inputs, template = self.inputs_and_template(rng.choice([sa.ECHO_TYPE, sa.ECHO_TYPE, *TASK_TYPES]))
            header = agent_pb2.ExecuteTaskSyncRequest(header=agent_pb2.CreateRequestHeader(template=template))
            body = agent_pb2.ExecuteTaskSyncRequest(inputs=inputs) if inputs is not None else None
            messages = rng.choice([[header, body], [header, body], [body, header], [header, header], [], [body]])
            return method, [m for m in messages if m is not None]
        if method == METADATA + "ListAgents":
            return method, agent_pb2.ListAgentsRequest()
        if method == METADATA + "GetAgent":
            name = rng.choice([sa.JobAgent.name, self.text(), "\N{GRINNING FACE}" * rng.randint(1, 2000)])
            return method, agent_pb2.GetAgentRequest(name=name)
        if method == HEALTH:
            return method, health_pb2.HealthCheckRequest(service=rng.choice(["", self.text()]))
        if method == REFLECTION:
            request = rng.choice(
                [
                    reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol=self.text()),
                    reflection_pb2.ServerReflectionRequest(file_by_filename=self.text()),
                ]
            )
            return method, [request]
        fields = {"resource_meta": self.resource_meta()}
        if rng.random() < 0.8:
            fields["task_category"] = self.category()
        else:
            fields["task_type"] = rng.choice(TASK_TYPES)
        message = {
            ASYNC + "GetTask": agent_pb2.GetTaskRequest,
            ASYNC + "DeleteTask": agent_pb2.DeleteTaskRequest,
            ASYNC + "GetTaskMetrics": agent_pb2.GetTaskMetricsRequest,
            ASYNC + "GetTaskLogs": agent_pb2.GetTaskLogsRequest,
        }[method](**fields)
        return method, message


async def send(channel: grpc.aio.Channel, method: str, payload: Any) -> tuple[grpc.StatusCode, str]:
    """Send one request as raw bytes over the channel; the status code and details it ends with."""

    def encode(message: Any) -> bytes:
        return message if isinstance(message, bytes) else message.SerializeToString()

    try:
        if method in (SYNC, REFLECTION):
            messages = payload if isinstance(payload, list) else [payload]
            call = channel.stream_stream(method)(iter([encode(m) for m in messages]), timeout=20)
            async for _ in call:
                pass
            return await call.code(), await call.details() or ""
        if method.endswith("/GetTaskLogs"):
            call = channel.unary_stream(method)(encode(payload), timeout=20)
            async for _ in call:
                pass
            return await call.code(), await call.details() or ""
        await channel.unary_unary(method)(encode(payload), timeout=20)
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""


async def run(
    channel: grpc.aio.Channel, fuzzer: Fuzzer, count: int, record: Callable[[str, Any, grpc.StatusCode, str], None]
) -> None:
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with limit:
            method, payload = fuzzer.request()
            code, details = await send(channel, method, payload)
            record(method, payload, code, details)

    await asyncio.gather(*(one() for _ in range(count)))


async def health(channel: grpc.aio.Channel) -> int:
    answer = await channel.unary_unary(HEALTH)(health_pb2.HealthCheckRequest().SerializeToString(), timeout=5)
    return health_pb2.HealthCheckResponse.FromString(answer).status


async def test_fuzzed_requests_get_clean_answers_and_leave_the_server_as_it_was(tmp_path):
    service = Service(tmp_path, "service_serve_agents").ready()
    codes: collections.Counter[str] = collections.Counter()
    by_method: dict[str, set[str]] = collections.defaultdict(set)
    problems: list[str] = []

    def record(method: str, payload: Any, code: grpc.StatusCode, details: str) -> None:
        codes[code.name] += 1
        by_method[method].add(code.name)
        if code == grpc.StatusCode.UNKNOWN or "Traceback" in details or len(details.encode()) > 1000:
            problems.append(f"{method} -> {code.name}: {details[:200]!r} for {str(payload)[:200]!r}")
        if code == grpc.StatusCode.INTERNAL:  # only an agent that failed itself may answer INTERNAL
            problems.append(f"{method} -> INTERNAL: {details[:200]!r} for {str(payload)[:300]!r}")

    try:
        options = [("grpc.max_send_message_length", 8 << 20)]
        async with grpc.aio.insecure_channel(service.address, options=options) as channel:
            await run(channel, Fuzzer(SEED - 1), 200, lambda *_: None)  # warm up: imports, caches, pools
            rss_before, log_before = service.rss(), len(service.log().splitlines())
            await run(channel, Fuzzer(SEED), REQUESTS, record)
            assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
            rss_after, log = service.rss(), service.log().splitlines()
        assert service.proc.poll() is None
    finally:
        service.stop()
    assert not problems, "\n".join(problems[:20])
    assert sum(codes.values()) == REQUESTS
    # the run reached deep into the service, not only its front door
    assert codes["OK"] > 200 and codes["INVALID_ARGUMENT"] > 200 and codes["NOT_FOUND"] > 100, codes
    assert all(len(by_method[m]) >= 2 for m in (*UNARY[:4], SYNC, *list(V2)[:3])), by_method
    assert rss_after - rss_before < 50 * 2**20, f"RSS grew by {(rss_after - rss_before) / 2**20:.1f} MiB"
    assert len(log) - log_before <= REQUESTS, f"{len(log) - log_before} log lines for {REQUESTS} requests"
    assert not any(line.startswith("FAKE") for line in log), "a request forged a log line"
