"""External calls per sensor job under propeller-rate polling: flyteagents vs flytekit's sensor service.

    .venv/bin/python benchmarks/poll_rate.py [--minutes 10] [--every 10] [--poke-interval 60] [--jobs 3]
                                             [--time-scale 1.0]

Starts, side by side on loopback,

- ``flyteagents serve`` serving ``flyteagents.sensor.HTTPSensor`` with ``poke_interval`` (60 s), and
- flytekit's ``pyflyte serve connector`` serving a flytekit BaseSensor whose poke is one HTTP GET
  (``_counting_sensor.py``; flytekit's sensors have no interval: its engine pokes on every GetTask),

each a separate process, and one small HTTP server both sensors ask (it answers 503: the
condition never holds, the state a sensor spends its life in). For each framework it creates
``--jobs`` sensor tasks with CreateTask, then sends each a GetTask every ``--every`` seconds
(FlytePropeller's rate as users report it) for ``--minutes``, both frameworks at once, and
counts the requests that reached the HTTP server: the external calls per job.

``--time-scale 0.05`` runs every duration 20x faster (a 30 s run) with the same ratios.

Floor: flyteagents makes at least 5x fewer external calls per job than flytekit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from _common import FLYTEKIT_LAUNCHER, finish, free_port, serve_command, stop_group
from _counting_sensor import CountingHTTPSensor
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from flyteidl.service import agent_pb2_grpc

from flyteagents.sensor import HTTPSensor
from flyteagents.testing import create_task_request

HERE = Path(__file__).resolve().parent
FLOOR = 5.0


class Endpoint:
    """The external system: counts the requests per path, answers 503 ("not yet") to all."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                endpoint.calls[self.path] += 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _start(framework: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    if framework == "flyteagents":
        cmd = serve_command("--port", str(port), "--workers", "1")
        cmd += ["--metrics-port", "-1", "--log-level", "WARNING"]
    else:
        cmd = [sys.executable, "-c", FLYTEKIT_LAUNCHER, "--port", str(port), "--prometheus_port", str(free_port())]
    return subprocess.Popen(
        cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


async def _create(stub: agent_pb2_grpc.AsyncAgentServiceStub, request: Any, proc: subprocess.Popen[bytes]) -> bytes:
    deadline = time.monotonic() + 180  # several servers importing flytekit at once on 2 cores are slow to start
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            return bytes((await stub.CreateTask(request, timeout=10)).resource_meta)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _propeller(stub: agent_pb2_grpc.AsyncAgentServiceStub, meta: bytes, every: float, duration: float) -> int:
    """GetTask every ``every`` seconds for ``duration``, as propeller's resync does; returns how many were sent."""
    request = agent_pb2.GetTaskRequest(
        task_type="sensor", task_category=agent_pb2.TaskCategory(name="sensor"), resource_meta=meta
    )
    sent, start = 0, time.monotonic()
    while True:
        response = await stub.GetTask(request, timeout=10)
        sent += 1
        if response.resource.phase != execution_pb2.TaskExecution.RUNNING:
            raise RuntimeError(f"expected RUNNING, got {response.resource.phase}: {response.resource.message}")
        next_at = start + sent * every
        if next_at > start + duration:
            return sent
        await asyncio.sleep(max(next_at - time.monotonic(), 0))


async def _run(args: argparse.Namespace, endpoint: Endpoint) -> dict[str, dict[str, float]]:
    scale = args.time_scale
    duration, every, interval = args.minutes * 60 * scale, args.every * scale, args.poke_interval * scale
    procs = {fw: (_start(fw, port), port) for fw, port in (("flyteagents", free_port()), ("flytekit", free_port()))}
    try:
        channels = {fw: grpc.aio.insecure_channel(f"127.0.0.1:{port}") for fw, (_, port) in procs.items()}
        stubs = {fw: agent_pb2_grpc.AsyncAgentServiceStub(ch) for fw, ch in channels.items()}
        metas: dict[str, list[bytes]] = {}
        for fw, (proc, _) in procs.items():
            metas[fw] = []
            for job in range(args.jobs):
                url = f"{endpoint.url}/{fw}/{job}"
                if fw == "flyteagents":
                    sensor: Any = HTTPSensor(name="bench_http", poke_interval=interval)
                else:
                    sensor = CountingHTTPSensor(name="bench_http")
                request = create_task_request(sensor, "/tmp/bench-out", {"url": url})
                metas[fw].append(await _create(stubs[fw], request, proc))
        print(f"polling {args.jobs} jobs per framework every {every:g} s for {duration:g} s ...", flush=True)
        sent = await asyncio.gather(
            *(_propeller(stubs[fw], meta, every, duration) for fw in procs for meta in metas[fw])
        )
        for channel in channels.values():
            await channel.close()
    finally:
        for proc, _ in procs.values():
            stop_group(proc)
    results = {}
    for i, fw in enumerate(procs):
        gets = sent[i * args.jobs : (i + 1) * args.jobs]
        calls = [endpoint.calls[f"/{fw}/{job}"] for job in range(args.jobs)]
        results[fw] = {"gets": sum(gets) / args.jobs, "calls": sum(calls) / args.jobs, "max_calls": max(calls)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long propeller polls each job")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between two GetTasks of a job")
    parser.add_argument("--poke-interval", type=float, default=60.0, help="the flyteagents sensor's poke_interval")
    parser.add_argument("--jobs", type=int, default=3, help="sensor jobs per framework")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every duration (0.05: 20x faster)")
    args = parser.parse_args()

    with Endpoint() as endpoint:
        results = asyncio.run(_run(args, endpoint))
    print(
        f"\n{args.jobs} sensor jobs per framework, GetTask every {args.every:g} s for {args.minutes:g} min "
        f"(time scale {args.time_scale:g}); flyteagents poke_interval={args.poke_interval:g} s\n"
    )
    header = f"{'server':<12} {'GetTasks/job':>13} {'external calls/job':>19} {'max calls/job':>14}"
    print(header)
    print("-" * len(header))
    for fw, r in results.items():
        print(f"{fw:<12} {r['gets']:>13.1f} {r['calls']:>19.1f} {r['max_calls']:>14.0f}")
    ratio = results["flytekit"]["calls"] / max(results["flyteagents"]["calls"], 1e-9)
    held = ratio >= FLOOR
    print(
        f"\nflytekit/flyteagents external calls per job = {ratio:.1f}x (floor {FLOOR:g}x: {'ok' if held else 'MISSED'})"
    )
    finish(held)


if __name__ == "__main__":
    main()
