"""Secrets named in a sensor config, read from the agent's own environment or secrets directory."""

from __future__ import annotations

import os
import re
from pathlib import Path

from flyteagents import InvalidTaskError

__all__ = ["SECRETS_DIR_ENV", "SECRET_ENV_PREFIX", "check_secret_name", "read_secret"]

#: A secret named ``sasl-password`` is read from ``FLYTEAGENTS_SECRET_SASL_PASSWORD`` ...
SECRET_ENV_PREFIX = "FLYTEAGENTS_SECRET_"
#: ... or else from the file ``$FLYTEAGENTS_SECRETS_DIR/sasl-password`` (default /etc/flyteagents/secrets).
SECRETS_DIR_ENV = "FLYTEAGENTS_SECRETS_DIR"
_DEFAULT_SECRETS_DIR = "/etc/flyteagents/secrets"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_secret_name(name: str, what: str) -> None:
    """Raise ValueError unless ``name`` is a plain secret name (no path, no spaces)."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"{what} must be a secret name (letters, digits, '_', '-', '.'), got {name!r}")


def read_secret(name: str) -> str:
    """The value of the secret ``name``.

    Only names under the ``FLYTEAGENTS_SECRET_`` prefix or files in the secrets directory are
    reachable, so a task cannot make the agent send one of its other variables to a broker.

    Raises:
        InvalidTaskError: no such secret (the message names it, never a value).
    """
    check_secret_name(name, "secret")
    env_name = SECRET_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    value = os.environ.get(env_name)
    if value is not None:
        return value
    path = Path(os.environ.get(SECRETS_DIR_ENV, _DEFAULT_SECRETS_DIR)) / name
    try:
        return path.read_text().strip()
    except OSError:
        raise InvalidTaskError(f"secret {name!r} is not set on the agent: set {env_name} or create {path}") from None
