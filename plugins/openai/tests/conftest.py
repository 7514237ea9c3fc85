"""Fixtures for the OpenAI plugin's tests: a fake OpenAI server on loopback and agents pointed at it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_openai import FakeOpenAI
from flyteagents_openai import BatchEndpointAgent, ChatGPTAgent, OpenAISettings

from flyteagents import AgentRegistry

API_KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=(API_KEY,)) as server:
        yield server


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("FLYTE_OPENAI_API_KEY", API_KEY)
    # Keep a secrets dir the test controls, so a real /etc/secrets never leaks in.
    monkeypatch.setenv("FLYTE_SECRETS_DEFAULT_DIR", str(tmp_path / "secrets"))
    return API_KEY


@pytest.fixture
def settings(fake_openai: FakeOpenAI, api_key: str) -> OpenAISettings:
    return OpenAISettings(base_url=fake_openai.base_url, timeout=5.0)


@pytest.fixture
def chatgpt_agent(settings: OpenAISettings) -> ChatGPTAgent:
    """A ChatGPT agent on the fake server, registered for local runs."""
    agent = ChatGPTAgent(settings)
    AgentRegistry.register(agent, override=True)
    return agent


@pytest.fixture
def batch_agent(settings: OpenAISettings) -> Iterator[BatchEndpointAgent]:
    """A Batch agent on the fake server, registered for local runs."""
    agent = BatchEndpointAgent(settings)
    AgentRegistry.register(agent, override=True)
    yield agent
    agent._io.shutdown(wait=True)
