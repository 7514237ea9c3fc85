"""ChatGPT tasks through the agent service: flyteagents serve vs flytekit's ChatGPT connector.

    .venv/bin/python benchmarks/openai_agent.py [--requests N]

Starts the fake OpenAI server from plugins/openai/tests (its own process, so its CPU is
counted by neither side), then, one at a time on loopback:

- ``flyteagents serve`` with flyteagents-openai installed (the ``chatgpt`` sync agent);
- flytekit's ``pyflyte serve connector`` with flytekitplugins-openai (its ChatGPTConnector;
  installed beside the venv on first use, see tests/flytekit_plugins.py);

both pointed at the fake server through ``OPENAI_BASE_URL`` with the key in the
``FLYTE_OPENAI_API_KEY`` secret. Each is driven with the same ExecuteTaskSync calls,
the way propeller sends them (header with the template flytekitplugins-openai's
ChatGPTTask makes, inputs, close, read one answer), at 1 and at 64 calls in flight. It
prints the server process's own CPU time per call (from /proc/<pid>/stat) and p50/p99
latency side by side. Floor: flyteagents uses at least 2x less CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
from _common import VENV_BIN, closed_loop, cpu_seconds, execution_metadata, finish, free_port, serve_command, stop_group
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, identifier_pb2, interface_pb2, literals_pb2, tasks_pb2, types_pb2
from flyteidl.service import agent_pb2_grpc
from google.protobuf import struct_pb2

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from flytekit_plugins import pythonpath

ROOT = Path(__file__).resolve().parent.parent
FAKE_SERVER = ROOT / "plugins" / "openai" / "tests" / "fake_openai.py"
API_KEY = "sk-bench-0000"
CONCURRENCY = (1, 64)


def _template() -> tasks_pb2.TaskTemplate:
    """The template flytekitplugins-openai's ChatGPTTask serializes (task type ``chatgpt``)."""
    string = types_pb2.LiteralType(simple=types_pb2.STRING)
    tpl = tasks_pb2.TaskTemplate(
        id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.TASK, project="p", domain="d", name="bench.ask", version="v1"
        ),
        type="chatgpt",
        metadata=tasks_pb2.TaskMetadata(runtime=tasks_pb2.RuntimeMetadata(type=tasks_pb2.RuntimeMetadata.FLYTE_SDK)),
        interface=interface_pb2.TypedInterface(
            inputs=interface_pb2.VariableMap(variables={"message": interface_pb2.Variable(type=string)}),
            outputs=interface_pb2.VariableMap(variables={"o0": interface_pb2.Variable(type=string)}),
        ),
    )
    custom = struct_pb2.Struct()
    custom.update({"openai_organization": None, "chatgpt_config": {"model": "gpt-bench", "temperature": 0}})
    tpl.custom.CopyFrom(custom)
    return tpl


HEADER = agent_pb2.ExecuteTaskSyncRequest(
    header=agent_pb2.CreateRequestHeader(
        template=_template(), output_prefix="s3://bucket/out", task_execution_metadata=execution_metadata()
    )
)
INPUTS = agent_pb2.ExecuteTaskSyncRequest(
    inputs=literals_pb2.LiteralMap(
        literals={
            "message": literals_pb2.Literal(
                scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value="how fast is it?"))
            )
        }
    )
)


def _spawn(cmd: list[str], env: dict[str, str], stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.DEVNULL, start_new_session=True)


def _start_fake() -> tuple[subprocess.Popen, str]:
    proc = _spawn(
        [sys.executable, str(FAKE_SERVER), "--key", API_KEY, "--no-record"], dict(os.environ), stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().decode().strip()
    if not base_url.startswith("http://"):
        stop_group(proc)
        raise RuntimeError("the fake OpenAI server did not start")
    return proc, base_url


def _start_agent_server(name: str, port: int, base_url: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OPENAI_BASE_URL=base_url)
    env["FLYTE_OPENAI_API_KEY"] = env["_FSEC_FLYTE_OPENAI_API_KEY"] = API_KEY
    if name == "flyteagents":
        cmd = serve_command("--port", str(port), "--workers", "1")
        cmd += ["--metrics-port", "-1", "--log-level", "WARNING"]
    else:
        env["PYTHONPATH"] = pythonpath("openai")
        cmd = [str(VENV_BIN / "pyflyte"), "serve", "connector", "--port", str(port)]
        cmd += ["--prometheus_port", str(free_port())]
    return _spawn(cmd, env)


async def _execute(stub: agent_pb2_grpc.SyncAgentServiceStub) -> None:
    call = stub.ExecuteTaskSync()
    await call.write(HEADER)
    await call.write(INPUTS)
    await call.done_writing()
    response = await call.read()
    resource = response.header.resource
    if resource.phase != execution_pb2.TaskExecution.SUCCEEDED:
        raise RuntimeError(f"call ended {resource.phase}: {resource.message}")
    assert resource.outputs.literals["o0"].scalar.primitive.string_value == "echo: how fast is it?"


async def _wait_ready(stub: agent_pb2_grpc.SyncAgentServiceStub, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            await asyncio.wait_for(_execute(stub), 5)
            return
        except (grpc.aio.AioRpcError, RuntimeError, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def _measure(name: str, base_url: str, requests: int) -> dict[int, dict[str, float]]:
    port = free_port()
    proc = _start_agent_server(name, port, base_url)
    results: dict[int, dict[str, float]] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = agent_pb2_grpc.SyncAgentServiceStub(channel)
            await _wait_ready(stub, proc, name)
            for concurrency in CONCURRENCY:
                n = requests if concurrency > 1 else max(requests // 4, 50)
                await closed_loop(lambda: _execute(stub), max(n // 10, 20), concurrency)  # warm up
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                latencies = sorted(await closed_loop(lambda: _execute(stub), n, concurrency))
                wall, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
                results[concurrency] = {
                    "calls/s": n / wall,
                    "p50_ms": statistics.median(latencies) * 1e3,
                    "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1e3,
                    "cpu_us": cpu / n * 1e6,
                }
    finally:
        stop_group(proc)
    return results


def _report(results: dict[str, dict[int, dict[str, float]]]) -> bool:
    print("\nExecuteTaskSync for a chatgpt task; CPU = the agent server process only\n")
    head = f"{'in flight':>9} {'server':<12} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/call':>12}"
    print(head)
    print("-" * len(head))
    ok = True
    for concurrency in CONCURRENCY:
        for name in ("flyteagents", "flytekit"):
            r = results[name][concurrency]
            print(
                f"{concurrency:>9} {name:<12} {r['calls/s']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
                f" {r['cpu_us']:>12.0f}"
            )
        ratio = results["flytekit"][concurrency]["cpu_us"] / results["flyteagents"][concurrency]["cpu_us"]
        held = ratio >= 2
        ok &= held
        print(f"{'':>9} flytekit/flyteagents CPU per call = {ratio:.2f}x (floor 2x: {'ok' if held else 'MISSED'})\n")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="calls at 64 in flight (a quarter at 1)")
    args = parser.parse_args()
    fake, base_url = _start_fake()
    try:
        results = {}
        for name in ("flyteagents", "flytekit"):
            print(f"measuring {name} ...", flush=True)
            results[name] = asyncio.run(_measure(name, base_url, args.requests))
    finally:
        stop_group(fake)
    finish(_report(results))


if __name__ == "__main__":
    main()
