"""Secrets resolved by name, the way operators hand them to the service and to flytekit tasks."""

from __future__ import annotations

import contextvars
import functools
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from ._exceptions import InvalidTaskError, SecretNotFoundError

__all__ = [
    "SECRETS_DIR_ENV",
    "SECRET_ENV_PREFIX",
    "check_secret_name",
    "current_connection",
    "get_secret",
    "secret_env_name",
    "secret_fingerprint",
]

#: A secret named ``kafka-password`` is read from ``FLYTEAGENTS_SECRET_KAFKA_PASSWORD`` ...
SECRET_ENV_PREFIX = "FLYTEAGENTS_SECRET_"
#: ... or from the file ``$FLYTEAGENTS_SECRETS_DIR/kafka-password``.
SECRETS_DIR_ENV = "FLYTEAGENTS_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/etc/flyteagents/secrets"
# flytekit's secrets manager settings (flytekit.configuration.SecretsConfig) and their defaults.
_FLYTE_ENV_PREFIX = ("FLYTE_SECRETS_ENV_PREFIX", "_FSEC_")
_FLYTE_DIR = ("FLYTE_SECRETS_DEFAULT_DIR", "/etc/secrets")
_FLYTE_FILE_PREFIX = ("FLYTE_SECRETS_FILE_PREFIX", "")
_SETTINGS, _DEFAULTS = zip(
    (SECRETS_DIR_ENV, DEFAULT_SECRETS_DIR), _FLYTE_ENV_PREFIX, _FLYTE_DIR, _FLYTE_FILE_PREFIX, strict=True
)


class Connection(Protocol):
    """What a Flyte 2 request's ``Connection`` carries: secret values and plain settings, by name."""

    @property
    def secrets(self) -> Mapping[str, str]: ...

    @property
    def configs(self) -> Mapping[str, str]: ...


#: The ``Connection`` of the Flyte 2 request being served (flyteidl2.core.Connection), if it sent one.
#: The connector service sets it around each call, so an agent's ``get_secret`` sees the calling
#: task's own credentials; it is never stored anywhere else.
current_connection: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
    "flyteagents_connection", default=None
)

# A plain name, or flytekit's "group/key": never a path out of the secrets directory.
_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_NAME = re.compile(rf"^{_PART}(/{_PART})?$")


def check_secret_name(name: str, what: str = "secret") -> None:
    """Raise InvalidTaskError (a ValueError) unless ``name`` is a plain secret name or ``group/key``.

    Args:
        name: the secret's name.
        what: what the name is for (a config field), for the message.
    """
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidTaskError(
            f"{what} must be a secret name (letters, digits, '_', '-', '.', or 'group/key'), got {name!r}"
        )


def secret_fingerprint(value: str) -> str:
    """A one-way digest of a secret's value (16 hex digits), to key clients by without holding the secret.

    A rotated secret gets a new fingerprint, hence a new client.
    """
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def secret_env_name(name: str) -> str:
    """The variable holding the secret ``name``: ``FLYTEAGENTS_SECRET_<NAME>``, other characters as ``_``."""
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def get_secret(
    name: str,
    *,
    env: Sequence[str] = (),
    flytekit: bool = False,
    dir_key: str | None = None,
) -> str:
    """The value of the secret ``name``, read at each call so a rotated secret is seen at once.

    The first non-empty value wins, whitespace stripped; the request before the environment,
    the environment before files:

    0. when serving a Flyte 2 connector call, the secret ``name`` of the request's ``Connection``
       (the calling task's own credentials, filled in by the Flyte 2 backend);
    1. the variable ``FLYTEAGENTS_SECRET_<NAME>`` (see :func:`secret_env_name`);
    2. each variable in ``env``, in order (names the operator chose or a flytekit plugin used);
    3. with ``flytekit``: flytekit's ``_FSEC_<GROUP>_<KEY>`` (``$FLYTE_SECRETS_ENV_PREFIX``);
    4. the file ``$FLYTEAGENTS_SECRETS_DIR/<name>`` (default ``/etc/flyteagents/secrets``);
    5. with ``flytekit``: flytekit's file ``$FLYTE_SECRETS_DEFAULT_DIR/<group>/<key>``, lower-cased
       (default ``/etc/secrets``, the Helm chart's mount point).

    Only these places are reachable, so a task naming a secret cannot make the agent read one
    of its other variables or files.

    Args:
        name: the secret's name: letters, digits, ``_``, ``-``, ``.``, or ``group/key``.
        env: further variables to try, for names the operator configures (never a task).
        flytekit: also follow flytekit's secrets-manager conventions.
        dir_key: when a secrets path is a directory (a whole Kubernetes Secret mounted
            there), read its file ``dir_key``.

    Raises:
        InvalidTaskError: ``name`` is not a secret name.
        SecretNotFoundError: no such secret here (not retryable; the message names the
            secret and where it was looked for, never a value).
    """
    # Where to look depends only on the name and the settings: worked out once per both.
    settings = tuple(os.environ.get(variable) for variable in _SETTINGS)
    variables, paths = _places(name, tuple(env), flytekit, settings)
    connection = current_connection.get()
    if connection is not None:
        value = (connection.secrets.get(name) or "").strip()
        if value:
            return value
    for variable in variables:
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    for path in paths:
        value = _read(path, dir_key)
        if value:
            return value
    where = ", ".join([variables[0], *(str(p) for p in paths)])
    raise SecretNotFoundError(f"secret {name!r} is not available to the agent: set or mount it at {where}")


@functools.lru_cache(maxsize=1024)
def _places(
    name: str, env: tuple[str, ...], flytekit: bool, settings: tuple[str | None, ...]
) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    """The variables and files that may hold the secret ``name``, in the order they are tried."""
    check_secret_name(name)
    secrets_dir, flyte_prefix, flyte_dir, flyte_file_prefix = (
        default if value is None else value for value, default in zip(settings, _DEFAULTS, strict=True)
    )
    variables = [secret_env_name(name), *env]
    paths = [Path(secrets_dir or DEFAULT_SECRETS_DIR) / name]
    if flytekit:
        group, _, key = name.partition("/")
        variables.append(flyte_prefix + "_".join(filter(None, (group, key))).upper())
        parts = [p.lower() for p in filter(None, (group, key))]
        parts[-1] = flyte_file_prefix + parts[-1]
        paths.append(Path(flyte_dir, *parts))
    return tuple(variables), tuple(paths)


def _read(path: Path, dir_key: str | None) -> str:
    try:
        if dir_key and path.is_dir():
            path = path / dir_key
        # A few bytes from a mounted file: cheap enough to read on each call, even from async code.
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""
