"""The ChatGPT sync agent against a fake OpenAI server, through the real openai client."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from flyteagents_openai import ChatGPTAgent, ChatGPTTask, OpenAISettings
from flyteagents_openai._literals import string_literal
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import workflow
from flytekit.models.literals import LiteralMap

from flyteagents import AgentRegistry, InvalidTaskError, RetryableTaskFailedError, TaskFailedError
from flyteagents.testing import template_of

summarize = ChatGPTTask(
    name="summarize",
    chatgpt_config={"model": "gpt-test", "temperature": 0},
    openai_organization="org-flyte",
    system_prompt="be brief",
)
translate = ChatGPTTask(name="translate", chatgpt_config={"model": "gpt-test"})


@workflow
def two_questions(text: str) -> str:
    first = summarize(message=text)
    return translate(message=first)


def message(text: str) -> LiteralMap:
    return LiteralMap({"message": string_literal(text)})


def output(resource) -> str:
    return resource.outputs.literals["o0"].scalar.primitive.string_value


def chat_requests(server: FakeOpenAI) -> list[dict]:
    return [r for r in server.requests if r["path"] == "/chat/completions"]


def test_workflow_of_chatgpt_tasks_runs_locally(chatgpt_agent: ChatGPTAgent, fake_openai: FakeOpenAI) -> None:
    before = len(chat_requests(fake_openai))
    assert two_questions(text="flyte agents") == "echo: (be brief) echo: flyte agents"
    first, second = chat_requests(fake_openai)[before:]
    assert first["json"]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "flyte agents"},
    ]
    assert first["json"]["temperature"] == 0
    assert first["headers"]["openai-organization"] == "org-flyte"
    assert "openai-organization" not in second["headers"]


async def test_flytekit_chatgpt_template_is_served(
    chatgpt_agent: ChatGPTAgent, fake_openai: FakeOpenAI, flytekit_plugin: Callable[[str], Path]
) -> None:
    flytekit_plugin("openai")
    from flytekitplugins.openai import ChatGPTTask as FlytekitChatGPTTask

    task = FlytekitChatGPTTask(name="legacy", chatgpt_config={"model": "gpt-legacy"}, openai_organization="org-x")
    template = template_of(task)
    assert template.type == "chatgpt"
    resource = await chatgpt_agent.do(template, "/tmp/out", message("hello"))
    assert resource.phase == TaskExecution.SUCCEEDED
    assert output(resource) == "echo: hello"
    assert chat_requests(fake_openai)[-1]["json"]["model"] == "gpt-legacy"


async def test_one_client_per_key_and_organization_reused(chatgpt_agent: ChatGPTAgent, fake_openai: FakeOpenAI) -> None:
    template = template_of(summarize)
    before = len(chat_requests(fake_openai))
    for i in range(5):
        resource = await chatgpt_agent.do(template, "/tmp/out", message(f"q{i}"))
        assert output(resource) == f"(be brief) echo: q{i}"
    assert len(chatgpt_agent.clients) == 1
    # The client's connection pool kept one TCP connection for all five calls.
    assert len({r["port"] for r in chat_requests(fake_openai)[before:]}) == 1
    await chatgpt_agent.do(template_of(translate), "/tmp/out", message("other org"))
    assert len(chatgpt_agent.clients) == 2
    await chatgpt_agent.aclose()
    assert len(chatgpt_agent.clients) == 0


@pytest.mark.parametrize(
    ("model", "phase", "status"),
    [
        ("fail-429", TaskExecution.RETRYABLE_FAILED, 429),
        ("fail-500", TaskExecution.RETRYABLE_FAILED, 500),
        ("quota", TaskExecution.FAILED, 429),  # out of credit: retrying will not help
        ("fail-400", TaskExecution.FAILED, 400),
    ],
)
async def test_http_errors_map_to_phases(chatgpt_agent: ChatGPTAgent, model: str, phase: int, status: int) -> None:
    task = ChatGPTTask(name=f"err-{model}", chatgpt_config={"model": model})
    resource = await chatgpt_agent.do(template_of(task), "/tmp/out", message("hi"))
    assert resource.phase == phase
    assert resource.custom_info["status"] == status
    assert f"OpenAI error {status}" in resource.message


def test_rate_limit_is_retryable_in_a_local_run(chatgpt_agent: ChatGPTAgent) -> None:
    task = ChatGPTTask(name="limited", chatgpt_config={"model": "fail-429"})
    with pytest.raises(RetryableTaskFailedError, match="Rate limit reached"):
        task(message="hi")


def test_bad_key_fails_for_good_and_never_logs_the_key(
    chatgpt_agent: ChatGPTAgent,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    bad_key = "sk-wrong-9f8e7d6c5b4a-DO-NOT-LOG"
    monkeypatch.setenv("FLYTE_OPENAI_API_KEY", bad_key)
    caplog.set_level(logging.DEBUG)
    task = ChatGPTTask(name="unauthorized", chatgpt_config={"model": "gpt-test"})
    with pytest.raises(TaskFailedError) as info:
        task(message="hi")
    error = str(info.value)
    assert not isinstance(info.value, RetryableTaskFailedError)
    assert "OpenAI error 401 (invalid_api_key): Incorrect API key provided" in error
    # The server did receive the key and echoed it back in its message...
    last = chat_requests(fake_openai)[-1]
    assert last["headers"]["authorization"] == f"Bearer {bad_key}"
    # ...yet it is nowhere in the error, the log records (every logger, DEBUG up) or the output.
    assert bad_key not in error
    assert {r.name.split(".")[0] for r in caplog.records} >= {"openai", "flyteagents"}
    for record in caplog.records:
        assert bad_key not in record.getMessage(), record.name
        assert bad_key not in repr(record.args), record.name
    out, err = capfd.readouterr()
    assert bad_key not in out
    assert bad_key not in err


async def test_timeout_is_retryable_and_bounded(fake_openai: FakeOpenAI, api_key: str) -> None:
    agent = ChatGPTAgent(OpenAISettings(base_url=fake_openai.base_url, timeout=0.3))
    task = ChatGPTTask(name="slow", chatgpt_config={"model": "slow-2"})
    started = time.monotonic()
    resource = await agent.do(template_of(task), "/tmp/out", message("hi"))
    assert time.monotonic() - started < 1.5
    assert resource.phase == TaskExecution.RETRYABLE_FAILED
    assert "did not answer in time" in resource.message


async def test_unreachable_server_is_retryable(api_key: str) -> None:
    server = FakeOpenAI().start()
    url = server.base_url
    server.stop()  # nothing listens there any more
    agent = ChatGPTAgent(OpenAISettings(base_url=url, timeout=2))
    resource = await agent.do(template_of(translate), "/tmp/out", message("hi"))
    assert resource.phase == TaskExecution.RETRYABLE_FAILED
    assert (
        f"could not reach the OpenAI API at {url.removesuffix('/v1')} (POST /v1/chat/completions)" in resource.message
    )


async def test_key_from_a_mounted_secret_file(
    fake_openai: FakeOpenAI, api_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.delenv("FLYTE_OPENAI_API_KEY")
    secrets = tmp_path / "mounted"
    secrets.mkdir()
    (secrets / "flyte_openai_api_key").write_text(api_key + "\n")
    monkeypatch.setenv("FLYTE_SECRETS_DEFAULT_DIR", str(secrets))
    agent = ChatGPTAgent(OpenAISettings(base_url=fake_openai.base_url))
    resource = await agent.do(template_of(translate), "/tmp/out", message("from file"))
    assert output(resource) == "echo: from file"


async def test_missing_secret_fails_naming_it(fake_openai: FakeOpenAI, api_key: str, monkeypatch) -> None:
    monkeypatch.delenv("FLYTE_OPENAI_API_KEY")
    agent = ChatGPTAgent(OpenAISettings(base_url=fake_openai.base_url))
    resource = await agent.do(template_of(translate), "/tmp/out", message("hi"))
    assert resource.phase == TaskExecution.FAILED
    assert "FLYTE_OPENAI_API_KEY is not set" in resource.message


async def test_bad_templates_and_inputs_are_invalid(chatgpt_agent: ChatGPTAgent) -> None:
    template = template_of(translate)
    with pytest.raises(InvalidTaskError, match="missing input 'message'"):
        await chatgpt_agent.do(template, "/tmp/out", LiteralMap({}))
    template.custom["chatgpt_config"] = {"model": "gpt-test", "stream": True}
    with pytest.raises(InvalidTaskError, match="must not set stream"):
        await chatgpt_agent.do(template, "/tmp/out", message("hi"))
    template.custom["chatgpt_config"] = {"temperature": 1}
    with pytest.raises(InvalidTaskError, match="with a 'model'"):
        await chatgpt_agent.do(template, "/tmp/out", message("hi"))


def test_agents_are_found_through_entry_points() -> None:
    registry = AgentRegistry()
    found = registry.discover()
    assert found["chatgpt"] == "flyteagents_openai._chatgpt:ChatGPTAgent"
    assert found["openai-batch"] == "flyteagents_openai._batch:BatchEndpointAgent"
    assert isinstance(registry.get_agent("chatgpt"), ChatGPTAgent)
    listed = {a.name: a for a in registry.list_agents()}
    assert listed["OpenAI ChatGPT Agent"].is_sync


async def test_clients_kept_per_loop_are_bounded_whatever_the_templates_ask_for() -> None:
    """The organization comes from task templates: one client each, but not without end on the service's loop."""
    from flyteagents_openai._clients import ClientCache

    cache = ClientCache(OpenAISettings(base_url="http://127.0.0.1:9"))
    bound = cache._clients.max_size
    for i in range((bound or 200) + 5):
        await cache.client("sk-test", f"org-{i}")
    assert bound is not None and len(cache) <= bound
    await cache.aclose()
