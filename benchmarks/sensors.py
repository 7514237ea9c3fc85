"""FileSensor polls: flyteagents' sensor engine vs flytekit's, each behind its own gRPC service.

    .venv/bin/python benchmarks/sensors.py [--polls N] [--concurrency C]

For a local path and for S3 (a real ``moto_server`` on loopback), starts

- ``flyteagents serve`` serving ``flyteagents.sensor.FileSensor`` through the sensor engine, and
- flytekit's ``pyflyte serve connector`` serving ``flytekit.sensor.FileSensor`` through its
  SensorEngine (its gRPC port and metrics port bound to 127.0.0.1 instead of all interfaces),

each as a separate process. Each server gets one CreateTask for a sensor waiting on a file
that does not exist (the state a sensor spends its life in), then GetTask calls, as
FlytePropeller sends them. For each it prints the server process's CPU time per poll
(utime + stime from /proc/<pid>/stat, so the load generator does not count), and the
p50 / p99 latency of a poll.

Floor: flyteagents uses at least 3x less server CPU per poll than flytekit, on both paths.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import grpc
from _common import FLYTEKIT_LAUNCHER, closed_loop, cpu_seconds, finish, free_port, serve_command, stop_group
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from flyteidl.service import agent_pb2_grpc
from flytekit.sensor.file_sensor import FileSensor as FlytekitFileSensor

from flyteagents.sensor import FileSensor
from flyteagents.testing import MotoServer, create_task_request
from flyteagents.testing._moto import MOTO_CREDENTIALS

FLOOR = 3.0


def _create_request(task: Any, path: str) -> agent_pb2.CreateTaskRequest:
    return create_task_request(task, "/tmp/bench-out", {"path": path})


def _start(framework: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    if framework == "flyteagents":
        cmd = serve_command("--port", str(port), "--workers", "1")
        cmd += ["--metrics-port", "-1", "--log-level", "WARNING"]
    else:
        cmd = [sys.executable, "-c", FLYTEKIT_LAUNCHER, "--port", str(port), "--prometheus_port", str(free_port())]
    return subprocess.Popen(
        cmd,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def _create(
    stub: agent_pb2_grpc.AsyncAgentServiceStub, request: agent_pb2.CreateTaskRequest, proc: subprocess.Popen[bytes]
) -> bytes:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            response = await stub.CreateTask(request, timeout=10)
            return bytes(response.resource_meta)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _measure(
    framework: str, request: agent_pb2.CreateTaskRequest, env: dict[str, str], polls: int, concurrency: int
) -> dict[str, float]:
    port = free_port()
    proc = _start(framework, port, env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
            meta = await _create(stub, request, proc)
            get = agent_pb2.GetTaskRequest(
                task_type="sensor", task_category=agent_pb2.TaskCategory(name="sensor"), resource_meta=meta
            )

            async def poll() -> None:
                response = await stub.GetTask(get, timeout=30)
                phase = response.resource.phase
                if phase != execution_pb2.TaskExecution.RUNNING:
                    raise RuntimeError(f"{framework}: expected RUNNING, got {phase}: {response.resource.message}")

            await closed_loop(poll, max(polls // 10, 20), concurrency)  # warm up: imports, caches, connections
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            latencies = await closed_loop(poll, polls, concurrency)
            wall, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
    finally:
        stop_group(proc)
    latencies.sort()
    return {
        "polls_s": polls / wall,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1e3,
        "cpu_us": cpu / polls * 1e6,
    }


def _scenarios(moto: MotoServer, tmp: Path) -> dict[str, tuple[dict[str, Any], Callable[[str], Any]]]:
    """path -> (server env, sensor task per framework) for each scenario."""
    s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, **moto.credentials)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for i in range(20):  # the prefix a sensor watches usually holds other objects
        s3.put_object(Bucket=bucket, Key=f"landing/other-{i}.csv", Body=b"x")
    flytekit_s3_env = {
        "FLYTE_AWS_ENDPOINT": moto.endpoint_url,
        "FLYTE_AWS_ACCESS_KEY_ID": MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "FLYTE_AWS_SECRET_ACCESS_KEY": MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }
    return {
        str(tmp / "landing" / "missing.csv"): ({}, lambda fw: _sensor(fw, {})),
        f"s3://{bucket}/landing/missing.csv": (
            {**MOTO_CREDENTIALS, **flytekit_s3_env},
            lambda fw: _sensor(fw, {"endpoint_url": moto.endpoint_url}),
        ),
    }


def _sensor(framework: str, storage_options: dict[str, Any]) -> Any:
    if framework == "flyteagents":
        # poke_interval 0: every GetTask pokes (as flytekit's do), so this measures a poke, not a remembered answer
        return FileSensor(name="bench_file_sensor", storage_options=storage_options, poke_interval=0)
    return FlytekitFileSensor(name="bench_file_sensor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=1000, help="GetTask calls per server and path")
    parser.add_argument("--concurrency", type=int, default=4, help="GetTask calls in flight at once")
    parser.add_argument("--paths", default="local,s3", help="which paths to measure: local, s3 or both")
    args = parser.parse_args()
    kinds = args.paths.split(",")

    results: dict[tuple[str, str], dict[str, float]] = {}
    with MotoServer() as moto, tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "landing").mkdir()
        for path, (env, sensor_for) in _scenarios(moto, Path(tmp)).items():
            kind = "s3" if path.startswith("s3://") else "local"
            if kind not in kinds:
                continue
            for framework in ("flyteagents", "flytekit"):
                print(f"measuring {framework} on {kind} ...", flush=True)
                request = _create_request(sensor_for(framework), path)
                results[(kind, framework)] = asyncio.run(
                    _measure(framework, request, env, args.polls, args.concurrency)
                )

    print(f"\n{args.polls} GetTask polls per server, {args.concurrency} in flight; CPU = server process only\n")
    header = f"{'path':<7} {'server':<12} {'polls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/poll':>12}"
    print(header)
    print("-" * len(header))
    ok = True
    for kind in kinds:
        for framework in ("flyteagents", "flytekit"):
            r = results[(kind, framework)]
            print(
                f"{kind:<7} {framework:<12} {r['polls_s']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['cpu_us']:>12.0f}"
            )
        ratio = results[(kind, "flytekit")]["cpu_us"] / results[(kind, "flyteagents")]["cpu_us"]
        held = ratio >= FLOOR
        ok &= held
        verdict = "ok" if held else "MISSED"
        print(f"{'':<7} flytekit/flyteagents CPU per poll = {ratio:.1f}x (floor {FLOOR:g}x: {verdict})\n")
    finish(ok)


if __name__ == "__main__":
    main()
