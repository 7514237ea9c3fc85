"""The agent's service-wide Databricks settings, read from the environment, and per-task overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from flyteagents import InvalidTaskError

from ._auth import DEFAULT_TOKEN_SECRET, Credentials

__all__ = ["DatabricksSettings", "normalize_instance"]

AUTH_TYPES = ("pat", "oauth_m2m")
DEFAULT_OAUTH_SECRET = "databricks-oauth-secret"


def normalize_instance(instance: str) -> str:
    """``host[:port]`` or a URL -> the workspace's base URL (https unless a scheme is given)."""
    instance = instance.strip().rstrip("/")
    if not instance:
        raise InvalidTaskError("the Databricks workspace instance is empty")
    if "://" not in instance:
        instance = f"https://{instance}"
    if not instance.startswith(("https://", "http://")):
        raise InvalidTaskError(f"Databricks instance {instance!r} must be a host name or an http(s) URL")
    return instance


def _env(*names: str, default: str | None = None) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return default


@dataclass(frozen=True)
class DatabricksSettings:
    """Where and how the agent reaches Databricks unless a task says otherwise.

    Args:
        instance: the default workspace (``FLYTEAGENTS_DATABRICKS_INSTANCE`` or flytekit's
            ``FLYTE_DATABRICKS_INSTANCE``); a host name means https.
        credentials: default credential (``FLYTEAGENTS_DATABRICKS_AUTH_TYPE`` ``pat`` or
            ``oauth_m2m``; ``FLYTEAGENTS_DATABRICKS_TOKEN_SECRET``, default ``databricks-token``;
            for OAuth ``DATABRICKS_CLIENT_ID`` and ``FLYTEAGENTS_DATABRICKS_OAUTH_SECRET``).
        request_timeout: seconds for one HTTP request (``FLYTEAGENTS_DATABRICKS_REQUEST_TIMEOUT``).
        call_timeout: seconds for one agent call, retries included (``FLYTEAGENTS_DATABRICKS_CALL_TIMEOUT``);
            keep it under FlytePropeller's GetTask deadline.
        max_connections: connections per workspace pool.
        git_source: the default ``git_source`` holding the entrypoint script.
    """

    instance: str | None = None
    credentials: Credentials = field(default_factory=Credentials)
    request_timeout: float = 5.0
    call_timeout: float = 10.0
    max_connections: int = 32
    git_source: dict[str, Any] | None = None

    @classmethod
    def from_env(cls) -> DatabricksSettings:
        """Settings from the environment variables named in the class docstring."""
        auth_type = _env("FLYTEAGENTS_DATABRICKS_AUTH_TYPE", "FLYTE_DATABRICKS_AUTH_TYPE", default="pat")
        assert auth_type is not None
        if auth_type == "oauth_m2m":
            creds = Credentials(
                "oauth_m2m",
                _env("FLYTEAGENTS_DATABRICKS_OAUTH_SECRET", default=DEFAULT_OAUTH_SECRET) or DEFAULT_OAUTH_SECRET,
                _env("DATABRICKS_CLIENT_ID"),
            )
        else:
            creds = Credentials(
                auth_type,
                _env("FLYTEAGENTS_DATABRICKS_TOKEN_SECRET", default=DEFAULT_TOKEN_SECRET) or DEFAULT_TOKEN_SECRET,
            )
        instance = _env("FLYTEAGENTS_DATABRICKS_INSTANCE", "FLYTE_DATABRICKS_INSTANCE")
        return cls(
            instance=instance,
            credentials=creds,
            request_timeout=float(_env("FLYTEAGENTS_DATABRICKS_REQUEST_TIMEOUT", default="5") or 5),
            call_timeout=float(_env("FLYTEAGENTS_DATABRICKS_CALL_TIMEOUT", default="10") or 10),
        )

    def for_task(self, custom: dict[str, Any]) -> tuple[str, Credentials]:
        """The workspace base URL and credential for a task, its custom fields overriding these settings.

        Raises:
            InvalidTaskError: no workspace is configured, or the auth type is unknown.
        """
        instance = custom.get("databricksInstance") or self.instance
        if not instance:
            raise InvalidTaskError(
                "no Databricks workspace: set databricks_instance on the task or "
                "FLYTEAGENTS_DATABRICKS_INSTANCE on the agent service"
            )
        default = self.credentials
        auth_type = custom.get("databricksAuthType") or default.auth_type
        if auth_type not in AUTH_TYPES:
            raise InvalidTaskError(f"Databricks auth type {auth_type!r} is not one of {', '.join(AUTH_TYPES)}")
        if auth_type == "oauth_m2m":
            client_id = custom.get("databricksClientId") or default.client_id
            if not client_id:
                raise InvalidTaskError("OAuth M2M needs a client id: set databricks_client_id or DATABRICKS_CLIENT_ID")
            base_secret = default.secret if default.auth_type == "oauth_m2m" else DEFAULT_OAUTH_SECRET
            creds = Credentials("oauth_m2m", custom.get("databricksOauthSecret") or base_secret, client_id)
        else:
            base_secret = default.secret if default.auth_type == "pat" else DEFAULT_TOKEN_SECRET
            creds = Credentials("pat", custom.get("databricksTokenSecret") or base_secret)
        return normalize_instance(str(instance)), creds
