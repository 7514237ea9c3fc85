"""A long-running agent's Kafka hygiene, against a real Tansu broker: outages, missing and idle topics, log context."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from flyteagents_kafka import KafkaSensor, KafkaSensorConfig
from flyteagents_kafka._cluster import cluster_for
from flyteagents_kafka.testing import create_topic
from flyteidl.core.execution_pb2 import TaskExecution

from flyteagents.sensor import SensorEngine, SensorMetadata
from flyteagents.server._logging import TaskLogFilter, current_task
from flyteagents.testing import template_of

in_session_loop = pytest.mark.asyncio(loop_scope="session")


def sensor_for(servers: str, topic: str, **options: Any) -> KafkaSensor:
    return KafkaSensor(
        name=f"kafka_{uuid.uuid4().hex[:6]}",
        sensor_config=KafkaSensorConfig(bootstrap_servers=servers, topic=topic, **options),
    )


async def start(engine: SensorEngine, sensor: KafkaSensor) -> SensorMetadata:
    return SensorMetadata.decode((await engine.create(template_of(sensor), "/tmp/kafka-out", None)).encode())


@in_session_loop
async def test_a_missing_topic_says_so_while_waiting(tansu: Any) -> None:
    engine = SensorEngine()
    topic = f"ghost-{uuid.uuid4().hex[:8]}"
    meta = await start(engine, sensor_for(tansu.bootstrap_servers, topic))
    resource = await engine.get(meta)
    assert resource.phase == TaskExecution.RUNNING
    assert resource.message == f"waiting: topic {topic} does not exist (yet) on {tansu.bootstrap_servers}"


@in_session_loop
async def test_an_outage_within_the_budget_keeps_running_past_the_error_count(own_tansu: Any) -> None:
    engine = SensorEngine()
    servers = own_tansu.bootstrap_servers
    sensor = sensor_for(servers, await create_topic(servers), request_timeout=0.5, outage_budget=4)
    meta = await start(engine, sensor)
    await asyncio.to_thread(own_tansu.stop)
    loop = asyncio.get_running_loop()
    began = loop.time()
    seen = []
    # More polls than max_consecutive_errors (5): the budget is time, not a count. A poke takes at
    # most request_timeout (0.5 s), so six fit well inside the 4 s budget on a slow machine too.
    while len(seen) < 6:
        seen.append(await engine.get(meta))
    assert {r.phase for r in seen} == {TaskExecution.RUNNING}, [r.message for r in seen]
    assert all("waiting: Kafka unreachable for" in (r.message or "") for r in seen), seen[-1].message
    assert "(outage budget 4 s)" in (seen[-1].message or "")
    await asyncio.sleep(max(0.0, began + 4.2 - loop.time()))
    failed = await engine.get(meta)
    assert failed.phase == TaskExecution.FAILED
    assert f"Kafka at {servers} unreachable for" in (failed.message or "")
    assert "longer than the sensor's outage_budget of 4 s" in (failed.message or "")


@in_session_loop
async def test_an_outage_that_ends_in_time_is_forgotten(own_tansu: Any) -> None:
    engine = SensorEngine()
    servers = own_tansu.bootstrap_servers
    sensor = sensor_for(servers, await create_topic(servers), request_timeout=0.5, outage_budget=60)
    meta = await start(engine, sensor)
    await asyncio.to_thread(own_tansu.stop)
    assert "Kafka unreachable" in ((await engine.get(meta)).message or "")
    await asyncio.to_thread(own_tansu.start)
    for _ in range(40):
        back = await engine.get(meta)
        if "unreachable" not in (back.message or ""):
            break
        await asyncio.sleep(0.1)
    assert back.phase == TaskExecution.RUNNING and "unreachable" not in (back.message or ""), back.message
    assert sensor._outages == {}, "a poke that reached the brokers ends the outage"


@in_session_loop
async def test_idle_topics_are_dropped_from_metadata_requests(own_tansu: Any, caplog: pytest.LogCaptureFixture) -> None:
    engine = SensorEngine()
    servers = own_tansu.bootstrap_servers
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    live = f"live-{uuid.uuid4().hex[:8]}"
    ghost_meta = await start(engine, sensor_for(servers, ghost))
    live_meta = await start(engine, sensor_for(servers, live))
    cluster = await cluster_for(KafkaSensorConfig(bootstrap_servers=servers, topic=live))
    cluster.topic_idle_seconds = 0.4
    assert (await engine.get(ghost_meta)).phase == TaskExecution.RUNNING
    assert {ghost, live} <= cluster.watched_topics()
    await engine.delete(ghost_meta)  # the ghost's sensor ends; the live one keeps poking
    for _ in range(12):
        await asyncio.sleep(0.1)
        await engine.get(live_meta)
    assert ghost not in cluster.watched_topics() and live in cluster.watched_topics()
    caplog.set_level(logging.ERROR, logger="aiokafka")
    caplog.clear()
    client = await cluster.client()
    await client.force_metadata_update()
    assert not [r for r in caplog.records if ghost in r.getMessage()], "the ghost topic is no longer asked about"


@in_session_loop
async def test_background_log_lines_carry_no_callers_task(own_tansu: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The shared client's own tasks (metadata synchronizer, connection readers) log as no task."""
    engine = SensorEngine()
    servers = own_tansu.bootstrap_servers
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.ERROR, logger="aiokafka")
    caplog.handler.addFilter(TaskLogFilter())
    token = current_task.set(b'{"sensor": "first"}')
    try:
        meta = await start(engine, sensor_for(servers, ghost))  # bootstraps the shared client in this context
        await engine.get(meta)
    finally:
        current_task.reset(token)
    caplog.clear()
    token = current_task.set(b'{"sensor": "second"}')
    try:
        client = await (await cluster_for(KafkaSensorConfig(bootstrap_servers=servers, topic=ghost))).client()
        await client.force_metadata_update()  # the synchronizer task sends it
    finally:
        current_task.reset(token)
    lines = [r for r in caplog.records if "not found in cluster metadata" in r.getMessage()]
    assert lines, "the broker was asked about the missing topic"
    assert {r.task for r in lines} == {"-"}, {r.task for r in lines}  # type: ignore[attr-defined]


async def test_cluster_clients_kept_per_loop_are_bounded_whatever_the_templates_ask_for() -> None:
    """Bootstrap servers come from task templates: one cluster client each, but not without end."""
    from flyteagents_kafka._cluster import _CLUSTERS

    for i in range((_CLUSTERS.max_size or 200) + 5):
        await cluster_for(KafkaSensorConfig(bootstrap_servers=f"127.0.0.1:{i + 1}", topic="t"))
    assert _CLUSTERS.max_size is not None and len(_CLUSTERS.clients()) <= _CLUSTERS.max_size


async def test_a_bootstrap_cancelled_by_the_poke_timeout_closes_its_connections() -> None:
    """A broker that accepts and never answers: the poke's timeout cancels the bootstrap, which must not leak."""
    open_connections: set[asyncio.StreamWriter] = set()
    connected = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_connections.add(writer)
        connected.set()
        try:
            while await reader.read(65536):  # read requests, answer none, until the client hangs up
                pass
        finally:
            open_connections.discard(writer)
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cluster = await cluster_for(KafkaSensorConfig(bootstrap_servers=f"127.0.0.1:{port}", topic="t"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await cluster.client()
        assert connected.is_set(), "the bootstrap never reached the silent broker"
        for _ in range(50):  # the close runs shielded from the cancellation; give it a moment
            if not open_connections:
                break
            await asyncio.sleep(0.1)
        assert not open_connections, f"{len(open_connections)} connection(s) left open by a cancelled bootstrap"
    finally:
        server.close()
        await server.wait_closed()
