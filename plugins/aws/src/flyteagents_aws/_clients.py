"""One aiobotocore SQS client per (region, endpoint, credentials), shared by every poke in a loop."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from flyteagents import InvalidTaskError, get_secret
from flyteagents.plugin import ClientPool

__all__ = ["sqs_client"]

#: Connections one client keeps to SQS; pokes beyond it wait for a free one.
MAX_POOL_CONNECTIONS = 64
#: Seconds to connect; reading allows the long-poll plus this.
CONNECT_TIMEOUT = 3.0
READ_MARGIN = 3.0


@dataclass(frozen=True)
class ClientKey:
    """What makes two sensors' clients interchangeable (the secret's name, never its value)."""

    region: str | None
    endpoint_url: str | None
    credentials_secret: str | None


def _credentials(secret: str | None) -> dict[str, str]:
    if secret is None:
        return {}
    try:
        data = json.loads(get_secret(secret))
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


async def _open(key: ClientKey) -> Any:
    config = AioConfig(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_MARGIN + 20,
        max_pool_connections=MAX_POOL_CONNECTIONS,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    context = get_session().create_client(
        "sqs",
        region_name=key.region,
        endpoint_url=key.endpoint_url,
        config=config,
        **_credentials(key.credentials_secret),
    )
    return await context.__aenter__()


#: Open aiobotocore SQS clients, per event loop and ClientKey; closed with their loop.
_CLIENTS: ClientPool[ClientKey, Any] = ClientPool(_open)


async def sqs_client(region: str | None, endpoint_url: str | None, credentials_secret: str | None) -> Any:
    """The process-wide shared SQS client for these settings."""
    return await _CLIENTS.get(ClientKey(region, endpoint_url, credentials_secret))
