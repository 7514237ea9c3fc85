"""Poll schedules and the service's poll memory, on a clock the tests move."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution

from flyteagents import AsyncAgentBase, PollPolicy, Resource, ResourceMeta
from flyteagents._polling import DEADLINE_SLOT, PollSchedule
from flyteagents.sensor._meta import SensorMetadata, sensor_schedule
from flyteagents.server._polls import PollCache

START = 1_800_000_000.0


def due_times(schedule: PollSchedule, until: float, step: float = 0.01) -> list[float]:
    """The due time of every slot up to ``until``, found by walking the clock as a poller would."""
    times, now, last = [], schedule.start if schedule.start is not None else START, None
    while now < until:
        index, due, next_due = schedule.slot(now)
        if index != last:
            times.append(due)
            last = index
        now = max(next_due, now + step) if next_due > now else now + step
    return times


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"interval": -1}, "interval"),
        ({"interval": math.inf}, "interval"),
        ({"interval": 1, "backoff": 0.5}, "backoff"),
        ({"interval": 1, "jitter": 1.5}, "jitter"),
        ({"interval": 10, "max_interval": 5}, "max_interval"),
        ({"interval": 0.001, "backoff": 1.0001, "max_interval": 3600}, "larger backoff"),
    ],
)
def test_bad_policies_are_refused_with_what_is_wrong(kwargs, error):
    with pytest.raises(ValueError, match=error):
        PollPolicy(**kwargs)


def test_backoff_follows_the_schedule_within_the_jitter_and_is_capped():
    policy = PollPolicy(interval=1.0, backoff=2.0, max_interval=8.0, jitter=0.1)
    schedule = policy.schedule("exec/n0/0", start=START)
    assert schedule is not None
    times = due_times(schedule, START + 120)
    assert times[0] == START
    gaps = [b - a for a, b in itertools.pairwise(times)]
    nominal = [min(2.0**k, 8.0) for k in range(len(gaps))]
    for gap, expected in zip(gaps, nominal, strict=True):
        assert expected <= gap <= expected * 1.1 + 1e-9, (gap, expected)
    assert nominal[:5] == [1, 2, 4, 8, 8] and max(gaps) <= 8.8
    assert len(set(round(g, 6) for g in gaps[3:])) > 1  # jittered, not all equal


def test_every_replica_computes_the_same_slots_and_jobs_differ():
    policy = PollPolicy(interval=5.0, backoff=1.5, max_interval=60.0)
    a = policy.schedule("job-a", start=START)
    again = PollPolicy(interval=5.0, backoff=1.5, max_interval=60.0).schedule("job-a", start=START)
    b = policy.schedule("job-b", start=START)
    assert a is not None and again is not None and b is not None
    for now in (START + 1, START + 33.3, START + 7_200.5, START + 9 * 86_400.25):
        assert a.slot(now) == again.slot(now)
    assert due_times(a, START + 600) != due_times(b, START + 600)


def test_slots_days_later_agree_with_walking_there():
    schedule = PollPolicy(interval=0.5, jitter=0.3).schedule("long", start=START)
    assert schedule is not None
    walked = due_times(schedule, START + 400, step=0.05)
    for k, due in enumerate(walked):
        index, at, _ = schedule.slot(due + 1e-6)
        assert (index, at) == (k, pytest.approx(due))
    later = START + 5 * 86_400 + 0.123
    index, due, next_due = schedule.slot(later)
    assert due <= later < next_due
    assert 0.5 <= next_due - due <= 0.5 * 1.3 + 1e-9
    assert schedule.slot(due - 1e-6)[0] == index - 1


def test_without_a_start_the_interval_is_steady_and_its_phase_is_shared():
    policy = PollPolicy(interval=60.0, backoff=2.0, jitter=0.0)
    schedule = policy.schedule("no-start")
    other = policy.schedule("other-job")
    assert schedule is not None and other is not None
    times = due_times(schedule, START + 600, step=1.0)
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([60.0] * (len(times) - 1))
    assert times[0] % 60 != pytest.approx(due_times(other, START + 120, step=1.0)[0] % 60)


def test_deadline_makes_a_call_due_and_bounds_the_next_due_time():
    schedule = PollPolicy(interval=10.0, jitter=0.0).schedule("d", start=START, deadline=START + 15)
    assert schedule is not None
    assert schedule.slot(START + 11) == (1, START + 10, START + 15)
    assert schedule.slot(START + 15) == (DEADLINE_SLOT, START + 15, START + 15)
    assert PollPolicy(interval=0).schedule("x") is None


@dataclass
class JobMeta(ResourceMeta):
    job_id: str
    started_at: float | None = None
    poll_interval: float | None = None


class Polled(AsyncAgentBase):
    poll_policy = PollPolicy(interval=10.0, jitter=0.0)

    def __init__(self) -> None:
        super().__init__(task_type_name="polled", metadata_type=JobMeta)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def response(phase: int = TaskExecution.RUNNING, message: str = "") -> agent_pb2.GetTaskResponse:
    return agent_pb2.GetTaskResponse(resource=agent_pb2.Resource(phase=phase, message=message))


def test_cache_calls_once_per_slot_and_answers_with_the_last_response():
    clock, agent = Clock(), Polled()
    cache = PollCache(clock=clock)
    meta = JobMeta(job_id="1", started_at=START)
    data = meta.encode()
    claim, answer = cache.check(agent, meta, data)
    assert answer is None and claim is not None  # the first GetTask always calls
    cache.keep(claim, response(message="first"))
    clock.now = START + 9.9
    claim, answer = cache.check(agent, meta, data)
    assert claim is None and answer is not None and answer.resource.message == "first"
    clock.now = START + 10.0
    claim, answer = cache.check(agent, meta, data)
    assert answer is None and claim is not None
    # a second GetTask while that call runs gets the previous answer, not a second call
    _, concurrent = cache.check(agent, meta, data)
    assert concurrent is not None and concurrent.resource.message == "first"
    cache.keep(claim, response(message="second"))
    assert cache.check(agent, meta, data)[1].resource.message == "second"  # type: ignore[union-attr]
    assert (cache.calls, cache.hits) == (2, 3)


def test_a_tasks_own_interval_overrides_the_agents():
    clock, agent = Clock(), Polled()
    cache = PollCache(clock=clock)
    meta = JobMeta(job_id="2", started_at=START, poll_interval=2.0)
    claim, _ = cache.check(agent, meta, meta.encode())
    assert claim is not None
    cache.keep(claim, response())
    clock.now = START + 2.0
    assert cache.check(agent, meta, meta.encode())[1] is None
    off = JobMeta(job_id="3", started_at=START, poll_interval=0.0)
    assert cache.check(agent, off, off.encode()) == (None, None)  # 0: every GetTask calls
    assert len(cache) == 1


def test_entries_end_with_the_job_with_deletion_and_at_the_caps():
    clock, agent = Clock(), Polled()
    cache = PollCache(clock=clock, max_entries=3, max_entry_bytes=2_000)
    metas = [JobMeta(job_id=str(i), started_at=START) for i in range(5)]
    for meta in metas:
        claim, _ = cache.check(agent, meta, meta.encode())
        assert claim is not None
        cache.keep(claim, response())
    assert len(cache) == 3  # the two least recently polled went first
    assert cache.check(agent, metas[0], metas[0].encode())[1] is None
    finished = metas[4]
    claim, answer = cache.check(agent, finished, finished.encode())
    assert answer is not None  # still in its slot
    clock.now += 10
    claim, _ = cache.check(agent, finished, finished.encode())
    assert claim is not None
    cache.keep(claim, response(TaskExecution.SUCCEEDED))
    assert cache.check(agent, finished, finished.encode())[1] is None  # a finished job is not remembered
    size = cache.size
    cache.forget(agent, metas[3].encode())
    assert cache.size < size and len(cache) == 2
    claim, _ = cache.check(agent, metas[1], metas[1].encode())
    assert claim is not None
    cache.keep(claim, response(message="x" * 5_000))  # over max_entry_bytes: not kept
    assert cache.check(agent, metas[1], metas[1].encode())[1] is None
    byte_capped = PollCache(clock=clock, max_bytes=1_000)
    for meta in metas:
        claim, _ = byte_capped.check(agent, meta, meta.encode())
        byte_capped.keep(claim, response(message="y" * 300))  # type: ignore[arg-type]
    assert byte_capped.size <= 1_000 and len(byte_capped) < len(metas)


def test_agents_without_a_policy_have_no_schedule():
    class Plain(AsyncAgentBase):
        def __init__(self) -> None:
            super().__init__(task_type_name="plain", metadata_type=JobMeta)

        async def get(self, resource_meta: ResourceMeta, **kwargs) -> Resource:
            return Resource(phase=TaskExecution.RUNNING)

    assert Plain().poll_schedule(JobMeta(job_id="x")) is None


def test_resource_meta_from_before_started_at_keeps_its_schedule():
    meta = SensorMetadata(
        sensor_module="m", sensor_name="n", sensor_id="s", poke_interval=10.0, deadline=1_000_100.0, timeout=100.0
    )
    schedule = sensor_schedule(meta)
    assert schedule is not None and schedule.start == 1_000_000.0 and schedule.deadline == 1_000_100.0
    assert sensor_schedule(SensorMetadata(sensor_module="m", sensor_name="n", poke_interval=None)) is None
