"""One aiobotocore SQS client per (region, endpoint, credentials), shared by every poke in a loop."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from flyteagents import InvalidTaskError, get_secret
from flyteagents.plugin import ClientPool, secret_fingerprint

__all__ = ["sqs_client"]

#: Connections one client keeps to SQS; pokes beyond it wait for a free one.
MAX_POOL_CONNECTIONS = 64
#: Most SQS clients kept per event loop.
MAX_CLIENTS = 64
#: Seconds to connect; reading allows the long-poll plus this.
CONNECT_TIMEOUT = 3.0
READ_MARGIN = 3.0


@dataclass(frozen=True)
class ClientKey:
    """What makes two sensors' clients interchangeable: the secret's name and a digest of its value.

    The digest keeps apart calls that resolve one name to different credentials (a Flyte 2 task's
    own, from its Connection), and picks up a rotated secret; the value itself is never kept.
    """

    region: str | None
    endpoint_url: str | None
    credentials_secret: str | None
    credentials_digest: str | None = None


def _credentials(secret: str, value: str) -> dict[str, str]:
    try:
        data = json.loads(value)
        creds = {
            "aws_access_key_id": str(data["aws_access_key_id"]),
            "aws_secret_access_key": str(data["aws_secret_access_key"]),
        }
    except (ValueError, KeyError, TypeError):
        raise InvalidTaskError(
            f"secret {secret!r} must be JSON with aws_access_key_id and aws_secret_access_key"
        ) from None
    if data.get("aws_session_token"):
        creds["aws_session_token"] = str(data["aws_session_token"])
    return creds


async def _open(key: ClientKey, credentials: dict[str, str]) -> Any:
    config = AioConfig(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_MARGIN + 20,
        max_pool_connections=MAX_POOL_CONNECTIONS,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    context = get_session().create_client(
        "sqs", region_name=key.region, endpoint_url=key.endpoint_url, config=config, **credentials
    )
    return await context.__aenter__()


#: Open aiobotocore SQS clients, per event loop and ClientKey; closed with their loop.
#: (Region and endpoint come from task templates: at most MAX_CLIENTS, least recently used evicted.)
_CLIENTS: ClientPool[ClientKey, Any] = ClientPool(max_size=MAX_CLIENTS)


async def sqs_client(region: str | None, endpoint_url: str | None, credentials_secret: str | None) -> Any:
    """The process-wide shared SQS client for these settings and the credentials the secret resolves to now."""
    if credentials_secret is None:
        key = ClientKey(region, endpoint_url, None)
        return await _CLIENTS.get(key, lambda: _open(key, {}))
    value = get_secret(credentials_secret)
    key = ClientKey(region, endpoint_url, credentials_secret, secret_fingerprint(value))
    return await _CLIENTS.get(key, lambda: _open(key, _credentials(credentials_secret, value)))
