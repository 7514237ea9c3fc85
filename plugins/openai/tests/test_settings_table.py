"""Every variable in docs/plugins/openai.md's settings table, set in the environment, reaches a real server.

The table is read from the page: a variable documented there without a case here fails the test.
Each case builds the agent as ``flyteagents serve`` does (``ChatGPTAgent()``, settings from the
environment) and checks the effect where the server sees it. The private-CA variables the page
names in its text (``SSL_CERT_FILE``, ``SSL_CERT_DIR``) have cases too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from doc_commands import ROOT
from fake_openai import FakeOpenAI
from flyteagents_openai import ChatGPTAgent, ChatGPTTask
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.models.literals import LiteralMap
from network_fixtures import Forwarder, hashed_ca_directory, private_ca

from flyteagents.testing import template_of

PAGE = "docs/plugins/openai.md"
chat = ChatGPTTask(name="settings_chat", chatgpt_config={"model": "gpt-4o-mini"})


def message(text: str) -> LiteralMap:
    from flyteagents_openai._literals import string_literal

    return LiteralMap({"message": string_literal(text)})


def documented_variables() -> set[str]:
    """The variables named in the first column of the "Install and configure" table."""
    page = (ROOT / PAGE).read_text()
    section = page.split("## Install and configure", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*documented_variables(), "FLYTE_OPENAI_API_KEY", "SSL_CERT_FILE", "SSL_CERT_DIR"]:
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def ask(agent: ChatGPTAgent, text: str = "hi", task: ChatGPTTask = chat) -> tuple[int, str]:
    try:
        resource = await agent.do(template_of(task), "/tmp/out", message(text))
    finally:
        await agent.aclose()
    answer = resource.outputs.literals["o0"].scalar.primitive.string_value if resource.outputs else ""
    return resource.phase, answer or (resource.message or "")


async def base_urls(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("FLYTE_OPENAI_API_KEY", "sk-test")
    with FakeOpenAI() as general, FakeOpenAI() as agents_own:
        env.setenv("OPENAI_BASE_URL", general.base_url)
        assert await ask(ChatGPTAgent(), "general") == (TaskExecution.SUCCEEDED, "echo: general")
        env.setenv("FLYTEAGENTS_OPENAI_BASE_URL", agents_own.base_url)  # the agents' own setting wins
        assert await ask(ChatGPTAgent(), "own") == (TaskExecution.SUCCEEDED, "echo: own")
        assert [r["path"] for r in general.requests] == ["/chat/completions"]
        assert [r["path"] for r in agents_own.requests] == ["/chat/completions"]


async def secret_name(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with FakeOpenAI(api_keys=("sk-team",)) as server:
        env.setenv("OPENAI_BASE_URL", server.base_url)
        env.setenv("FLYTE_OPENAI_API_KEY", "sk-not-this-one")
        env.setenv("FLYTEAGENTS_OPENAI_SECRET", "TEAM_OPENAI_KEY")
        env.setenv("TEAM_OPENAI_KEY", "sk-team")
        assert await ask(ChatGPTAgent()) == (TaskExecution.SUCCEEDED, "echo: hi")


async def timeout(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    slow = ChatGPTTask(name="settings_slow", chatgpt_config={"model": "slow-3"})  # answers after 3 s
    with FakeOpenAI() as server:
        env.setenv("OPENAI_BASE_URL", server.base_url)
        env.setenv("FLYTE_OPENAI_API_KEY", "sk-test")
        env.setenv("FLYTEAGENTS_OPENAI_TIMEOUT", "0.5")
        phase, text = await ask(ChatGPTAgent(), task=slow)
    # The default (8 s) would have waited for the answer.
    assert phase == TaskExecution.RETRYABLE_FAILED and "did not answer in time" in text, text


async def max_concurrency(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    slow = ChatGPTTask(name="settings_busy", chatgpt_config={"model": "slow-0.3"})
    with FakeOpenAI() as server, Forwarder(lambda: server._server.server_address[:2]) as front:
        env.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{front.port}/v1")
        env.setenv("FLYTE_OPENAI_API_KEY", "sk-test")
        env.setenv("FLYTEAGENTS_OPENAI_MAX_CONCURRENCY", "2")
        agent = ChatGPTAgent()
        try:
            answers = await asyncio.gather(*(agent.do(template_of(slow), "/tmp/out", message("x")) for _ in range(6)))
        finally:
            await agent.aclose()
    assert all(a.phase == TaskExecution.SUCCEEDED for a in answers)
    assert front.max_open == 2, "six calls at once, two connections: the others waited for a turn"


async def ca_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = private_ca(tmp_path)
    with FakeOpenAI(tls=ca.issue("llm", "localhost")) as server:
        env.setenv("OPENAI_BASE_URL", server.base_url)
        env.setenv("FLYTE_OPENAI_API_KEY", "sk-test")
        env.setenv("SSL_CERT_FILE", ca.ca_file)
        assert await ask(ChatGPTAgent()) == (TaskExecution.SUCCEEDED, "echo: hi")


async def ca_directory(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = private_ca(tmp_path)
    with FakeOpenAI(tls=ca.issue("llm", "localhost")) as server:
        env.setenv("OPENAI_BASE_URL", server.base_url)
        env.setenv("FLYTE_OPENAI_API_KEY", "sk-test")
        env.setenv("SSL_CERT_DIR", hashed_ca_directory(ca.ca_file, tmp_path / "certs"))
        assert await ask(ChatGPTAgent()) == (TaskExecution.SUCCEEDED, "echo: hi")


Case = Callable[[pytest.MonkeyPatch, Path], Awaitable[None]]
CASES: dict[str, tuple[tuple[str, ...], Case]] = {
    "base_urls": (("FLYTEAGENTS_OPENAI_BASE_URL", "OPENAI_BASE_URL"), base_urls),
    "secret_name": (("FLYTEAGENTS_OPENAI_SECRET",), secret_name),
    "timeout": (("FLYTEAGENTS_OPENAI_TIMEOUT",), timeout),
    "max_concurrency": (("FLYTEAGENTS_OPENAI_MAX_CONCURRENCY",), max_concurrency),
    "ca_file": (("SSL_CERT_FILE",), ca_file),
    "ca_directory": (("SSL_CERT_DIR",), ca_directory),
}


def test_every_documented_variable_has_a_case() -> None:
    covered = {name for names, _ in CASES.values() for name in names}
    assert documented_variables() | {"SSL_CERT_FILE", "SSL_CERT_DIR"} == covered
    assert "SSL_CERT_DIR" in (ROOT / PAGE).read_text()


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("case", sorted(CASES))
async def test_documented_variable(case: str, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    await CASES[case][1](clean_env, tmp_path)


def test_the_readmes_own_settings_reach_the_server(clean_env: pytest.MonkeyPatch) -> None:
    """The README's snippet registering an agent with its own base URL, run as written against a local server."""
    from doc_commands import code_block
    from flytekit import workflow

    from flyteagents import AgentRegistry

    source = code_block("plugins/openai/README.md", "python", "OpenAISettings(base_url=")
    ollama = "http://localhost:11434/v1"
    assert ollama in source
    registry = AgentRegistry.default()
    before = registry.agents.get(("chatgpt", 0))
    with FakeOpenAI() as server:
        clean_env.setenv("FLYTE_OPENAI_API_KEY", "sk-test")
        exec(source.replace(ollama, server.base_url), {})

        @workflow
        def wf(text: str) -> str:
            return chat(message=text)  # type: ignore[no-any-return]

        try:
            assert wf(text="from the readme") == "echo: from the readme"
        finally:
            # As it was for the other tests (an agent reading the environment, as the entry point makes).
            registry.register(before if before is not None else ChatGPTAgent(), override=True)
        assert [r["path"] for r in server.requests] == ["/chat/completions"]


def test_the_fake_server_runs_on_its_own_as_the_readme_says(clean_env: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from flyteagents_openai import OpenAISettings

    readme = (ROOT / "plugins/openai/README.md").read_text()
    (command,) = re.findall(r"`(python plugins/openai/tests/fake_openai\.py --port \d+)`", readme)
    argv = [sys.executable, *command.split()[1:-1], "0"]  # the README's port may be taken: any free one
    server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1"), base_url
        clean_env.setenv("FLYTE_OPENAI_API_KEY", "sk-test")
        phase, answer = asyncio.run(ask(ChatGPTAgent(OpenAISettings(base_url=base_url, timeout=5)), "on its own"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (phase, answer) == (TaskExecution.SUCCEEDED, "echo: on its own")


#: Where the README says the key is read from (the default secret name, FLYTE_OPENAI_API_KEY).
KEY_PLACES = (
    "FLYTE_OPENAI_API_KEY",
    "_FSEC_FLYTE_OPENAI_API_KEY",
    "$FLYTE_SECRETS_DEFAULT_DIR/flyte_openai_api_key",
    "FLYTEAGENTS_SECRET_FLYTE_OPENAI_API_KEY",
)


def test_the_readme_names_these_key_places() -> None:
    readme = (ROOT / "plugins/openai/README.md").read_text()
    assert all(f"`{place}`" in readme for place in KEY_PLACES)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("place", KEY_PLACES)
async def test_the_key_is_found_where_the_readme_says(
    place: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in KEY_PLACES[:2] + KEY_PLACES[3:]:
        clean_env.delenv(variable, raising=False)
    clean_env.setenv("FLYTE_SECRETS_DEFAULT_DIR", str(tmp_path / "secrets"))
    if place.startswith("$"):
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "flyte_openai_api_key").write_text("sk-placed\n")
    else:
        clean_env.setenv(place, "sk-placed")
    with FakeOpenAI(api_keys=("sk-placed",)) as server:  # answers 401 to any other key
        clean_env.setenv("OPENAI_BASE_URL", server.base_url)
        assert await ask(ChatGPTAgent()) == (TaskExecution.SUCCEEDED, "echo: hi")
