"""OpenAI-compatible servers we did not write: FastAPI-style errors, wrong base URLs, and fakellm (third party).

fakellm (PyPI ``fakellm``, in the plugin's ``test`` extra) is a maintained OpenAI-compatible
mock server built on FastAPI; it is started as a subprocess on a free loopback port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from doc_commands import ROOT, Command, commands
from fake_openai import FakeOpenAI
from flyteagents_openai import BatchEndpointAgent, BatchEndpointTask, ChatGPTAgent, ChatGPTTask, OpenAISettings
from flyteagents_openai._literals import string_literal
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import workflow
from flytekit.models.literals import LiteralMap
from network_fixtures import ConnectProxy, private_ca

from flyteagents import AgentRegistry, InvalidTaskError
from flyteagents.testing import ServerProcess, execution_metadata, template_of

DOCS = "docs/plugins/openai.md"
FAKELLM_RULES = textwrap.dedent(
    """\
    version: 1
    defaults:
      fallback: deterministic_echo
    rules:
      - name: outline
        when:
          messages_contain: "one short sentence"
        respond:
          content: "Agents run Flyte tasks without pods."
      - name: title
        when:
          messages_contain: "without pods"
        respond:
          content: "Podless Flyte"
      - name: rate_limited
        when:
          model_matches: "busy-*"
        respond:
          status: 429
          error: "Rate limit exceeded (mock)"
      - name: broken
        when:
          model_matches: "broken-*"
        respond:
          status: 503
          error: "upstream model crashed"
      - name: refused
        when:
          model_matches: "forbidden-*"
        respond:
          status: 403
          error: "model not allowed for this key"
    """
)


class FakeLLM(ServerProcess):
    """fakellm's server (uvicorn) with our rules, on a free loopback port."""

    name = "fakellm"

    def __init__(self, config: Path) -> None:
        super().__init__(startup_timeout=60)
        self.config = config

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "fakellm"
        return [str(script), "serve", "--host", self.host, "--port", str(self.port), "--config", str(self.config)]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


@pytest.fixture(scope="module")
def fakellm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeLLM]:
    config = tmp_path_factory.mktemp("fakellm") / "fakellm.yaml"
    config.write_text(FAKELLM_RULES)
    with FakeLLM(config) as server:
        yield server


@pytest.fixture(scope="module")
def fastapi_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=("sk-good",), fastapi=True) as server:
        yield server


def message(text: str) -> LiteralMap:
    return LiteralMap({"message": string_literal(text)})


outline = ChatGPTTask(
    name="outline_other",
    chatgpt_config={"model": "gpt-4o-mini", "temperature": 0},
    system_prompt="Explain the topic in one short sentence.",
)
shout = ChatGPTTask(name="shout_other", chatgpt_config={"model": "gpt-4o-mini"})


@workflow
def chain(topic: str) -> str:
    return shout(message=outline(message=topic))


# -- errors whose text is in `detail` (FastAPI servers such as llama-cpp-python) -------------


async def test_a_detail_error_keeps_its_text_and_drops_the_key(fastapi_fake: FakeOpenAI, api_key: str) -> None:
    agent = ChatGPTAgent(OpenAISettings(base_url=fastapi_fake.base_url, timeout=5))
    resource = await agent.do(template_of(shout), "/tmp/out", message("hi"))  # api_key is not one it accepts
    assert resource.phase == TaskExecution.FAILED
    assert resource.message.startswith("OpenAI error 401: Incorrect API key provided: <redacted>"), resource.message
    assert api_key not in resource.message


async def test_a_base_url_without_v1_names_the_call_and_the_fix(
    fastapi_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_OPENAI_API_KEY", "sk-good")
    origin = fastapi_fake.base_url.removesuffix("/v1")
    agent = ChatGPTAgent(OpenAISettings(base_url=origin, timeout=5))
    resource = await agent.do(template_of(shout), "/tmp/out", message("hi"))
    assert resource.phase == TaskExecution.FAILED
    assert "OpenAI error 404: Not Found" in resource.message
    assert f"POST /chat/completions not found at {origin}" in resource.message
    assert "end in /v1" in resource.message


# -- fakellm, a third-party OpenAI-compatible mock ------------------------------------------


def test_chatgpt_answers_reach_the_next_task_on_fakellm(
    fakellm: FakeLLM, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    AgentRegistry.register(ChatGPTAgent(OpenAISettings(base_url=fakellm.base_url, timeout=5)), override=True)
    # fakellm answers the second request "Podless Flyte" only if it holds the first answer's text.
    assert chain(topic="flyte agents") == "Podless Flyte"


async def test_fakellm_answers_and_errors_map_to_phases(fakellm: FakeLLM, api_key: str) -> None:
    agent = ChatGPTAgent(OpenAISettings(base_url=fakellm.base_url, timeout=5))
    ok = await agent.do(template_of(outline), "/tmp/out", message("flyte"))
    assert ok.phase == TaskExecution.SUCCEEDED
    assert ok.outputs.literals["o0"].scalar.primitive.string_value == "Agents run Flyte tasks without pods."
    cases = {
        "busy-1": (TaskExecution.RETRYABLE_FAILED, "OpenAI error 429 (mock_error): Rate limit exceeded (mock)"),
        "broken-1": (TaskExecution.RETRYABLE_FAILED, "OpenAI error 503 (mock_error): upstream model crashed"),
        "forbidden-1": (TaskExecution.FAILED, "OpenAI error 403 (mock_error): model not allowed for this key"),
    }
    for model, (phase, text) in cases.items():
        task = ChatGPTTask(name=f"model_{model.replace('-', '_')}", chatgpt_config={"model": model})
        resource = await agent.do(template_of(task), "/tmp/out", message("hi"))
        assert (resource.phase, resource.message) == (phase, text), model


async def test_a_server_without_the_batch_api_says_so(fakellm: FakeLLM, api_key: str, tmp_path: Path) -> None:
    agent = BatchEndpointAgent(OpenAISettings(base_url=fakellm.base_url, timeout=5))
    requests = tmp_path / "in.jsonl"
    requests.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n')
    task = BatchEndpointTask(name="batch_on_fakellm", config={})
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine
    from flytekit.types.file import JSONLFile

    ctx = FlyteContextManager.current_context()
    inputs = TypeEngine.dict_to_literal_map(ctx, {"jsonl_in": JSONLFile(str(requests))}, task.python_interface.inputs)
    try:
        # Not retryable: the service answers INVALID_ARGUMENT with this text.
        with pytest.raises(InvalidTaskError) as info:
            await agent.create(template_of(task), str(tmp_path / "out"), inputs, execution_metadata("batch-404"))
    finally:
        await agent.aclose()
    text = str(info.value)
    assert f"/v1/batches not found at {fakellm.base_url.removesuffix('/v1')}" in text, text
    assert "does the server serve this API?" in text


# -- the example, pointed at a server of one's own -------------------------------------------


def run_documented(command: Command) -> subprocess.CompletedProcess[str]:
    """Run a command from docs/plugins/openai.md from the repository's root, with only its own settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "FLYTE_OPENAI", "FLYTEAGENTS_OPENAI")) and not k.lower().endswith("_proxy")
    }
    env.pop("SSL_CERT_FILE", None)
    env.update(command.env)
    assert command.argv[0] == "python"
    argv = [sys.executable, *command.argv[1:]]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_example_against_a_server_named_by_openai_base_url() -> None:
    """The docs' command for one's own endpoint, as written: OPENAI_BASE_URL and the key."""
    with FakeOpenAI(api_keys=("sk-local",)) as server:
        (command,) = commands(DOCS, "OPENAI_BASE_URL=http://", {"http://127.0.0.1:8080/v1": server.base_url})
        done = run_documented(command)
        paths = [r["path"] for r in server.requests]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "summary='(Explain the topic in one short sentence.) echo: flyte agents'" in done.stdout
    assert paths.count("/chat/completions") == 2 and "/batches" in paths, "this server, not one the example started"


@pytest.mark.slow
def test_example_through_a_proxy_to_a_server_behind_a_private_ca(tmp_path: Path) -> None:
    """The docs' HTTPS_PROXY command, as written: every call tunnelled by the proxy, the private CA trusted."""
    ca = private_ca(tmp_path)
    with FakeOpenAI(api_keys=("sk-local",), tls=ca.issue("llm", "llm.internal.example")) as server:
        port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
        with ConnectProxy({"llm.internal.example:443": ("127.0.0.1", port)}) as proxy:
            replace = {"http://proxy.internal.example:3128": proxy.url, "/etc/ssl/private-ca.pem": ca.ca_file}
            (command,) = commands(DOCS, "HTTPS_PROXY=", replace)
            done = run_documented(command)
        paths = [r["path"] for r in server.requests]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "summary='(Explain the topic in one short sentence.) echo: flyte agents'" in done.stdout
    assert paths.count("/chat/completions") == 2 and "/batches" in paths, "this server, not one the example started"
    # Only the proxy could resolve the name: every call went through it.
    assert proxy.tunnels and set(proxy.tunnels) == {"llm.internal.example:443"}


@pytest.mark.asyncio(loop_scope="session")
async def test_through_the_service_on_fakellm(fakellm: FakeLLM, api_key: str) -> None:
    """ExecuteTaskSync as FlytePropeller sends it, answered by fakellm through the service."""
    from flyteidl.admin import agent_pb2

    from flyteagents.testing import AgentServer

    registry = AgentRegistry()
    registry.register(ChatGPTAgent(OpenAISettings(base_url=fakellm.base_url, timeout=5)))
    busy = ChatGPTTask(name="busy_on_fakellm", chatgpt_config={"model": "busy-2"})
    answers = []
    async with AgentServer(registry) as server:
        for t in (outline, busy):
            call = server.sync_stub.ExecuteTaskSync()
            header = agent_pb2.CreateRequestHeader(template=template_of(t).to_flyte_idl(), output_prefix="/tmp/out")
            await call.write(agent_pb2.ExecuteTaskSyncRequest(header=header))
            await call.write(agent_pb2.ExecuteTaskSyncRequest(inputs=message("flyte").to_flyte_idl()))
            await call.done_writing()
            answers.append([r.header.resource async for r in call])
    (ok,), (limited,) = answers
    assert ok.phase == TaskExecution.SUCCEEDED
    assert ok.outputs.literals["o0"].scalar.primitive.string_value == "Agents run Flyte tasks without pods."
    assert limited.phase == TaskExecution.RETRYABLE_FAILED
    assert limited.agent_error.kind == agent_pb2.AgentError.RECOVERABLE
    assert "Rate limit exceeded (mock)" in limited.message


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost: a private CA's, as far as the client can tell."""
    from flyteagents.testing import self_signed_certificate

    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


async def test_a_private_ca_is_trusted_through_ssl_cert_file(
    certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_OPENAI_API_KEY", "sk-tls")
    with FakeOpenAI(api_keys=("sk-tls",), tls=certificate) as server:
        assert server.base_url.startswith("https://localhost:")
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        untrusted = ChatGPTAgent(OpenAISettings(base_url=server.base_url, timeout=5))
        refused = await untrusted.do(template_of(shout), "/tmp/out", message("hi"))
        await untrusted.aclose()
        monkeypatch.setenv("SSL_CERT_FILE", certificate[0])  # read when the agent makes its client
        trusted = ChatGPTAgent(OpenAISettings(base_url=server.base_url, timeout=5))
        answered = await trusted.do(template_of(shout), "/tmp/out", message("hi"))
        await trusted.aclose()
    assert refused.phase == TaskExecution.FAILED, "a certificate error is configuration, not an outage"
    assert "not trusted" in refused.message and "SSL_CERT_FILE" in refused.message
    assert answered.phase == TaskExecution.SUCCEEDED, answered.message
