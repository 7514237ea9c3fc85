"""Operator settings shared by the OpenAI agents: endpoint, API key secret, timeout, concurrency."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_SECRET_NAME", "DEFAULT_TIMEOUT", "OpenAISettings", "read_secret"]

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
    secrets_dir: Path = field(default_factory=lambda: Path(os.environ.get("FLYTE_SECRETS_DEFAULT_DIR", "/etc/secrets")))

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
        """The API key, read at each call so a rotated secret takes effect; None when absent."""
        return read_secret(self.secret_name, self.secrets_dir)


def read_secret(name: str, secrets_dir: Path) -> str | None:
    """A Flyte secret the way flytekit resolves a group-less one: env vars, then a mounted file.

    Looks at ``$NAME``, ``$_FSEC_NAME``, then ``<secrets_dir>/<name lower-cased>``.
    """
    for var in (name, f"_FSEC_{name}".upper()):
        value = os.environ.get(var)
        if value:
            return value.strip()
    path = secrets_dir / name.lower()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
