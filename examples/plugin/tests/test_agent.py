"""ExampleJobAgent against a real HTTP jobs API: directly, in a local workflow run, and over gRPC."""

from __future__ import annotations

import pytest
from flyteagents_example import ExampleJobAgent, ExampleJobTask, JobMeta
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import workflow
from jobs_api import JobsAPI

from flyteagents import AgentRegistry, ExternalServiceError, InvalidTaskError
from flyteagents.testing import AgentServer, create_task_request, execution_metadata, template_of


def task_for(api: JobsAPI, command: str = "word count", **kwargs: str) -> ExampleJobTask:
    return ExampleJobTask(name="count", base_url=api.url, command=command, **kwargs)


async def test_a_job_is_submitted_polled_to_done_and_its_result_is_the_output(api: JobsAPI) -> None:
    agent = ExampleJobAgent()
    meta = await agent.create(template_of(task_for(api)), "/tmp/out", None, execution_metadata("e1"))
    assert JobMeta.decode(meta.encode()) == meta and "s3cret" not in meta.encode().decode()
    assert (await agent.get(meta)).phase == TaskExecution.RUNNING
    done = await agent.get(meta)
    assert done.phase == TaskExecution.SUCCEEDED and done.outputs == {"result": len("word count")}
    assert set(api.authorizations) == {"Bearer s3cret-token"}
    await agent.sessions.aclose()


async def test_a_repeated_create_for_the_same_attempt_finds_its_job(api: JobsAPI) -> None:
    agent = ExampleJobAgent()
    template = template_of(task_for(api))
    first = await agent.create(template, "/tmp/out", None, execution_metadata("e2"))
    again = await agent.create(template, "/tmp/out", None, execution_metadata("e2"))
    retry = await agent.create(template, "/tmp/out", None, execution_metadata("e2", attempt=1))
    assert first.job_id == again.job_id != retry.job_id
    assert len(agent.sessions.clients()) == 1, "one session per API and token on this loop"
    await agent.sessions.aclose()


async def test_failed_job_unreachable_api_and_bad_template_are_told_apart(
    api: JobsAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = ExampleJobAgent()
    meta = await agent.create(template_of(task_for(api, "fail")), "/tmp/out", None, None)
    await agent.get(meta)
    failed = await agent.get(meta)
    assert failed.phase == TaskExecution.FAILED and failed.message == "command exited 1"
    api.faults = 1
    with pytest.raises(ExternalServiceError) as busy:
        await agent.get(meta)
    assert busy.value.retryable
    with pytest.raises(InvalidTaskError, match="token_secret"):
        await agent.create(template_of(task_for(api, token_secret="../etc/passwd")), "/tmp/out", None, None)
    monkeypatch.setenv("FLYTEAGENTS_SECRET_EXAMPLE_TOKEN", "rotated")
    with pytest.raises(InvalidTaskError, match="401"):
        await agent.get(meta)
    assert len(agent.sessions.clients()) == 2, "a rotated token gets a session of its own"
    await agent.sessions.aclose()
    unreachable = JobMeta(base_url="http://127.0.0.1:9", job_id="1", token_secret="example-token")
    with pytest.raises(ExternalServiceError) as down:
        await agent.get(unreachable)
    assert down.value.retryable
    await agent.sessions.aclose()


def test_the_entry_point_makes_the_agent_discoverable() -> None:
    registry = AgentRegistry()
    assert registry.discover()["example_job"] == "flyteagents_example:ExampleJobAgent"
    assert isinstance(registry.get_agent("example_job"), ExampleJobAgent)


def test_a_local_workflow_run_uses_the_installed_agent(api: JobsAPI) -> None:
    count = task_for(api, "twelve chars")

    @workflow
    def wf() -> int:
        return count()

    assert wf() == 12
    assert api.jobs["1"]["state"] == "DONE"


async def test_the_service_runs_the_job_as_propeller_calls_it(api: JobsAPI) -> None:
    registry = AgentRegistry()
    registry.register(ExampleJobAgent())
    async with AgentServer(registry) as server:
        created = await server.async_stub.CreateTask(create_task_request(task_for(api), "/tmp/out"))
        category = agent_pb2.TaskCategory(name="example_job", version=0)
        get = agent_pb2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta)
        phases = [(await server.async_stub.GetTask(get)).resource.phase for _ in range(2)]
        assert phases == [TaskExecution.RUNNING, TaskExecution.SUCCEEDED]
        answer = await server.async_stub.GetTask(get)
        assert answer.resource.outputs.literals["result"].scalar.primitive.integer == len("word count")
