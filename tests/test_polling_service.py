"""The service calls a sensor's poke and an agent's get on their schedule, whatever the GetTask rate.

Over a real gRPC channel, GetTask sent as FlytePropeller sends it, on the real clock.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution

from flyteagents import AgentRegistry, AsyncAgentBase, BaseSensor, PollPolicy, Resource, ResourceMeta
from flyteagents.sensor import SensorEngine, SensorMetadata
from flyteagents.sensor._engine import sensor_schedule
from flyteagents.testing import AgentServer, create_task_request, get_task_request

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

#: key -> the epoch time of each external call (poke or get)
CALLS: dict[str, list[float]] = {}
#: key -> when the condition starts to hold
READY_AT: dict[str, float] = {}


def external_call(key: str) -> bool:
    now = time.time()
    CALLS.setdefault(key, []).append(now)
    return now >= READY_AT.get(key, math.inf)


class Flips(BaseSensor):
    async def poke(self, key: str) -> bool:
        return external_call(key)


@dataclass
class FlipMeta(ResourceMeta):
    key: str
    started_at: float
    poll_interval: float | None = None


class FlipAgent(AsyncAgentBase):
    name = "Flip"
    poll_policy = PollPolicy(interval=5.0)

    def __init__(self) -> None:
        super().__init__(task_type_name="flip", metadata_type=FlipMeta)

    async def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kwargs: Any) -> FlipMeta:
        return FlipMeta(key=uuid.uuid4().hex, started_at=time.time())

    async def get(self, resource_meta: FlipMeta, **kwargs: Any) -> Resource:  # type: ignore[override]
        done = external_call(resource_meta.key)
        return Resource(phase=TaskExecution.SUCCEEDED if done else TaskExecution.RUNNING, outputs={})

    async def delete(self, resource_meta: FlipMeta, **kwargs: Any) -> None:
        return None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server():
    registry = AgentRegistry()
    registry.register(SensorEngine())
    registry.register(FlipAgent())
    async with AgentServer(registry) as server:
        yield server


async def poll(server: AgentServer, request: agent_pb2.GetTaskRequest, seconds: float, every: float) -> list[Any]:
    """GetTask every ``every`` seconds for ``seconds`` or until a terminal phase: [(time, phase), ...]."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        response = await server.async_stub.GetTask(request, timeout=10)
        seen.append((time.time(), response.resource.phase, response.resource))
        if response.resource.phase != TaskExecution.RUNNING:
            break
        await asyncio.sleep(every)
    return seen


async def create_sensor(server: AgentServer, sensor: BaseSensor, key: str) -> bytes:
    created = await server.async_stub.CreateTask(create_task_request(sensor, "/tmp/poll-out", {"key": key}))
    return bytes(created.resource_meta)


def flip_meta(interval: float | None = None) -> FlipMeta:
    return FlipMeta(key=uuid.uuid4().hex, started_at=time.time(), poll_interval=interval)


async def test_external_calls_at_most_once_per_interval_and_changes_arrive_within_one(server):
    sensor = Flips(name="flips", poke_interval=5)
    waiting, flipping = f"wait-{uuid.uuid4().hex}", f"flip-{uuid.uuid4().hex}"
    wait_meta = await create_sensor(server, sensor, waiting)
    flip_sensor_meta = await create_sensor(server, sensor, flipping)
    agent_wait, agent_flip = flip_meta(), flip_meta()
    t0 = time.time()
    READY_AT[flipping] = READY_AT[agent_flip.key] = t0 + 12
    results = await asyncio.gather(
        poll(server, get_task_request(wait_meta, "sensor"), 20, 0.5),
        poll(server, get_task_request(flip_sensor_meta, "sensor"), 20, 0.5),
        poll(server, get_task_request(agent_wait.encode(), "flip"), 20, 0.5),
        poll(server, get_task_request(agent_flip.encode(), "flip"), 20, 0.5),
    )
    engine, agent = SensorEngine(), FlipAgent()
    schedules = {
        waiting: engine.poll_schedule(SensorMetadata.decode(wait_meta)),
        flipping: engine.poll_schedule(SensorMetadata.decode(flip_sensor_meta)),
        agent_wait.key: agent.poll_schedule(agent_wait, agent_wait.encode()),
        agent_flip.key: agent.poll_schedule(agent_flip, agent_flip.encode()),
    }
    for key in (waiting, flipping, agent_wait.key, agent_flip.key):
        calls = CALLS[key]
        assert calls[0] - t0 < 1.0  # the first GetTask was answered fresh
        assert len(calls) <= 5, (key, [round(c - t0, 2) for c in calls])  # 20 s / 5 s, plus the first
        # one call per slot of the schedule (slots are at least an interval long): never two in one slot
        schedule = schedules[key]
        slots = [schedule.slot(call)[0] for call in calls]
        assert slots == sorted(set(slots)), slots
    for seen in (results[0], results[2]):
        assert len(seen) >= 30  # propeller's rate: about 40 GetTasks in 20 s
        assert {phase for _, phase, _ in seen} == {TaskExecution.RUNNING}
    for seen in (results[1], results[3]):
        done_at, phase, _ = seen[-1]
        assert phase == TaskExecution.SUCCEEDED
        # the condition held from t0 + 12; one interval (with its jitter) and one propeller poll later at most
        assert done_at - (t0 + 12) <= 5.0 * 1.1 + 0.5 + 0.5
    info = dict(results[0][-1][2].custom_info)
    assert 1 <= info["pokes"] <= 5 and info["poke_interval"] == 5.0
    assert {"last_poke_at", "next_poke_at"} <= info.keys()


async def test_backoff_pokes_follow_the_schedule_within_ten_percent_capped(server):
    sensor = Flips(name="backs_off", poke_interval=1.0, backoff=2.0, max_poke_interval=4.0, jitter=0.1)
    key = f"backoff-{uuid.uuid4().hex}"
    meta = await create_sensor(server, sensor, key)
    # 15 s of schedule (1 + 2 + 4 + 4 + 4) and a second to spare for a loaded machine
    await poll(server, get_task_request(meta, "sensor"), 17.5, 0.02)
    schedule = sensor_schedule(SensorMetadata.decode(meta))
    assert schedule is not None
    calls = CALLS[key]
    nominal = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(calls) >= len(nominal) + 1
    for k, (previous, call) in enumerate(itertools.pairwise(calls)):
        expected = nominal[min(k, len(nominal) - 1)]
        # the gap is the schedule's (the interval plus up to 10% jitter), give or take the polling delay
        assert expected * 0.9 <= call - previous <= expected * 1.2, (k, call - previous, expected)
        index, due, _ = schedule.slot(call)
        assert index == k + 1 and call - due <= 0.1 * expected  # poked within 10% of the interval after due


async def test_first_get_is_fresh_and_delete_forgets_the_job(server):
    meta = flip_meta(interval=60.0)
    data = meta.encode()
    request = get_task_request(data, "flip")
    await server.async_stub.GetTask(request)
    await server.async_stub.GetTask(request)
    assert len(CALLS[meta.key]) == 1
    await server.async_stub.DeleteTask(
        agent_pb2.DeleteTaskRequest(task_category=agent_pb2.TaskCategory(name="flip"), resource_meta=data)
    )
    await server.async_stub.GetTask(request)  # a job polled after its delete is asked afresh
    assert len(CALLS[meta.key]) == 2


async def test_terminal_answers_are_not_remembered(server):
    meta = flip_meta(interval=60.0)
    READY_AT[meta.key] = 0
    request = get_task_request(meta.encode(), "flip")
    for _ in range(2):
        response = await server.async_stub.GetTask(request)
        assert response.resource.phase == TaskExecution.SUCCEEDED
    assert len(CALLS[meta.key]) == 2


async def test_every_replica_reports_the_same_next_due_poke(server):
    other = AgentRegistry()
    other.register(SensorEngine())
    sensor = Flips(name="replicas", poke_interval=30, backoff=2.0, max_poke_interval=600)
    key = f"replicas-{uuid.uuid4().hex}"
    meta = await create_sensor(server, sensor, key)
    async with AgentServer(other) as replica:
        answers = [await running.async_stub.GetTask(get_task_request(meta, "sensor")) for running in (server, replica)]
    first, second = (dict(a.resource.custom_info) for a in answers)
    assert first["next_poke_at"] == second["next_poke_at"]
    assert first["pokes"] == second["pokes"] == 1  # each replica's first GetTask of the task pokes
    assert len(CALLS[key]) == 2


async def test_resource_meta_with_an_impossible_schedule_is_invalid_argument(server):
    meta = json.loads(await create_sensor(server, Flips(name="tampered", poke_interval=5), "tampered"))
    meta["jitter"] = 5.0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.async_stub.GetTask(get_task_request(json.dumps(meta).encode(), "sensor"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "jitter must be a fraction" in (info.value.details() or "")


@pytest.mark.parametrize(
    "tampered",
    [
        {"poke_interval": 1e308},  # a schedule whose period overflows a float
        {"poke_interval": 1e-300, "max_poke_interval": 1e300, "backoff": 1e300},
        {"started_at": -1e308},
        {"poke_interval": float("nan")},  # json reads NaN and Infinity
        {"started_at": float("inf")},
    ],
    ids=["huge-interval", "huge-backoff", "huge-start", "nan-interval", "infinite-start"],
)
async def test_resource_meta_with_numbers_no_schedule_can_follow_is_invalid_argument(server, tampered):
    meta = json.loads(await create_sensor(server, Flips(name="tampered", poke_interval=5), f"tampered-{uuid.uuid4()}"))
    meta.update(tampered)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.async_stub.GetTask(get_task_request(json.dumps(meta).encode(), "sensor"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
