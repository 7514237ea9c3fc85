"""The agent service under load: flyteagents serve vs flytekit's connector service vs a bare grpc.aio server.

    .venv/bin/python benchmarks/service.py [--requests N] [--concurrency C]

Starts three servers as separate processes on loopback, each serving an equivalent
trivial agent (an async one whose create returns a job id and whose get answers RUNNING,
and a sync one echoing its inputs as outputs):

- ``flyteagents serve``
- flytekit's ``pyflyte serve connector``
- flyte-sdk's connector service, ``c0`` (Flyte 2's own; CreateTask and GetTask over flyteidl2 only)
- a bare grpc.aio server answering constants (the ceiling: what gRPC itself costs), on the
  event loop ``flyteagents serve`` runs on by default (uvloop where installed), while flytekit's
  service runs on asyncio's own, as it ships

and drives each with the same propeller-shaped requests: CreateTask, GetTask and
ExecuteTaskSync (header, inputs, close, one answer), then the two calls whose agents answer
with Python values: ``ExecuteTaskSync/py`` (a sync agent returning ``outputs={"o0": "pong"}``)
and ``GetTask/outputs`` (SUCCEEDED with a dataclass's fields as outputs: flyteagents serves it
with a sensor whose poke returns the dataclass, flytekit, whose sensors cannot return outputs,
with a connector whose get returns them as a dict; the bare server answers a constant). The
``flyteagents-v2`` rows are the same ``flyteagents serve`` processes called as the Flyte 2 backend
calls them (flyteidl2's AsyncConnectorService; CreateTask and GetTask, each carrying a Connection
with a secret), in the same rounds, next to ``c0`` called the same way. For each it prints
requests/s, p50 and p99 latency, and the server process's own CPU time per request, read from
/proc/<pid>/stat (so it does not depend on the load generator sharing the machine).

Floors: flyteagents' CPU per request within 1.15x the bare server's on every call, at most 0.7x
flytekit's on all but GetTask, and its v2 calls within 1.1x of its v1 calls on CreateTask and GetTask.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from _common import CLOCK_TICKS, VENV_BIN, closed_loop, execution_metadata, finish, free_port, serve_command, stop_group
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, identifier_pb2, interface_pb2, literals_pb2, tasks_pb2, types_pb2
from flyteidl.service import agent_pb2_grpc
from flyteidl2.connector import connector_pb2, service_pb2_grpc
from flyteidl2.core import security_pb2

HERE = Path(__file__).resolve().parent
ASYNC_TYPE = "bench_async"
SYNC_TYPE = "bench_echo"
PONG_TYPE = "bench_pong"
DONE_TYPE = "bench_done"
OPERATIONS = ("CreateTask", "GetTask", "ExecuteTaskSync", "ExecuteTaskSync/py", "GetTask/outputs")


# Requests, as propeller builds them.


def _template(task_type: str) -> tasks_pb2.TaskTemplate:
    string = types_pb2.LiteralType(simple=types_pb2.STRING)
    variables = interface_pb2.VariableMap(variables={"text": interface_pb2.Variable(type=string)})
    tpl = tasks_pb2.TaskTemplate(
        id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.TASK, project="p", domain="d", name="bench.task", version="v1"
        ),
        type=task_type,
        metadata=tasks_pb2.TaskMetadata(runtime=tasks_pb2.RuntimeMetadata(type=tasks_pb2.RuntimeMetadata.FLYTE_SDK)),
        interface=interface_pb2.TypedInterface(inputs=variables, outputs=variables),
    )
    tpl.custom.update({"query": "SELECT 1", "region": "us"})
    return tpl


def _inputs() -> literals_pb2.LiteralMap:
    text = literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value="hello")))
    return literals_pb2.LiteralMap(literals={"text": text})


CREATE = agent_pb2.CreateTaskRequest(
    template=_template(ASYNC_TYPE),
    output_prefix="s3://bucket/out",
    inputs=_inputs(),
    task_execution_metadata=execution_metadata(),
)
GET = agent_pb2.GetTaskRequest(
    task_type=ASYNC_TYPE, task_category=agent_pb2.TaskCategory(name=ASYNC_TYPE), resource_meta=b'{"job_id":"job-1"}'
)
SYNC_HEADER = agent_pb2.ExecuteTaskSyncRequest(
    header=agent_pb2.CreateRequestHeader(
        template=_template(SYNC_TYPE), output_prefix="s3://bucket/out", task_execution_metadata=execution_metadata()
    )
)
SYNC_INPUTS = agent_pb2.ExecuteTaskSyncRequest(inputs=_inputs())
PONG_HEADER = agent_pb2.ExecuteTaskSyncRequest(
    header=agent_pb2.CreateRequestHeader(
        template=_template(PONG_TYPE), output_prefix="s3://bucket/out", task_execution_metadata=execution_metadata()
    )
)
GET_DONE = agent_pb2.GetTaskRequest(
    task_type=DONE_TYPE, task_category=agent_pb2.TaskCategory(name=DONE_TYPE), resource_meta=b'{"job_id":"job-1"}'
)


def _found_outputs() -> literals_pb2.LiteralMap:
    def primitive(**kwargs: Any) -> literals_pb2.Literal:
        return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(**kwargs)))

    return literals_pb2.LiteralMap(
        literals={
            "path": primitive(string_value="/data/in.csv"),
            "size": primitive(integer=3),
            "ready": primitive(boolean=True),
        }
    )


def _sensor_create() -> agent_pb2.CreateTaskRequest:
    """CreateTask for _found_sensor.FoundSensor, as propeller sends it (poked on every GetTask)."""
    from _found_sensor import FoundSensor

    from flyteagents.testing import create_task_request

    sensor = FoundSensor(name="bench_found_sensor", poke_interval=0)
    return create_task_request(sensor, "s3://bucket/out", {"path": "/data/in.csv"})


# The same calls as Flyte 2's backend makes them: flyteidl2's messages (the template, inputs and
# execution metadata are the same bytes) and a Connection holding the task's secret and configs.
CONNECTION = security_pb2.Connection(secrets={"api-key": "bench-secret-value"}, configs={"region": "us"})
CREATE_V2 = connector_pb2.CreateTaskRequest.FromString(CREATE.SerializeToString())
CREATE_V2.connection.CopyFrom(CONNECTION)
GET_V2 = connector_pb2.GetTaskRequest(
    task_category=connector_pb2.TaskCategory(name=ASYNC_TYPE),
    resource_meta=b'{"job_id":"job-1"}',
    output_prefix="s3://bucket/out",
    connection=CONNECTION,
)
V2 = "flyteagents-v2"  # not a server of its own: the flyteagents processes, called over v2


# The bare ceiling: the same services answering constants.


class _BareAsync(agent_pb2_grpc.AsyncAgentServiceServicer):
    create = agent_pb2.CreateTaskResponse(resource_meta=b'{"job_id":"job-1"}')
    get = agent_pb2.GetTaskResponse(resource=agent_pb2.Resource(phase=execution_pb2.TaskExecution.RUNNING))

    async def CreateTask(self, request, context):
        return self.create

    done = agent_pb2.GetTaskResponse(
        resource=agent_pb2.Resource(phase=execution_pb2.TaskExecution.SUCCEEDED, outputs=_found_outputs())
    )

    async def GetTask(self, request, context):
        return self.done if request.task_category.name == DONE_TYPE else self.get


class _BareSync(agent_pb2_grpc.SyncAgentServiceServicer):
    answer = agent_pb2.ExecuteTaskSyncResponse(
        header=agent_pb2.ExecuteTaskSyncResponseHeader(
            resource=agent_pb2.Resource(phase=execution_pb2.TaskExecution.SUCCEEDED, outputs=_inputs())
        )
    )

    pong = agent_pb2.ExecuteTaskSyncResponse(
        header=agent_pb2.ExecuteTaskSyncResponseHeader(
            resource=agent_pb2.Resource(
                phase=execution_pb2.TaskExecution.SUCCEEDED,
                outputs=literals_pb2.LiteralMap(
                    literals={
                        "o0": literals_pb2.Literal(
                            scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value="pong"))
                        )
                    }
                ),
            )
        )
    )

    async def ExecuteTaskSync(self, request_iterator, context):
        answer = self.answer
        async for message in request_iterator:
            if message.WhichOneof("part") == "header" and message.header.template.type == PONG_TYPE:
                answer = self.pong
        yield answer


async def _bare_server(port: int) -> None:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AsyncAgentServiceServicer_to_server(_BareAsync(), server)
    agent_pb2_grpc.add_SyncAgentServiceServicer_to_server(_BareSync(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"bare serving on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


# Servers as processes.


def _start(name: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if name == "flyteagents":
        env["BENCH_FRAMEWORK"] = "flyteagents"
        cmd = serve_command("--port", str(port), "--workers", "1")
        cmd += ["--metrics-port", "-1", "--modules", "service_agents", "--log-level", "WARNING"]
    elif name == "c0":
        env["BENCH_FRAMEWORK"] = "flyte"
        cmd = [str(VENV_BIN / "c0"), "--port", str(port), "--prometheus_port", str(free_port())]
        cmd += ["--modules", "service_agents"]
    elif name == "flytekit":
        env["BENCH_FRAMEWORK"] = "flytekit"
        cmd = [str(VENV_BIN / "pyflyte"), "serve", "connector", "--port", str(port)]
        cmd += ["--prometheus_port", str(free_port()), "--modules", "service_agents"]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-server", str(port)]
    return subprocess.Popen(
        cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


async def _wait_ready(channel: grpc.aio.Channel, proc: subprocess.Popen, name: str) -> None:
    stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
    v2_stub = service_pb2_grpc.AsyncConnectorServiceStub(channel)  # c0 speaks flyteidl2 only
    deadline = time.monotonic() + 180  # several servers importing flytekit at once on 2 cores
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} server exited with {proc.returncode}")
        try:
            await (v2_stub.GetTask(GET_V2, timeout=1) if name == "c0" else stub.GetTask(GET, timeout=1))
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads: nanosecond run times from /proc/<pid>/task/*/schedstat.

    /proc/<pid>/stat counts in clock ticks (10 ms), too coarse for short rounds; it is the
    fallback where schedstat is missing.
    """
    try:
        return (
            sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
        )
    except (FileNotFoundError, ProcessLookupError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


# Load.


def _calls(channel: grpc.aio.Channel, get_done: agent_pb2.GetTaskRequest) -> dict[str, Callable[[], Awaitable[object]]]:
    async_stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
    sync_stub = agent_pb2_grpc.SyncAgentServiceStub(channel)

    async def create() -> object:
        return await async_stub.CreateTask(CREATE)

    async def get() -> object:
        return await async_stub.GetTask(GET)

    async def execute() -> object:
        call = sync_stub.ExecuteTaskSync()
        await call.write(SYNC_HEADER)
        await call.write(SYNC_INPUTS)
        await call.done_writing()
        response = await call.read()
        assert response.header.resource.phase == execution_pb2.TaskExecution.SUCCEEDED
        return response

    async def execute_py() -> object:
        call = sync_stub.ExecuteTaskSync()
        await call.write(PONG_HEADER)
        await call.write(SYNC_INPUTS)
        await call.done_writing()
        response = await call.read()
        assert response.header.resource.outputs.literals["o0"].scalar.primitive.string_value == "pong", response
        return response

    async def get_outputs() -> object:
        response = await async_stub.GetTask(get_done)
        resource = response.resource
        assert resource.phase == execution_pb2.TaskExecution.SUCCEEDED, response
        assert resource.outputs.literals["size"].scalar.primitive.integer == 3, response
        return response

    return {
        "CreateTask": create,
        "GetTask": get,
        "ExecuteTaskSync": execute,
        "ExecuteTaskSync/py": execute_py,
        "GetTask/outputs": get_outputs,
    }


async def _get_done(name: str, channel: grpc.aio.Channel, sensor_create: agent_pb2.CreateTaskRequest | None) -> Any:
    """The GetTask request of the outputs call: for flyteagents, of a sensor it has just created."""
    if name != "flyteagents" or sensor_create is None:
        return GET_DONE
    created = await agent_pb2_grpc.AsyncAgentServiceStub(channel).CreateTask(sensor_create)
    category = agent_pb2.TaskCategory(name=sensor_create.template.type)
    return agent_pb2.GetTaskRequest(
        task_type=category.name, task_category=category, resource_meta=created.resource_meta
    )


def _calls_v2(channel: grpc.aio.Channel) -> dict[str, Callable[[], Awaitable[object]]]:
    stub = service_pb2_grpc.AsyncConnectorServiceStub(channel)

    async def create() -> object:
        return await stub.CreateTask(CREATE_V2)

    async def get() -> object:
        return await stub.GetTask(GET_V2)

    return {"CreateTask": create, "GetTask": get}


async def _measure_all(
    names: list[str], requests: int, concurrency: int, rounds: int, processes: int, operations: tuple[str, ...]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Interleave the servers round by round, so drift in the shared machine's load hits all alike.

    Each server runs as ``processes`` processes, taking turns round by round: one process of the
    same program can be 10% faster or slower than the next (memory layout), which would otherwise
    land whole in the comparison.
    """
    servers = [name for name in names if name != V2]
    ports = {name: [free_port() for _ in range(processes)] for name in servers}
    procs = {name: [_start(name, port) for port in ports[name]] for name in servers}
    if V2 in names:  # the flyteagents processes, answering Flyte 2's calls
        ports[V2], procs[V2] = ports["flyteagents"], procs["flyteagents"]
    per_round = max(requests // rounds, 100)
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    try:
        # Its own channels for v2, as the Flyte 2 backend would have next to propeller.
        channels = {name: [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports[name]] for name in names}
        for name in servers:
            for channel, proc in zip(channels[name], procs[name], strict=True):
                await _wait_ready(channel, proc, name)
        sensor_create = _sensor_create() if "GetTask/outputs" in operations else None
        calls = {
            name: [
                _calls_v2(channel)
                if name in (V2, "c0")
                else _calls(channel, await _get_done(name, channel, sensor_create))
                for channel in channels[name]
            ]
            for name in names
        }
        for op in operations:
            callers = [name for name in names if op in calls[name][0]]
            cpu: dict[str, list[float]] = {name: [] for name in callers}
            rps: dict[str, list[float]] = {name: [] for name in callers}
            latencies: dict[str, list[float]] = {name: [] for name in callers}
            for name in callers:
                for process_calls in calls[name]:
                    await closed_loop(process_calls[op], max(per_round // 2, 50), concurrency)  # warm up
            for round_no in range(rounds):
                turn = round_no % processes
                for name in callers:
                    pid = procs[name][turn].pid
                    cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
                    lat = await closed_loop(calls[name][turn][op], per_round, concurrency)
                    wall, used = time.perf_counter() - t0, _cpu_seconds(pid) - cpu0
                    cpu[name].append(used / per_round * 1e6)
                    rps[name].append(per_round / wall)
                    latencies[name].extend(lat)
            for name in callers:
                lat = sorted(latencies[name])
                results[name][op] = {
                    "rounds": cpu[name],
                    "rps": statistics.median(rps[name]),
                    "p50_ms": statistics.median(lat) * 1e3,
                    "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
                    "cpu_us": statistics.median(cpu[name]),
                }
        for name in names:
            for channel in channels[name]:
                await channel.close()
    finally:
        for name in servers:
            for proc in procs[name]:
                stop_group(proc)
    return results


def _report(
    all_results: dict[str, dict[str, dict[str, Any]]],
    requests: int,
    concurrency: int,
    show_rounds: bool,
    operations: tuple[str, ...],
) -> bool:
    print(
        f"\n{requests} requests per call and server, {concurrency} concurrent, one channel per server process;"
        " CPU = the server process's own (median of the rounds)\n"
    )
    header = f"{'call':<19} {'server':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}"
    print(header)
    print("-" * len(header))
    ok = True
    for op in operations:
        for name in ("flyteagents", V2, "c0", "flytekit", "bare"):
            r = all_results.get(name, {}).get(op)
            if r is None:
                continue
            print(f"{op:<19} {name:<12} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['cpu_us']:>11.0f}")
        # Ratios of rounds run back to back, then their median: drift in the machine's load cancels out.
        fa, fk, bare = (all_results[n][op]["rounds"] for n in ("flyteagents", "flytekit", "bare"))
        vs_bare = statistics.median(a / b for a, b in zip(fa, bare, strict=True))
        vs_fk = statistics.median(a / b for a, b in zip(fa, fk, strict=True))
        # The lowest flyteagents/flytekit a grpc.aio server on the same event loop can reach here.
        bare_vs_fk = statistics.median(a / b for a, b in zip(bare, fk, strict=True))
        floor_bare = vs_bare <= 1.15
        floor_fk = op == "GetTask" or vs_fk <= 0.7  # plain GetTask: flytekit's is already near the bare one
        ok &= floor_bare and floor_fk
        print(
            f"{'':<19} flyteagents/bare = {vs_bare:.2f}x (floor 1.15x: {'ok' if floor_bare else 'MISSED'}), "
            f"flyteagents/flytekit = {vs_fk:.2f}x"
            + ("" if op == "GetTask" else f" (floor 0.7x: {'ok' if floor_fk else 'MISSED'})")
        )
        print(f"{'':<19} bare/flytekit = {bare_vs_fk:.2f}x (what gRPC alone costs, next to flytekit)")
        v2 = all_results.get(V2, {}).get(op)
        if v2 is not None:
            v2_vs_v1 = statistics.median(a / b for a, b in zip(v2["rounds"], fa, strict=True))
            floor_v2 = v2_vs_v1 <= 1.1
            ok &= floor_v2
            print(
                f"{'':<19} v2/v1 = {v2_vs_v1:.2f}x on the same processes (floor 1.1x: {'ok' if floor_v2 else 'MISSED'})"
            )
        c0 = all_results.get("c0", {}).get(op)
        if v2 is not None and c0 is not None:
            v2_vs_c0 = statistics.median(a / b for a, b in zip(v2["rounds"], c0["rounds"], strict=True))
            print(f"{'':<19} flyteagents-v2/c0 = {v2_vs_c0:.2f}x (c0: flyte-sdk's own connector service)")
        if show_rounds:
            by_name = [("flyteagents", fa), ("flytekit", fk), ("bare", bare)]
            if v2 is not None:
                by_name.insert(1, (V2, v2["rounds"]))
            if c0 is not None:
                by_name.insert(2, ("c0", c0["rounds"]))
            for name, rounds in by_name:
                print(f"{'':<19} {name} CPU us/req by round: {' '.join(f'{x:.0f}' for x in rounds)}")
        print()
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 1,000 requests per round, 16 rounds: per-round CPU moves ~10% on a shared VM, and the median of
    # 16 back-to-back ratios moves about 0.7 times as much as the median of 8: one run's verdict is steadier.
    parser.add_argument("--requests", type=int, default=16000, help="requests per call and server")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight at once")
    parser.add_argument("--rounds", type=int, default=16, help="interleaved rounds (CPU/request is their median)")
    parser.add_argument("--processes", type=int, default=2, help="processes per server, taking turns by round")
    parser.add_argument("--show-rounds", action="store_true", help="print each round's CPU per request")
    parser.add_argument(
        "--calls", default=",".join(OPERATIONS), help=f"comma-separated calls to measure (of {', '.join(OPERATIONS)})"
    )
    parser.add_argument("--servers", default=f"flyteagents,{V2},c0,flytekit,bare", help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        try:  # the loop `flyteagents serve --loop auto` picks
            from uvloop import run
        except ImportError:
            run = asyncio.run
        run(_bare_server(args.bare_server))
        return
    names = args.servers.split(",")
    print(f"measuring {', '.join(names)}, interleaved in {args.rounds} rounds ...", flush=True)
    operations = tuple(args.calls.split(","))
    unknown = set(operations) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown calls: {', '.join(sorted(unknown))}")
    results = asyncio.run(_measure_all(names, args.requests, args.concurrency, args.rounds, args.processes, operations))
    if {"flyteagents", "flytekit", "bare"} <= set(results):
        finish(_report(results, args.requests, args.concurrency, args.show_rounds, operations))
    else:
        for name, ops in results.items():
            for op, r in ops.items():
                print(
                    f"{op:<16} {name:<12} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['cpu_us']:>11.0f}"
                )


if __name__ == "__main__":
    main()
