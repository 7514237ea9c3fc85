"""Operator settings shared by the OpenAI agents: endpoint, API key secret, timeout, concurrency."""

from __future__ import annotations

import os
from dataclasses import dataclass

from flyteagents import SecretNotFoundError, get_secret

__all__ = ["DEFAULT_SECRET_NAME", "DEFAULT_TIMEOUT", "OpenAISettings"]

#: The secret flytekitplugins-openai reads, so existing deployments keep working.
DEFAULT_SECRET_NAME = "FLYTE_OPENAI_API_KEY"
#: Seconds for one OpenAI call: inside FlytePropeller's default 10 s ExecuteTaskSync deadline.
DEFAULT_TIMEOUT = 8.0
DEFAULT_MAX_CONCURRENCY = 64


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class OpenAISettings:
    """Where and how the agents call OpenAI; chosen by the operator, never by a task.

    A task cannot choose the base URL: the operator's API key is sent there.

    Args:
        base_url: an OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, a
            proxy); None means ``OPENAI_BASE_URL`` or api.openai.com.
        timeout: seconds allowed for one HTTP call to the endpoint.
        secret_name: the Flyte secret holding the API key.
        max_concurrency: calls to the endpoint in flight at once, per agent and event loop.
    """

    base_url: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    secret_name: str = DEFAULT_SECRET_NAME
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    @classmethod
    def from_env(cls) -> OpenAISettings:
        """Settings from ``FLYTEAGENTS_OPENAI_*`` environment variables (and ``OPENAI_BASE_URL``)."""
        return cls(
            base_url=os.environ.get("FLYTEAGENTS_OPENAI_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or None,
            timeout=_env_float("FLYTEAGENTS_OPENAI_TIMEOUT", DEFAULT_TIMEOUT),
            secret_name=os.environ.get("FLYTEAGENTS_OPENAI_SECRET", DEFAULT_SECRET_NAME),
            max_concurrency=_env_int("FLYTEAGENTS_OPENAI_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY),
        )

    def api_key(self) -> str | None:
        """The API key, read at each call so a rotated secret takes effect; None when absent.

        Read as flytekit reads a group-less Flyte secret: ``$NAME``, ``$_FSEC_NAME``, then
        ``$FLYTE_SECRETS_DEFAULT_DIR/<name lower-cased>`` (``FLYTEAGENTS_SECRET_<NAME>`` and
        ``$FLYTEAGENTS_SECRETS_DIR/<name>`` are honoured too, as by every flyteagents plugin).
        """
        try:
            # The name is the operator's setting, never a task's, so its bare variable may be read.
            return get_secret(self.secret_name, env=(self.secret_name,), flytekit=True)
        except SecretNotFoundError:
            return None
