"""GetTask polls of RUNNING Databricks runs: flyteagents' service vs flytekit's Databricks connector.

    uv pip install -e 'plugins/databricks[bench]'     # flytekitplugins-spark, the anchor
    .venv/bin/python benchmarks/databricks_agent.py [--polls 2000] [--concurrency 20]

Starts the local Jobs API 2.1 server (plugins/databricks/tests/jobs_server.py) in its own
process, over TLS with a fresh self-signed certificate trusted through ``SSL_CERT_FILE``
(flytekit's connector only speaks https), its runs staying RUNNING. Then each agent service
in its own process: ``flyteagents serve`` with flyteagents-databricks, and ``pyflyte serve
connector`` with flytekitplugins-spark. Both get the same task template (recorded from
flytekitplugins-spark's DatabricksV2, tests/data), the same token and environment. Each side
creates ``--concurrency`` runs with CreateTask, then GetTask polls them over a real gRPC
channel with the flyteidl stubs, as FlytePropeller does: one poll at a time, then
``--concurrency`` at once. Reports each service process's own CPU per poll (from /proc, so the
load generator does not count), the Jobs API server's CPU per poll, and p50/p99 latency, side by
side. Floor: flyteagents at least 3x less service CPU per poll, in both modes.

A second table takes the gRPC service away: each side's agent object (DatabricksAgent,
flytekit's DatabricksConnectorV2) is called directly in its own process, one ``get`` at a time
and ``--concurrency`` at once, so the figures compare the two agents alone.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from _common import VENV_BIN, ServiceProcess, closed_loop, cpu_seconds, finish, free_port, serve_command
from flyteidl.admin import agent_pb2
from flyteidl.core import tasks_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flyteidl.service import agent_pb2_grpc
from google.protobuf.json_format import Parse

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "plugins" / "databricks" / "tests"
TOKEN = "dapi-bench-token"
CATEGORY = agent_pb2.TaskCategory(name="databricks", version=0)


def make_cert(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def template(instance: str) -> tasks_pb2.TaskTemplate:
    """flytekitplugins-spark's recorded DatabricksV2 template, pointed at the local workspace."""
    tmpl = Parse((TESTS / "data" / "spark_databricks_template.json").read_text(), tasks_pb2.TaskTemplate())
    tmpl.custom["databricksInstance"] = instance
    return tmpl


async def prepare(stub: agent_pb2_grpc.AsyncAgentServiceStub, tmpl: tasks_pb2.TaskTemplate, runs: int) -> list[Any]:
    """Create ``runs`` runs through the service; their GetTask requests once each is RUNNING."""
    requests = []
    for _ in range(runs):
        created = await stub.CreateTask(
            agent_pb2.CreateTaskRequest(template=tmpl, output_prefix="s3://b/o"), timeout=60
        )
        requests.append(
            agent_pb2.GetTaskRequest(
                task_type="databricks", task_category=CATEGORY, resource_meta=created.resource_meta
            )
        )
    for request in requests:  # until RUNNING: flytekit's connector fails GetTask on a QUEUED run
        for _ in range(100):
            try:
                if (await stub.GetTask(request, timeout=30)).resource.phase == TaskExecution.RUNNING:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    return requests


async def poll(
    stub: agent_pb2_grpc.AsyncAgentServiceStub, requests: list[Any], polls: int, width: int, pids: tuple[int, int]
) -> tuple[list[float], float, float, float]:
    """``polls`` GetTask calls, ``width`` at a time: latencies, service CPU, Jobs API CPU, wall seconds."""
    turn = itertools.count()

    async def one() -> None:
        response = await stub.GetTask(requests[next(turn) % len(requests)], timeout=30)
        assert response.resource.phase == TaskExecution.RUNNING, response.resource

    cpu0, jobs0, wall0 = cpu_seconds(pids[0]), cpu_seconds(pids[1]), time.perf_counter()
    latencies = await closed_loop(one, polls, width)
    return latencies, cpu_seconds(pids[0]) - cpu0, cpu_seconds(pids[1]) - jobs0, time.perf_counter() - wall0


async def measure(
    servers: list[ServiceProcess], jobs_pid: int, tmpl: tasks_pb2.TaskTemplate, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Poll through every service, taking turns round by round so drift in the machine's load hits all alike."""
    channels = {server.name: grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") for server in servers}
    stubs = {name: agent_pb2_grpc.AsyncAgentServiceStub(channel) for name, channel in channels.items()}
    requests = {server.name: await prepare(stubs[server.name], tmpl, args.concurrency) for server in servers}
    out: dict[str, dict[str, Any]] = {
        name: {"resource_meta_has_token": TOKEN.encode() in reqs[0].resource_meta} for name, reqs in requests.items()
    }
    per_round = max(args.polls // args.rounds, 1)
    for mode, width in (("one at a time", 1), (f"{args.concurrency} at once", args.concurrency)):
        totals = {server.name: ([], 0.0, 0.0, 0.0) for server in servers}
        for _ in range(args.rounds):
            for server in servers:
                lat, cpu, jobs, wall = await poll(
                    stubs[server.name], requests[server.name], per_round, width, (server.pid, jobs_pid)
                )
                before = totals[server.name]
                totals[server.name] = (before[0] + lat, before[1] + cpu, before[2] + jobs, before[3] + wall)
        for name, (latencies, cpu, jobs, wall) in totals.items():
            latencies.sort()
            out[name][mode] = {
                "service CPU ms/poll": cpu / len(latencies) * 1e3,
                "Jobs API CPU ms/poll": jobs / len(latencies) * 1e3,
                "p50 ms": statistics.median(latencies) * 1e3,
                "p99 ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
                "polls/s": len(latencies) / wall,
            }
    for name, stub in stubs.items():
        for request in requests[name]:
            delete = agent_pb2.DeleteTaskRequest(
                task_type="databricks", task_category=CATEGORY, resource_meta=request.resource_meta
            )
            await stub.DeleteTask(delete, timeout=30)
    for channel in channels.values():
        await channel.close()
    return out


def in_process_poller(side: str, instance: str, run_ids: list[int]) -> tuple[Any, list[Any]]:
    """The agent's own ``get`` and per-run metadata, for the in-process comparison."""
    if side == "flyteagents":
        from flyteagents_databricks import DatabricksAgent, DatabricksRunMeta, DatabricksSettings

        agent = DatabricksAgent(DatabricksSettings(instance=f"https://{instance}"))
        metas: list[Any] = [DatabricksRunMeta(run_id=r, instance=f"https://{instance}") for r in run_ids]
        return (lambda m: agent.get(resource_meta=m)), metas
    from flytekitplugins.spark.connector import DatabricksConnectorV2, DatabricksJobMetadata

    connector = DatabricksConnectorV2()
    metas = [
        DatabricksJobMetadata(databricks_instance=instance, run_id=str(r), auth_token=TOKEN, auth_type="pat")
        for r in run_ids
    ]
    return (lambda m: connector.get(m)), metas


async def in_process(side: str, instance: str, polls: int, concurrency: int) -> dict[str, Any]:
    """Worker: poll ``concurrency`` RUNNING runs with the agent object itself; CPU of this process."""
    from flyteagents_databricks import JobsClient

    client = JobsClient(f"https://{instance}", TOKEN)
    task = {"task_key": "t", "existing_cluster_id": "c", "notebook_task": {"notebook_path": "/bench"}}
    try:
        run_ids = [await client.submit({"run_name": f"bench-{i}", "tasks": [task]}) for i in range(concurrency)]
    finally:
        await client.aclose()
    await asyncio.sleep(0.5)  # until RUNNING: flytekit's connector raises on QUEUED
    poll, metas = in_process_poller(side, instance, run_ids)
    for meta in metas:
        await poll(meta)
    out: dict[str, Any] = {}
    for mode, width in (("one at a time", 1), (f"{concurrency} at once", concurrency)):
        latencies: list[float] = []

        async def timed(meta: Any, latencies: list[float] = latencies) -> None:
            start = time.perf_counter()
            await poll(meta)
            latencies.append(time.perf_counter() - start)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        while len(latencies) < polls:
            await asyncio.gather(*(timed(metas[(len(latencies) + i) % len(metas)]) for i in range(width)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        latencies.sort()
        out[mode] = {
            "agent CPU ms/poll": cpu / len(latencies) * 1e3,
            "p50 ms": statistics.median(latencies) * 1e3,
            "p99 ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
            "polls/s": len(latencies) / wall,
        }
    return out


def print_table(title: str, results: dict[str, Any], modes: list[str], keys: list[str]) -> None:
    fk, fa = results["flytekit"], results["flyteagents"]
    print(title)
    print(f"{'':36}{'flytekit connector':>20}{'flyteagents':>13}{'ratio':>9}")
    for mode in modes:
        for key in keys:
            a, b = fk[mode][key], fa[mode][key]
            ratio = b / a if key == "polls/s" else a / b
            print(f"{mode + ', ' + key:36}{a:>20.2f}{b:>13.2f}{ratio:>8.1f}x")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


async def main() -> bool | None:
    """Run the comparison and return whether its floor held (None for an in-process worker)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=2000, help="GetTask calls per mode")
    parser.add_argument("--rounds", type=int, default=4, help="turns each service takes, interleaved")
    parser.add_argument("--concurrency", type=int, default=20, help="runs, and polls in flight in the second mode")
    parser.add_argument("--in-process", choices=("flyteagents", "flytekit"), help=argparse.SUPPRESS)
    parser.add_argument("--instance", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        print(json.dumps(await in_process(args.in_process, args.instance, args.polls, args.concurrency)))
        return None
    if not _installed("flytekitplugins.spark"):
        sys.exit(
            "this benchmark compares against flytekitplugins-spark, which is not installed: "
            "uv pip install -e 'plugins/databricks[bench]'"
        )

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(Path(tmp))
        env = {
            **os.environ,
            "SSL_CERT_FILE": cert,
            "_FSEC_FLYTE_DATABRICKS_ACCESS_TOKEN": TOKEN,  # flytekit's connector's PAT (a flytekit secret)
            "FLYTEAGENTS_SECRET_TEAM_DATABRICKS_TOKEN": TOKEN,  # the template's token secret, for flyteagents
            "FLYTEAGENTS_LOG_LEVEL": "WARNING",
        }
        jobs = subprocess.Popen(  # noqa: ASYNC220 (start-up, before anything is measured)
            [
                *(sys.executable, str(TESTS / "jobs_server.py"), "--tls-cert", cert, "--tls-key", key),
                *("--token", TOKEN, "--no-execute", "--run-seconds", "inf"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        servers: list[ServiceProcess] = []
        results: dict[str, Any] = {}
        try:
            assert jobs.stdout is not None
            instance = f"127.0.0.1:{int(jobs.stdout.readline().strip().split('=', 1)[1])}"
            tmpl = template(instance)
            fk_port, fa_port = free_port(), free_port()
            servers = [
                ServiceProcess(
                    "flytekit",
                    [str(VENV_BIN / "pyflyte"), "serve", "connector", "--port", str(fk_port), "--prometheus_port", "0"],
                    fk_port,
                    env,
                ),
                ServiceProcess(
                    "flyteagents",
                    serve_command(
                        "--port", str(fa_port), "--metrics-port", "-1", "--log-level", "WARNING", "--workers", "1"
                    ),
                    fa_port,
                    env,
                ),
            ]
            for server in servers:
                server.start()
            results = await measure(servers, jobs.pid, tmpl, args)
            for server in servers:
                server.stop()
            servers = []
            alone: dict[str, Any] = {}
            for side in ("flytekit", "flyteagents"):
                argv = [sys.executable, __file__, "--in-process", side, "--instance", instance]
                argv += ["--polls", str(args.polls), "--concurrency", str(args.concurrency)]
                done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: ASYNC221
                if done.returncode != 0:
                    raise RuntimeError(f"{side} in-process worker failed:\n{done.stderr[-3000:]}")
                alone[side] = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            for server in servers:
                server.stop()
            jobs.terminate()
            jobs.wait(10)

    modes = ["one at a time", f"{args.concurrency} at once"]
    print_table(
        f"GetTask on RUNNING Databricks runs over TLS, {args.polls} polls per mode, through each agent service",
        results,
        modes,
        ["service CPU ms/poll", "Jobs API CPU ms/poll", "p50 ms", "p99 ms", "polls/s"],
    )
    fk_token, fa_token = (
        results["flytekit"]["resource_meta_has_token"],
        results["flyteagents"]["resource_meta_has_token"],
    )
    print(f"token in resource_meta: flytekit {fk_token}, flyteagents {fa_token}")
    print()
    print_table(
        "The agents alone, called in-process (no gRPC service)",
        alone,
        modes,
        ["agent CPU ms/poll", "p50 ms", "p99 ms", "polls/s"],
    )
    print(json.dumps({"service": results, "in_process": alone}))
    held = True
    for mode in modes:
        ratio = results["flytekit"][mode]["service CPU ms/poll"] / results["flyteagents"][mode]["service CPU ms/poll"]
        ok = ratio >= 3
        held &= ok
        verdict = "ok" if ok else "MISSED"
        print(f"flytekit / flyteagents service CPU per poll, {mode}: {ratio:.1f}x (floor 3x: {verdict})")
    return held


if __name__ == "__main__":
    held = asyncio.run(main())
    if held is not None:
        finish(held)
