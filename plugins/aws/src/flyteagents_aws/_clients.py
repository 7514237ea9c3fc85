"""One aiobotocore SQS client per (region, endpoint, credentials), shared by every poke in a loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from flyteagents import InvalidTaskError, get_secret

__all__ = ["SQSClients", "sqs_client"]

#: Connections one client keeps to SQS; pokes beyond it wait for a free one.
MAX_POOL_CONNECTIONS = 64
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


class SQSClients:
    """Open aiobotocore SQS clients, per event loop and ClientKey; closed with ``aclose``."""

    def __init__(self) -> None:
        self._clients: dict[tuple[int, ClientKey], tuple[asyncio.AbstractEventLoop, Any, Any]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._guard = threading.Lock()
        self.created = 0

    async def get(self, key: ClientKey) -> Any:
        """The shared client for ``key`` in the running loop, created on first use."""
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        entry = self._clients.get(slot)
        if entry is not None and entry[0] is loop:
            return entry[1]
        with self._guard:
            lock = self._locks.setdefault(id(loop), asyncio.Lock())
        async with lock:
            entry = self._clients.get(slot)
            if entry is not None and entry[0] is loop:
                return entry[1]
            self._forget_closed_loops()
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
            client = await context.__aenter__()
            self._clients[slot] = (loop, client, context)
            self.created += 1
            return client

    def _forget_closed_loops(self) -> None:
        for slot in [s for s, (loop, _, _) in self._clients.items() if loop.is_closed()]:
            del self._clients[slot]
            self._locks.pop(slot[0], None)

    async def aclose(self) -> None:
        """Close the running loop's clients."""
        loop = asyncio.get_running_loop()
        for slot in [s for s, (lp, _, _) in self._clients.items() if lp is loop]:
            _, _, context = self._clients.pop(slot)
            with contextlib.suppress(Exception):
                await context.__aexit__(None, None, None)


_CLIENTS = SQSClients()


async def sqs_client(region: str | None, endpoint_url: str | None, credentials_secret: str | None) -> Any:
    """The process-wide shared SQS client for these settings and the credentials the secret resolves to now."""
    digest = None
    if credentials_secret is not None:
        digest = hashlib.sha256(get_secret(credentials_secret).encode()).hexdigest()[:16]
    return await _CLIENTS.get(ClientKey(region, endpoint_url, credentials_secret, digest))
