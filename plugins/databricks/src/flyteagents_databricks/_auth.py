"""Databricks credentials: secrets resolved by name, and OAuth M2M access tokens."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from flyteagents import ExternalServiceError, get_secret
from flyteagents.plugin import secret_fingerprint

__all__ = ["DEFAULT_TOKEN_SECRET", "Credentials", "OAuthTokenCache", "resolve_secret"]

#: The secret holding a personal access token unless the task or the service names another.
DEFAULT_TOKEN_SECRET = "databricks-token"
#: flytekit's Databricks connector reads its PAT as the flytekit secret FLYTE_DATABRICKS_ACCESS_TOKEN
#: (environment variable ``_FSEC_FLYTE_DATABRICKS_ACCESS_TOKEN``); both forms are honoured for the
#: default secret, so a connector deployment's configuration keeps working.
LEGACY_TOKEN_ENVS = ("FLYTE_DATABRICKS_ACCESS_TOKEN", "_FSEC_FLYTE_DATABRICKS_ACCESS_TOKEN")


def resolve_secret(name: str) -> str:
    """The value of the secret called ``name``, by :func:`flyteagents.get_secret` with flytekit's conventions.

    For the default token secret, flytekit's connector variables ``FLYTE_DATABRICKS_ACCESS_TOKEN``
    and ``_FSEC_FLYTE_DATABRICKS_ACCESS_TOKEN`` are read too; a secrets path that is a directory
    (a mounted Kubernetes Secret) is read as ``<name>/token``.

    Raises:
        SecretNotFoundError: an ExternalServiceError, not retryable; no such secret. The message
            names the secret, never a value.
    """
    env = LEGACY_TOKEN_ENVS if name == DEFAULT_TOKEN_SECRET else ()
    return get_secret(name, env=env, flytekit=True, dir_key="token")


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to a workspace: a PAT secret, or an OAuth M2M client.

    Only secret *names* are kept here; values are resolved on each call.

    Args:
        auth_type: ``"pat"`` or ``"oauth_m2m"``.
        secret: the secret holding the PAT (``pat``) or the client secret (``oauth_m2m``).
        client_id: the service principal's application id (``oauth_m2m`` only).
    """

    auth_type: str = "pat"
    secret: str = DEFAULT_TOKEN_SECRET
    client_id: str | None = None


class OAuthTokenCache:
    """OAuth M2M access tokens per (workspace, client, client secret), refreshed before they expire."""

    #: Refresh this many seconds before expiry, so a token never expires mid-request.
    REFRESH_MARGIN = 60.0

    def __init__(self) -> None:
        # No lock: two concurrent refreshes just fetch two valid tokens, and a lock would tie
        # the cache to one event loop.
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    def invalidate(self, base_url: str, client_id: str, client_secret: str) -> None:
        """Forget the client's cached token (the workspace refused it)."""
        self._tokens.pop((base_url, client_id, secret_fingerprint(client_secret)), None)

    async def token(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        client_id: str,
        client_secret: str,
        timeout: float,
    ) -> str:
        """A valid access token for the client, fetched from ``{base_url}/oidc/v1/token`` when needed.

        Raises:
            ExternalServiceError: the token endpoint refused (not retryable) or failed (retryable).
        """
        key = (base_url, client_id, secret_fingerprint(client_secret))
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        form = {"grant_type": "client_credentials", "scope": "all-apis"}
        try:
            async with session.post(
                f"{base_url}/oidc/v1/token",
                data=form,
                auth=aiohttp.BasicAuth(client_id, client_secret),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                status = resp.status
                body = await resp.json(content_type=None) if status == 200 else {}
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise ExternalServiceError(f"Databricks OAuth token endpoint failed: {type(exc).__name__}") from None
        if status != 200:
            retryable = status == 429 or status >= 500
            raise ExternalServiceError(
                f"Databricks OAuth token endpoint answered HTTP {status} for client {client_id!r}",
                retryable=retryable,
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ExternalServiceError("Databricks OAuth token endpoint returned no access_token", retryable=False)
        expires_in = float(body.get("expires_in", 3600))
        self._tokens[key] = (token, time.monotonic() + max(expires_in - self.REFRESH_MARGIN, 1.0))
        return token
