"""@sync_agent: one async def is a sync agent and its task, in a workflow, locally and through the service."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import grpc
import pytest
import pytest_asyncio
from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2
from flytekit import workflow

from flyteagents import AgentRegistry, SyncAgentBase, TaskFailedError, sync_agent
from flyteagents.testing import AgentServer, template_of

CALLS: list[str] = []


@sync_agent(task_type="test_shout")
async def shout(text: str, times: int = 1) -> str:
    CALLS.append(text)
    await asyncio.sleep(0)
    return " ".join([text.upper()] * times)


class Stats(NamedTuple):
    words: int
    longest: str


@sync_agent
async def stats(text: str) -> Stats:
    words = text.split()
    return Stats(words=len(words), longest=max(words, key=len))


@sync_agent(task_type="test_liar")
async def liar(n: int) -> int:
    return "not a number"  # type: ignore[return-value]


@workflow
def wf(text: str) -> tuple[str, int, str]:
    loud = shout(text=text, times=2)
    counted = stats(text=loud)
    return loud, counted.words, counted.longest


@sync_agent(task_type="test_divide")
async def divide(a: int, b: int) -> float:
    return a / b


@workflow
def lying_wf(n: int) -> int:
    return liar(n=n)


@workflow
def divide_wf(a: int, b: int) -> float:
    return divide(a=a, b=b)


@pytest.fixture(autouse=True)
def registered() -> None:
    """The module's agents in the default registry, as importing it left them (other tests may clear it)."""
    for task in (shout, stats, liar, divide):
        AgentRegistry.register(task.agent, override=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server():
    async with AgentServer(AgentRegistry.default(), sync_workers=2) as server:
        yield server


def requests_for(server: AgentServer, task_type: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "flyteagents_requests_total", {"operation": "do", "task_type": task_type, "code": "OK"}
    )
    return value or 0.0


def test_the_decorator_makes_a_registered_sync_agent_and_its_task() -> None:
    agent = AgentRegistry.get_agent("test_shout")
    assert isinstance(agent, SyncAgentBase) and agent.is_sync
    assert agent.name == f"{__name__}.shout (sync agent)"
    assert shout.task_type == "test_shout"
    assert shout.name == f"{__name__}.shout"
    assert list(shout.python_interface.inputs) == ["text", "times"]
    # No task type given: the function's module and name.
    assert stats.task_type == f"{__name__}.stats"
    assert list(stats.python_interface.outputs) == ["words", "longest"]


def test_a_workflow_runs_the_agents_in_process() -> None:
    before = len(CALLS)
    assert wf(text="flyte agents") == ("FLYTE AGENTS FLYTE AGENTS", 4, "AGENTS")
    assert CALLS[before:] == ["flyte agents"]


def test_a_local_run_uses_the_tasks_own_agent() -> None:
    class Impostor(SyncAgentBase):
        name = "Impostor"

        async def do(self, task_template, output_prefix, inputs=None, **kw):  # type: ignore[override]
            raise AssertionError("the registry's agent was called")

    AgentRegistry.register(Impostor(task_type_name="test_shout"), override=True)
    try:
        assert wf(text="own agent") == ("OWN AGENT OWN AGENT", 4, "AGENT")
    finally:
        AgentRegistry.register(shout.agent, override=True)


def test_outputs_that_do_not_fit_fail_the_task_with_a_readable_message() -> None:
    with pytest.raises(TaskFailedError, match=r"returned 'not a number', which does not fit its declared outputs"):
        lying_wf(n=1)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_workflow_runs_the_agents_through_the_service(server, monkeypatch) -> None:
    monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", server.address)
    before = requests_for(server, "test_shout"), requests_for(server, f"{__name__}.stats")
    # The workflow runs its own event loop; the server keeps serving on this one meanwhile.
    result = await asyncio.to_thread(wf, text="over grpc")
    assert result == ("OVER GRPC OVER GRPC", 4, "OVER")
    after = requests_for(server, "test_shout"), requests_for(server, f"{__name__}.stats")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    with pytest.raises(TaskFailedError, match="does not fit its declared outputs"):
        await asyncio.to_thread(lying_wf, n=2)


@pytest.mark.asyncio(loop_scope="session")
async def test_the_service_lists_the_agent_as_sync(server) -> None:
    listed = await server.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest())
    agent = next(a for a in listed.agents if a.name == f"{__name__}.shout (sync agent)")
    assert agent.is_sync
    assert [c.name for c in agent.supported_task_categories] == ["test_shout"]


@pytest.mark.asyncio(loop_scope="session")
async def test_inputs_of_the_wrong_type_are_invalid_argument(server) -> None:
    # As propeller sends it: a header with the template, then the inputs (here an int for a str).
    header = agent_pb2.CreateRequestHeader(template=template_of(shout).to_flyte_idl(), output_prefix="/tmp/out")
    bad = literals_pb2.LiteralMap(
        literals={
            "text": literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=3))),
            "times": literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=1))),
        }
    )

    async def requests():
        yield agent_pb2.ExecuteTaskSyncRequest(header=header)
        yield agent_pb2.ExecuteTaskSyncRequest(inputs=bad)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in server.sync_stub.ExecuteTaskSync(requests()):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # the service checks the inputs against the template's interface before the function sees them
    assert "input 'text' is an integer, but the task declares string" in (info.value.details() or "")


def test_an_exception_in_the_function_fails_the_task_with_its_message() -> None:
    assert divide_wf(a=3, b=2) == 1.5
    with pytest.raises(TaskFailedError, match=r"divide \(sync agent\) raised ZeroDivisionError: division by zero"):
        divide_wf(a=1, b=0)


@pytest.mark.asyncio(loop_scope="session")
async def test_an_exception_in_the_function_fails_the_task_through_the_service(server, monkeypatch) -> None:
    monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", server.address)
    with pytest.raises(TaskFailedError, match="raised ZeroDivisionError: division by zero"):
        await asyncio.to_thread(divide_wf, a=1, b=0)


def test_a_plain_function_is_refused() -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"@sync_agent needs an async def; .*plain is a plain function"):
        sync_agent(plain)


def test_importing_the_module_again_replaces_its_own_agent() -> None:
    async def shout(text: str, times: int = 1) -> str:  # the same module and name, another function object
        return text

    shout.__module__ = __name__
    shout.__qualname__ = "shout"
    again = sync_agent(task_type="test_shout")(shout)
    try:
        assert AgentRegistry.get_agent("test_shout") is again.agent
    finally:
        AgentRegistry.register(globals()["shout"].agent, override=True)
