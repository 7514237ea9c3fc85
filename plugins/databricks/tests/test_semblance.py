"""DatabricksAgent against semblance-databricks, a third-party mock of the Databricks REST API.

semblance-databricks (PyPI, in the plugin's ``test`` extra) serves the Jobs API's
``runs/submit``, ``runs/get``, ``runs/cancel`` and ``runs/get-output`` under /api/2.1 and
/api/2.2, with strict bearer-token auth. Its runs execute nothing: each ``runs/get``
advances them (PENDING -> RUNNING -> TERMINATED), and cancelling a finished run answers
``400 INVALID_STATE: Run is not active``. It runs as its own process on a free port.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from databricks_test_workflows import double
from flyteagents_databricks import DatabricksAgent, DatabricksRunMeta, DatabricksSettings
from flyteagents_databricks._client import DatabricksAPIError
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.models.literals import Literal, LiteralMap, Primitive, Scalar

from flyteagents import AgentRegistry, Resource, testing

TOKEN = "dapi-semblance-0123456789"
SETTINGS = SerializationSettings(ImageConfig(default_image=Image(name="default", fqn="ghcr.io/example/task", tag="7")))
CATEGORY = agent_pb2.TaskCategory(name="databricks", version=0)
# Runs advance on each runs/get (clock "real"); the CLI's default virtual clock never moves.
LAUNCH = textwrap.dedent(
    """\
    import sys

    import uvicorn
    from semblance_databricks.app import DatabricksMock
    from semblance_databricks.config import DatabricksMockConfig, TokenGrant

    mock = DatabricksMock(DatabricksMockConfig(clock="real", auth="strict", tokens=(TokenGrant(sys.argv[2]),)))
    mock.load_bundled_fixture()
    uvicorn.run(mock.as_fastapi(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


class Semblance(testing.ServerProcess):
    name = "semblance-databricks"

    def command(self) -> list[str]:
        return [sys.executable, "-c", LAUNCH, str(self.port), TOKEN]

    @property
    def instance(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="module")
def semblance() -> Iterator[Semblance]:
    with Semblance(startup_timeout=60) as server:
        yield server


@pytest.fixture
def agent(semblance: Semblance, monkeypatch: pytest.MonkeyPatch) -> DatabricksAgent:
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    return DatabricksAgent(DatabricksSettings(instance=semblance.instance, call_timeout=10))


def inputs(x: int) -> LiteralMap:
    return LiteralMap({"x": Literal(scalar=Scalar(primitive=Primitive(integer=x)))})


async def submit(agent: DatabricksAgent, name: str) -> DatabricksRunMeta:
    meta = await agent.create(
        testing.template_of(double, SETTINGS),
        "s3://bucket/out",
        inputs(3),
        testing.execution_metadata(name, project="proj", domain="dev"),
    )
    return DatabricksRunMeta.decode(meta.encode())


async def until_terminal(agent: DatabricksAgent, meta: DatabricksRunMeta) -> list[Resource]:
    seen = []
    for _ in range(10):
        seen.append(await agent.get(resource_meta=meta))
        if seen[-1].phase in (TaskExecution.SUCCEEDED, TaskExecution.FAILED, TaskExecution.ABORTED):
            return seen
    raise AssertionError([r.phase for r in seen])


async def test_a_run_is_submitted_polled_to_success(agent: DatabricksAgent) -> None:
    meta = await submit(agent, "semblance-ok")
    seen = await until_terminal(agent, meta)
    phases = [r.phase for r in seen]
    assert TaskExecution.RUNNING in phases, phases  # each runs/get advances the run before it answers
    assert phases[-1] == TaskExecution.SUCCEEDED
    assert seen[-1].log_links[0].uri.endswith(f"/run/{meta.run_id}")
    await agent.aclose()


async def test_cancel_then_cancel_again_after_it_ended(agent: DatabricksAgent) -> None:
    meta = await submit(agent, "semblance-cancel")
    await agent.delete(resource_meta=meta)
    final = (await until_terminal(agent, meta))[-1]
    assert final.phase == TaskExecution.ABORTED and "CANCELED" in (final.message or "")
    # The run has ended: semblance answers 400 INVALID_STATE "Run is not active", which is no error.
    await agent.delete(resource_meta=meta)
    await agent.aclose()


async def test_an_unknown_run_fails_the_task_and_a_bad_token_is_permanent(
    agent: DatabricksAgent, semblance: Semblance, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = await agent.get(resource_meta=DatabricksRunMeta(run_id=987654, instance=semblance.instance))
    assert missing.phase == TaskExecution.FAILED and "987654" in (missing.message or "")
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", "dapi-wrong")
    with pytest.raises(DatabricksAPIError) as info:
        await submit(agent, "semblance-401")
    assert info.value.status in (401, 403) and not info.value.retryable
    assert "dapi-wrong" not in str(info.value)
    await agent.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_through_the_service(semblance: Semblance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    registry = AgentRegistry()
    registry.register(DatabricksAgent(DatabricksSettings(instance=semblance.instance)))
    request = agent_pb2.CreateTaskRequest(
        template=testing.template_of(double, SETTINGS).to_flyte_idl(),
        output_prefix="s3://bucket/out",
        inputs=inputs(4).to_flyte_idl(),
        task_execution_metadata=testing.execution_metadata("semblance-svc", project="p", domain="d").to_flyte_idl(),
    )
    async with testing.AgentServer(registry) as service:
        created = await service.async_stub.CreateTask(request, timeout=10)
        get = agent_pb2.GetTaskRequest(task_category=CATEGORY, resource_meta=created.resource_meta)
        phases: list[Any] = []
        for _ in range(10):
            phases.append((await service.async_stub.GetTask(get, timeout=10)).resource.phase)
            if phases[-1] == TaskExecution.SUCCEEDED:
                break
        delete = agent_pb2.DeleteTaskRequest(task_category=CATEGORY, resource_meta=created.resource_meta)
        await service.async_stub.DeleteTask(delete, timeout=10)  # after the run ended: OK, not an error
        missing = agent_pb2.GetTaskRequest(
            task_category=CATEGORY, resource_meta=created.resource_meta.replace(b'"run_id":', b'"run_id":9')
        )
        answer = await service.async_stub.GetTask(missing, timeout=10)
    assert phases[-1] == TaskExecution.SUCCEEDED, phases
    assert answer.resource.phase == TaskExecution.FAILED
