"""GetTask polls of a running BigQuery job: flyteagents' service vs flytekit's BigQuery connector.

    .venv/bin/python benchmarks/bigquery_agent.py [--polls N] [--concurrency C]

Starts the local BigQuery server (plugins/bigquery/tests/bq_emulator.py) in this
process, then each agent service in its own process against it: ``flyteagents serve``
with flyteagents-bigquery, and ``pyflyte serve connector`` with flytekitplugins-bigquery
(installed beside the venv on first use, see tests/flytekit_plugins.py).
Both get the same task template (made by flytekitplugins-bigquery's BigQueryTask), the
same Application Default Credentials (a service-account key whose token_uri is the local
server) and the same environment. One CreateTask each, then N GetTask calls each on a job
that stays RUNNING, over a real gRPC channel with the flyteidl stubs, as FlytePropeller
polls. Reports the server process's own CPU per poll (from /proc, so the load generator
does not count) and p50/p99 latency, side by side. Floor: flyteagents at least 3x less
CPU per poll.

Both server processes get a sitecustomize that turns off google-auth's background
"regional access boundary" lookup at iamcredentials.googleapis.com, which a
googleapis.com service-account key otherwise triggers and which cannot reach the
network here; it helps flytekit's connector most (it builds new credentials per poll).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import grpc
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flyteidl.service import agent_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins" / "bigquery" / "tests"))
sys.path.append(str(ROOT / "tests"))

from _common import VENV_BIN, ServiceProcess, closed_loop, cpu_seconds, finish, free_port, serve_command  # noqa: E402
from bq_emulator import BigQueryEmulator  # noqa: E402
from flytekit_plugins import activate, pythonpath  # noqa: E402

PROJECT = "bench-project"
TASK_TYPE = "bigquery_query_job_task"
CATEGORY = agent_pb2.TaskCategory(name=TASK_TYPE, version=0)
SITECUSTOMIZE = """
import google.auth.credentials as _c
# No Google host is reachable from here: skip google-auth's background IAM boundary lookup.
_c.CredentialsWithRegionalAccessBoundary._is_regional_access_boundary_lookup_required = lambda self: False
"""


def template_proto() -> bytes:
    """A task template made by flytekitplugins-bigquery, serialised as propeller sends it."""
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    activate("bigquery")
    from flytekitplugins.bigquery import BigQueryConfig, BigQueryTask

    task = BigQueryTask(
        name="bench_query",
        query_template="SELECT city, count(*) AS n FROM demo.trips GROUP BY city",
        task_config=BigQueryConfig(ProjectID=PROJECT, Location="US"),
        output_structured_dataset_type=None,
    )
    settings = SerializationSettings(ImageConfig.auto_default_image(), project="p", domain="development")
    return get_serializable(OrderedDict(), settings, task).template.to_flyte_idl().SerializeToString()


async def measure(server: ServiceProcess, template: bytes, polls: int, concurrency: int) -> dict[str, float]:
    from flyteidl.core import tasks_pb2

    tmpl = tasks_pb2.TaskTemplate()
    tmpl.ParseFromString(template)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        created = await stub.CreateTask(
            agent_pb2.CreateTaskRequest(template=tmpl, output_prefix="/tmp/bench-out"), timeout=60
        )
        request = agent_pb2.GetTaskRequest(
            task_type=TASK_TYPE, task_category=CATEGORY, resource_meta=created.resource_meta
        )
        first = await stub.GetTask(request, timeout=30)  # warm-up: clients, tokens, imports
        assert first.resource.phase in (TaskExecution.QUEUED, TaskExecution.RUNNING), first

        async def poll() -> None:
            response = await stub.GetTask(request, timeout=30)
            assert response.resource.phase == TaskExecution.RUNNING, response.resource

        cpu0, wall0 = cpu_seconds(server.pid), time.perf_counter()
        latencies = await closed_loop(poll, polls, concurrency)
        cpu1, wall1 = cpu_seconds(server.pid), time.perf_counter()
    latencies.sort()
    return {
        "cpu_us_per_poll": (cpu1 - cpu0) / polls * 1e6,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        "polls_per_s": polls / (wall1 - wall0),
    }


async def main() -> bool:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()

    bq = BigQueryEmulator(pending_polls=0, running_polls=10**9).start()
    bq.sql(
        "CREATE SCHEMA demo; CREATE TABLE demo.trips AS SELECT range AS id, 'c' || (range % 3) AS city FROM range(9)"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-bq-"))
    key = work / "key.json"
    key.write_text(json.dumps(bq.service_account_info(PROJECT, universe_domain=None)))
    (work / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(
        os.environ,
        BIGQUERY_EMULATOR_HOST=bq.url,
        GOOGLE_APPLICATION_CREDENTIALS=str(key),
        PYTHONPATH=os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")]),
    )
    fa_port, fk_port = free_port(), free_port()
    servers = [
        ServiceProcess(
            "flyteagents",
            serve_command("--port", str(fa_port), "--metrics-port", "0", "--workers", "1"),
            fa_port,
            env,
        ),
        ServiceProcess(
            "flytekit",
            [str(VENV_BIN / "pyflyte"), "serve", "connector", "--port", str(fk_port), "--prometheus_port", "0"],
            fk_port,
            dict(env, PYTHONPATH=os.pathsep.join([pythonpath("bigquery"), env["PYTHONPATH"]])),
        ),
    ]
    template = template_proto()
    results = {}
    try:
        for server in servers:
            server.start()
        for server in servers:
            results[server.name] = await measure(server, template, args.polls, args.concurrency)
    finally:
        for server in servers:
            server.stop()
        bq.stop()

    print(f"GetTask on a RUNNING BigQuery job: {args.polls} polls, concurrency {args.concurrency}")
    print(f"{'':14}{'CPU us/poll':>12}{'p50 ms':>10}{'p99 ms':>10}{'polls/s':>10}")
    for name, r in results.items():
        print(f"{name:14}{r['cpu_us_per_poll']:12.0f}{r['p50_ms']:10.2f}{r['p99_ms']:10.2f}{r['polls_per_s']:10.0f}")
    ratio = results["flytekit"]["cpu_us_per_poll"] / results["flyteagents"]["cpu_us_per_poll"]
    held = ratio >= 3
    print(f"flytekit / flyteagents CPU per poll: {ratio:.1f}x (floor 3x: {'ok' if held else 'MISSED'})")
    return held


if __name__ == "__main__":
    finish(asyncio.run(main()))
