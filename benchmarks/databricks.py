"""GetTask polls of Databricks runs: flyteagents' DatabricksAgent next to flytekit's Databricks connector.

    uv pip install -e 'plugins/databricks[bench]'     # flytekitplugins-spark, the anchor
    python benchmarks/databricks.py [--runs 20] [--polls 400] [--concurrency 20]

Both poll the same runs on the same local Jobs API 2.1 server (plugins/databricks/tests/
jobs_server.py, in its own process), served over TLS with a fresh self-signed certificate
trusted through ``SSL_CERT_FILE``, because flytekit's connector only speaks https. Each side
runs in its own process; per poll it reports the agent process's CPU time and the latency
p50/p99, polling one run at a time and ``--concurrency`` runs at once (a FlytePropeller resync).
The Jobs API server's own CPU per poll is shown too. The figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "plugins" / "databricks" / "tests" / "jobs_server.py"
TOKEN = "dapi-bench-token"


def make_cert(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def submit_runs(port: int, n: int) -> list[int]:
    from flyteagents_databricks import JobsClient

    client = JobsClient(f"https://127.0.0.1:{port}", TOKEN)
    task = {"task_key": "t", "existing_cluster_id": "c", "notebook_task": {"notebook_path": "/bench"}}
    try:
        ids = [await client.submit({"run_name": f"bench-{i}", "tasks": [task]}) for i in range(n)]
    finally:
        await client.aclose()
    # Let the runs reach RUNNING: flytekit's connector raises on QUEUED (convert_to_flyte_phase).
    await asyncio.sleep(0.5)
    return ids


def poller(side: str, port: int, run_ids: list[int]) -> tuple[Any, list[Any]]:
    """The poll function and the per-run metadata for one side."""
    if side == "flyteagents":
        from flyteagents_databricks import DatabricksAgent, DatabricksRunMeta, DatabricksSettings

        agent = DatabricksAgent(DatabricksSettings(instance=f"https://127.0.0.1:{port}"))
        metas: list[Any] = [DatabricksRunMeta(run_id=r, instance=f"https://127.0.0.1:{port}") for r in run_ids]
        return (lambda m: agent.get(resource_meta=m)), metas
    from flytekitplugins.spark.connector import DatabricksConnectorV2, DatabricksJobMetadata

    connector = DatabricksConnectorV2()
    metas = [
        DatabricksJobMetadata(databricks_instance=f"127.0.0.1:{port}", run_id=str(r), auth_token=TOKEN, auth_type="pat")
        for r in run_ids
    ]
    return (lambda m: connector.get(m)), metas


async def measure(side: str, port: int, runs: int, polls: int, concurrency: int) -> dict[str, Any]:
    run_ids = await submit_runs(port, runs)
    poll, metas = poller(side, port, run_ids)
    phases = {(await poll(m)).phase for m in metas}  # warm-up, and both sides must see the same runs
    out: dict[str, Any] = {"phases": sorted(phases)}

    async def timed(meta: Any, latencies: list[float]) -> None:
        start = time.perf_counter()
        await poll(meta)
        latencies.append(time.perf_counter() - start)

    for mode, width in (("sequential", 1), ("concurrent", concurrency)):
        latencies: list[float] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        done = 0
        while done < polls:
            batch = [metas[(done + i) % len(metas)] for i in range(min(width, polls - done))]
            await asyncio.gather(*(timed(m, latencies) for m in batch))
            done += len(batch)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        latencies.sort()
        out[mode] = {
            "cpu_ms_per_poll": 1000 * cpu / polls,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "polls_per_s": polls / wall,
        }
    return out


def worker(args: argparse.Namespace) -> None:
    result = asyncio.run(measure(args.side, args.port, args.runs, args.polls, args.concurrency))
    print(json.dumps(result))


def run_side(side: str, port: int, server_pid: int, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--side", side, "--port", str(port)]
    cmd += ["--runs", str(args.runs), "--polls", str(args.polls), "--concurrency", str(args.concurrency)]
    before = proc_cpu(server_pid)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    server_cpu = proc_cpu(server_pid) - before
    if done.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # Two modes of `polls` each, plus the warm-up poll per run.
    result["server_cpu_ms_per_poll"] = 1000 * server_cpu / (2 * args.polls + args.runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--polls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--side", choices=("flyteagents", "flytekit"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return worker(args)

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(Path(tmp))
        server = subprocess.Popen(
            [
                *(sys.executable, str(SERVER), "--tls-cert", cert, "--tls-key", key, "--token", TOKEN),
                *("--no-execute", "--run-seconds", "inf"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline().strip().split("=", 1)[1])
            env = {**os.environ, "SSL_CERT_FILE": cert, "FLYTEAGENTS_SECRET_DATABRICKS_TOKEN": TOKEN}
            results = {side: run_side(side, port, server.pid, args, env) for side in ("flytekit", "flyteagents")}
        finally:
            server.terminate()
            server.wait(10)

    print(f"GetTask polls on {args.runs} RUNNING Databricks runs over TLS, {args.polls} polls per mode")
    print(f"{'':24}{'flytekit connector':>20}{'flyteagents':>14}{'ratio':>9}")
    rows = [
        ("sequential", "cpu_ms_per_poll", "agent CPU ms/poll"),
        ("sequential", "p50_ms", "p50 ms"),
        ("sequential", "p99_ms", "p99 ms"),
        ("concurrent", "cpu_ms_per_poll", f"agent CPU ms/poll x{args.concurrency}"),
        ("concurrent", "p50_ms", f"p50 ms x{args.concurrency}"),
        ("concurrent", "p99_ms", f"p99 ms x{args.concurrency}"),
        ("concurrent", "polls_per_s", f"polls/s x{args.concurrency}"),
    ]
    fk, fa = results["flytekit"], results["flyteagents"]
    for mode, key, label in rows:
        a, b = fk[mode][key], fa[mode][key]
        ratio = a / b if key != "polls_per_s" else b / a
        print(f"{label:24}{a:>20.2f}{b:>14.2f}{ratio:>8.1f}x")
    a, b = fk["server_cpu_ms_per_poll"], fa["server_cpu_ms_per_poll"]
    print(f"{'Jobs API server CPU ms/poll':24}{a:>17.2f}{b:>14.2f}{a / b:>8.1f}x")
    print(f"phases seen: flytekit {fk['phases']}, flyteagents {fa['phases']}")


if __name__ == "__main__":
    main()
