"""Running agent tasks locally through the executor mixins."""

from __future__ import annotations

import asyncio
import itertools
import signal
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import kwtypes, task, workflow
from flytekit.core.base_task import PythonTask, TaskMetadata
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.interface import Interface
from flytekit.core.type_engine import TypeEngine
from flytekit.core.utils import write_proto_to_file
from flytekit.exceptions.user import FlyteRecoverableException

from flyteagents import (
    AgentRegistry,
    AgentTimeoutError,
    AsyncAgentBase,
    AsyncAgentExecutorMixin,
    Resource,
    ResourceMeta,
    RetryableTaskFailedError,
    SyncAgentBase,
    SyncAgentExecutorMixin,
    TaskFailedError,
)
from flyteagents._local import poll_intervals


@dataclass
class ScriptMeta(ResourceMeta):
    job_id: str


class ScriptedAgent(AsyncAgentBase):
    """An async agent whose get answers from a script, recording every call."""

    def __init__(self, task_type: str, script: list[Resource | Exception]) -> None:
        super().__init__(task_type_name=task_type, metadata_type=ScriptMeta)
        self.script = script
        self.calls: list[str] = []
        self.deleted: list[str] = []
        self.output_prefix = ""

    async def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kw: Any) -> ScriptMeta:
        self.calls.append("create")
        self.output_prefix = output_prefix
        return ScriptMeta(job_id=uuid.uuid4().hex)

    async def get(self, resource_meta: ScriptMeta, **kw: Any) -> Resource:
        self.calls.append("get")
        step = self.script[min(self.calls.count("get"), len(self.script)) - 1]
        if isinstance(step, Exception):
            raise step
        return step

    def delete(self, resource_meta: ScriptMeta, **kw: Any) -> None:
        self.calls.append("delete")
        self.deleted.append(resource_meta.job_id)


class ScriptedTask(AsyncAgentExecutorMixin, PythonTask):
    def __init__(self, task_type: str, outputs: dict[str, type] | None = None, **kwargs: Any) -> None:
        super().__init__(
            task_type=task_type,
            name=f"scripted_{task_type}",
            task_config=None,
            interface=Interface(inputs=kwtypes(x=int), outputs=outputs or {}),
            **kwargs,
        )


def scripted(script: list[Resource | Exception], **task_kwargs: Any) -> tuple[ScriptedAgent, ScriptedTask]:
    task_type = f"scripted_{uuid.uuid4().hex[:8]}"
    agent = ScriptedAgent(task_type, script)
    AgentRegistry.register(agent)
    return agent, ScriptedTask(task_type, **task_kwargs)


RUNNING = Resource(phase=TaskExecution.RUNNING, message="busy")


def test_example_workflow_returns_outputs_of_every_type(jobs_dir: Path, custom_agent_example: Any) -> None:
    example = custom_agent_example
    count, greeting, squares, summary, report, loud, length = example.wf(n=4, word="abc")
    assert count == 8
    assert greeting == "hello abc"
    assert squares == [0, 1, 4, 9]
    assert summary == example.Summary(n=4, word="abc")
    assert Path(report.download()).read_text() == "abc\n" * 4
    assert (loud, length) == ("HELLO ABC", 9)


def test_an_instant_job_is_polled_once_right_after_create() -> None:
    agent, t = scripted([Resource(phase=TaskExecution.SUCCEEDED, outputs={"y": 7})], outputs={"y": int})
    assert t(x=1) == 7
    assert agent.calls == ["create", "get"]


def test_a_slow_job_is_polled_until_done_and_never_deleted() -> None:
    done = Resource(phase=TaskExecution.SUCCEEDED, outputs={"y": 1})
    agent, t = scripted([RUNNING, RUNNING, RUNNING, done], outputs={"y": int})
    assert t(x=1) == 1
    assert agent.calls == ["create", "get", "get", "get", "get"]
    assert agent.deleted == []


def test_poll_intervals_start_short_and_grow_to_the_cap() -> None:
    waits = list(itertools.islice(poll_intervals(2.0), 30))
    assert waits[0] <= 0.05
    assert all(a <= b for a, b in itertools.pairwise(waits))
    assert max(waits) == 2.0
    assert sum(waits[:5]) < 0.5  # a job done in a fraction of a second is noticed quickly


def test_the_poll_cap_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyteagents._local import _max_poll_interval

    class Capped(AsyncAgentExecutorMixin):
        max_poll_interval = 0.5

    assert _max_poll_interval(Capped()) == 0.5
    monkeypatch.setenv("FLYTEAGENTS_MAX_POLL_INTERVAL", "3")
    assert _max_poll_interval(AsyncAgentExecutorMixin()) == 3.0


def test_failed_phase_raises_with_the_agents_message() -> None:
    agent, t = scripted([Resource(phase=TaskExecution.FAILED, message="table not found: t1")])
    with pytest.raises(TaskFailedError, match="ended FAILED: table not found: t1") as info:
        t(x=1)
    assert not isinstance(info.value, RetryableTaskFailedError)
    assert agent.deleted == []


def test_aborted_phase_raises_task_failed() -> None:
    _, t = scripted([Resource(phase=TaskExecution.ABORTED, message="cancelled by user")])
    with pytest.raises(TaskFailedError, match="ended ABORTED: cancelled by user") as info:
        t(x=1)
    assert info.value.phase == "ABORTED"


def test_retryable_failure_raises_a_distinct_recoverable_error() -> None:
    _, t = scripted([Resource(phase=TaskExecution.RETRYABLE_FAILED, message="quota")])
    with pytest.raises(RetryableTaskFailedError, match="may be retried: quota") as info:
        t(x=1)
    assert isinstance(info.value, FlyteRecoverableException)


def test_an_exception_after_create_deletes_the_job_once() -> None:
    agent, t = scripted([RUNNING, ConnectionError("lost the API")])
    with pytest.raises(ConnectionError, match="lost the API"):
        t(x=1)
    assert agent.calls.count("delete") == 1
    assert agent.calls[-1] == "delete"


def test_a_timeout_deletes_the_job_and_raises(jobs_dir: Path, custom_agent_example: Any) -> None:
    example = custom_agent_example
    slow = example.ReportTask(name="slow_report", duration=60, metadata=TaskMetadata(timeout=timedelta(seconds=1)))
    with pytest.raises(AgentTimeoutError, match="task slow_report timed out after 0:00:01"):
        slow(n=1, word="x")
    deleted = (jobs_dir / "deletions.log").read_text().split()
    assert len(deleted) == 1
    assert (jobs_dir / f"{deleted[0]}.json").exists()


def test_no_sigint_handler_is_left_behind() -> None:
    before = signal.getsignal(signal.SIGINT)
    for _ in range(2):
        _, t = scripted([RUNNING, Resource(phase=TaskExecution.SUCCEEDED)])
        t(x=1)
    assert signal.getsignal(signal.SIGINT) is before


def test_outputs_written_by_the_job_are_read_from_outputs_pb() -> None:
    class Writer(ScriptedAgent):
        async def get(self, resource_meta: ScriptMeta, **kw: Any) -> Resource:
            ctx = FlyteContextManager.current_context()
            lm = TypeEngine.dict_to_literal_map(ctx, {"y": 41, "s": "pb"}, {"y": int, "s": str})
            local = ctx.file_access.get_random_local_path()
            write_proto_to_file(lm.to_flyte_idl(), local)
            ctx.file_access.put_data(local, f"{self.output_prefix}/outputs.pb")
            return Resource(phase=TaskExecution.SUCCEEDED)

    task_type = f"writer_{uuid.uuid4().hex[:8]}"
    AgentRegistry.register(Writer(task_type, []))
    t = ScriptedTask(task_type, outputs={"y": int, "s": str})
    assert t(x=1) == (41, "pb")


def test_missing_outputs_file_is_a_clear_failure() -> None:
    _, t = scripted([Resource(phase=TaskExecution.SUCCEEDED)], outputs={"y": int})
    with pytest.raises(TaskFailedError, match=r"neither returned outputs nor wrote .*outputs\.pb"):
        t(x=1)


def test_progress_is_logged_on_each_change_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    _, t = scripted([RUNNING, RUNNING, Resource(phase=TaskExecution.SUCCEEDED)])
    t(x=1)
    err = capsys.readouterr().err
    assert err.count("RUNNING - busy") == 1
    assert "SUCCEEDED" in err


async def test_a_task_runs_from_inside_a_running_event_loop() -> None:
    _, t = scripted([Resource(phase=TaskExecution.SUCCEEDED, outputs={"y": 3})], outputs={"y": int})
    assert await asyncio.to_thread(lambda: t(x=1)) == 3
    assert t(x=1) == 3  # called on the loop's own thread


class Upper(SyncAgentBase):
    def __init__(self, task_type: str) -> None:
        super().__init__(task_type_name=task_type)
        self.calls = 0

    def do(self, task_template: Any, output_prefix: str, inputs: Any = None, **kw: Any) -> Resource:
        self.calls += 1
        text = inputs.literals["text"].scalar.primitive.string_value
        if not text:
            return Resource(phase=TaskExecution.FAILED, message="empty prompt")
        return Resource(phase=TaskExecution.SUCCEEDED, outputs={"out": text.upper(), "n": [len(text)]})


class UpperTask(SyncAgentExecutorMixin, PythonTask):
    def __init__(self, task_type: str) -> None:
        super().__init__(
            task_type=task_type,
            name=f"upper_{task_type}",
            task_config=None,
            interface=Interface(inputs=kwtypes(text=str), outputs=kwtypes(out=str, n=list[int])),
        )


def test_sync_agent_is_called_once_and_its_outputs_typed() -> None:
    task_type = f"upper_{uuid.uuid4().hex[:8]}"
    agent = Upper(task_type)
    AgentRegistry.register(agent)
    t = UpperTask(task_type)

    @task
    def total(n: list[int]) -> int:
        return sum(n)

    @workflow
    def wf(text: str) -> tuple[str, int]:
        r = t(text=text)
        return r.out, total(n=r.n)

    assert wf(text="abc") == ("ABC", 3)
    assert agent.calls == 1
    with pytest.raises(TaskFailedError, match="ended FAILED: empty prompt"):
        t(text="")


def test_unknown_task_type_fails_before_anything_runs() -> None:
    from flyteagents import AgentNotFoundError

    t = ScriptedTask("never_registered")
    with pytest.raises(AgentNotFoundError, match="no agent for task type 'never_registered'"):
        t(x=1)
