"""The OpenAI agents through flyteagents' gRPC service, driven the way FlytePropeller drives it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio
from flyteagents_openai import BatchEndpointAgent, BatchEndpointTask, ChatGPTAgent, ChatGPTTask, OpenAISettings
from flyteagents_openai._literals import string_literal
from flyteidl.admin import agent_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.types.file import JSONLFile
from openai_testing import template_of

from flyteagents import AgentRegistry
from flyteagents.testing import AgentServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

ask = ChatGPTTask(name="ask", chatgpt_config={"model": "gpt-test"}, system_prompt="short")
limited = ChatGPTTask(name="limited", chatgpt_config={"model": "fail-429"})
run_batch = BatchEndpointTask(name="run_batch", config={"metadata": {"hold": "true"}})


@pytest_asyncio.fixture(loop_scope="session")
async def served(settings: OpenAISettings) -> AsyncIterator[AgentServer]:
    registry = AgentRegistry()
    registry.register(ChatGPTAgent(settings))
    registry.register(BatchEndpointAgent(settings))
    async with AgentServer(registry) as server:
        yield server


def header(task, prefix: str = "/tmp/out") -> agent_pb2.ExecuteTaskSyncRequest:
    return agent_pb2.ExecuteTaskSyncRequest(
        header=agent_pb2.CreateRequestHeader(template=template_of(task).to_flyte_idl(), output_prefix=prefix)
    )


def inputs(text: str) -> agent_pb2.ExecuteTaskSyncRequest:
    from flytekit.models.literals import LiteralMap

    return agent_pb2.ExecuteTaskSyncRequest(inputs=LiteralMap({"message": string_literal(text)}).to_flyte_idl())


async def execute_sync(server: AgentServer, task, text: str) -> agent_pb2.Resource:
    call = server.sync_stub.ExecuteTaskSync()
    await call.write(header(task))
    await call.write(inputs(text))
    await call.done_writing()
    responses = [response async for response in call]
    assert len(responses) == 1
    return responses[0].header.resource


async def test_execute_task_sync_answers(served: AgentServer) -> None:
    resource = await execute_sync(served, ask, "hello")
    assert resource.phase == TaskExecution.SUCCEEDED
    assert resource.outputs.literals["o0"].scalar.primitive.string_value == "(short) echo: hello"


async def test_rate_limit_is_recoverable(served: AgentServer) -> None:
    resource = await execute_sync(served, limited, "hello")
    assert resource.phase == TaskExecution.RETRYABLE_FAILED
    assert resource.agent_error.kind == agent_pb2.AgentError.RECOVERABLE
    assert "Rate limit reached" in resource.message


async def test_bad_key_is_non_recoverable_and_never_logged(
    served: AgentServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bad_key = "sk-service-wrong-5e4d3c2b1a-DO-NOT-LOG"
    monkeypatch.setenv("FLYTE_OPENAI_API_KEY", bad_key)
    caplog.set_level(logging.DEBUG)
    resource = await execute_sync(served, ask, "hello")
    assert resource.phase == TaskExecution.FAILED
    assert resource.agent_error.kind == agent_pb2.AgentError.NON_RECOVERABLE
    assert "Incorrect API key provided" in resource.message
    assert bad_key not in str(resource)
    assert {r.name.split(".")[0] for r in caplog.records} >= {"openai", "flyteagents"}
    for record in caplog.records:
        assert bad_key not in record.getMessage(), record.name
        assert bad_key not in repr(record.args), record.name


async def test_batch_create_get_delete_aborted(served: AgentServer, tmp_path: Path) -> None:
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine

    path = tmp_path / "in.jsonl"
    path.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}\n')
    ctx = FlyteContextManager.current_context()
    literal_inputs = TypeEngine.dict_to_literal_map(ctx, {"jsonl_in": JSONLFile(str(path))}, {"jsonl_in": JSONLFile})
    created = await served.async_stub.CreateTask(
        agent_pb2.CreateTaskRequest(
            template=template_of(run_batch).to_flyte_idl(),
            output_prefix=str(tmp_path),
            inputs=literal_inputs.to_flyte_idl(),
        )
    )
    category = agent_pb2.TaskCategory(name="openai-batch")
    get = agent_pb2.GetTaskRequest(task_category=category, resource_meta=created.resource_meta)
    assert (await served.async_stub.GetTask(get)).resource.phase == TaskExecution.RUNNING
    await served.async_stub.DeleteTask(
        agent_pb2.DeleteTaskRequest(task_category=category, resource_meta=created.resource_meta)
    )
    phases = [(await served.async_stub.GetTask(get)).resource.phase for _ in range(2)]
    assert phases == [TaskExecution.RUNNING, TaskExecution.ABORTED]


async def test_workflow_of_chatgpt_tasks_runs_through_the_service(
    served: AgentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flytekit import workflow

    @workflow
    def chained(text: str) -> str:
        return ask(message=ask(message=text))

    monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", served.address)
    server_agent = served.registry.get_agent("chatgpt")
    assert isinstance(server_agent, ChatGPTAgent)
    calls_before = _served_calls(served)
    # The local run blocks, so it runs on a thread while this loop serves its calls.
    with ThreadPoolExecutor(1) as pool:
        result = await asyncio.get_running_loop().run_in_executor(pool, lambda: chained(text="hi"))
    assert result == "(short) echo: (short) echo: hi"
    assert _served_calls(served) == calls_before + 2
    assert len(server_agent.clients) >= 1


async def test_batch_workflow_runs_through_the_service(
    served: AgentServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flytekit import task, workflow

    answer = BatchEndpointTask(name="answer")

    @task
    def first_reply(results: JSONLFile) -> str:
        with open(results.download()) as f:
            return json.loads(f.readline())["response"]["body"]["choices"][0]["message"]["content"]

    @workflow
    def batch_then_read(requests: JSONLFile) -> str:
        return first_reply(results=answer(jsonl_in=requests).output_file)

    path = tmp_path / "in.jsonl"
    body = {"model": "m", "messages": [{"role": "user", "content": "via service"}]}
    path.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}))
    monkeypatch.setenv("FLYTEAGENTS_ENDPOINT", served.address)
    before = _served_calls(served, "openai-batch")
    with ThreadPoolExecutor(1) as pool:
        reply = await asyncio.get_running_loop().run_in_executor(
            pool, lambda: batch_then_read(requests=JSONLFile(str(path)))
        )
    assert reply == "echo: via service"
    assert _served_calls(served, "openai-batch") >= before + 4  # create, then get until completed


def _served_calls(server: AgentServer, task_type: str = "chatgpt") -> float:
    """How many calls for ``task_type`` the service has answered, from its own metrics."""
    total = 0.0
    for metric in server.metrics.registry.collect():
        for sample in metric.samples:
            labels = sample.labels
            if sample.name == "flyteagents_requests_total" and labels.get("task_type") == task_type:
                total += sample.value
    return total


async def test_service_shutdown_closes_the_agents_clients(settings: OpenAISettings) -> None:
    from flyteagents.server._app import close_agents

    registry = AgentRegistry()
    agent = ChatGPTAgent(settings)
    registry.register(agent)
    async with AgentServer(registry) as server:
        assert (await execute_sync(server, ask, "x")).phase == TaskExecution.SUCCEEDED
    assert len(agent.clients) == 1
    await close_agents(registry)
    assert len(agent.clients) == 0
