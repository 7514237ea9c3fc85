"""TimeSensor locally and through the service: it waits on the clock and calls nothing."""

from __future__ import annotations

import asyncio
import datetime
import json
import time

import pytest
import pytest_asyncio
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import task, workflow

from flyteagents import AgentRegistry, InvalidTaskError
from flyteagents.sensor import SensorEngine, TimeSensor, TimeSensorConfig
from flyteagents.testing import AgentServer, create_task_request, get_task_request


def test_delay_after_the_task_started_locally() -> None:
    settle = TimeSensor(name="settle", delay=0.3, poke_interval=0.05)

    @task
    def after(target: str) -> str:
        return target

    @workflow
    def wf() -> str:
        return after(target=settle().target)

    started = time.time()
    target = datetime.datetime.fromisoformat(wf()).timestamp()
    assert time.time() - started >= 0.3
    assert started + 0.3 <= target < started + 1.0


def test_until_a_moment_given_as_datetime_or_iso_string() -> None:
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=0.3)
    started = time.time()
    reached = TimeSensor(name="until", until=soon, poke_interval=0.05)()
    assert time.time() >= soon.timestamp() and time.time() - started < 2
    assert datetime.datetime.fromisoformat(reached) == soon  # a one-output task returns the value itself
    past = TimeSensor(name="past", until="2020-01-01T00:00:00")  # no offset: UTC
    assert past() == "2020-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, "exactly one of until"),
        ({"until": "2020-01-01", "delay": 5}, "exactly one of until"),
        ({"until": "next tuesday"}, "not an ISO 8601 datetime"),
        ({"until": datetime.datetime(2030, 1, 1)}, "timezone-aware"),
        ({"sensor_config": TimeSensorConfig(delay=-1)}, "must not be negative"),
    ],
)
def test_bad_times_are_refused_at_definition(kwargs, error) -> None:
    with pytest.raises((InvalidTaskError, ValueError), match=error):
        TimeSensor(name="bad", **kwargs)


@pytest_asyncio.fixture(loop_scope="session")
async def server():
    registry = AgentRegistry()
    registry.register(SensorEngine())
    async with AgentServer(registry) as server:
        yield server


@pytest.mark.asyncio(loop_scope="session")
async def test_through_the_service_the_target_is_fixed_at_create(server) -> None:
    sensor = TimeSensor(name="rpc_delay", delay=0.5, poke_interval=0.1)
    before = time.time()
    created = await server.async_stub.CreateTask(create_task_request(sensor, "/tmp/time-out", {}))
    meta = json.loads(created.resource_meta)
    assert before + 0.5 <= meta["state"]["target"] <= time.time() + 0.5
    request = get_task_request(created.resource_meta, "sensor")
    first = await server.async_stub.GetTask(request)
    assert first.resource.phase == TaskExecution.RUNNING
    while True:
        response = await server.async_stub.GetTask(request)
        if response.resource.phase != TaskExecution.RUNNING:
            break
        await asyncio.sleep(0.05)
    done_at = time.time()
    assert response.resource.phase == TaskExecution.SUCCEEDED
    assert meta["state"]["target"] <= done_at <= meta["state"]["target"] + 0.1 * 1.1 + 0.3
    target = response.resource.outputs.literals["target"].scalar.primitive.string_value
    assert datetime.datetime.fromisoformat(target).timestamp() == pytest.approx(meta["state"]["target"])
