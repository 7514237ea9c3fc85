"""One AsyncOpenAI client per (API key, organization, base URL) and event loop, reused across calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import openai

from flyteagents.plugin import ClientPool, secret_fingerprint

from ._settings import OpenAISettings

__all__ = ["ClientCache"]

#: Most clients kept per event loop.
MAX_CLIENTS = 64


class ClientCache:
    """Hands out cached AsyncOpenAI clients.

    An AsyncOpenAI client owns a connection pool tied to the event loop that first used it,
    so clients are kept per loop: the agent service has one loop for its lifetime, while a
    local run gets a fresh loop per task. The cache key holds a fingerprint of the API key,
    never the key itself. Clients never retry on their own: a retry belongs to Flyte, which
    knows the task's budget, and a silent retry would outlast propeller's deadline.
    """

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        # The organization comes from task templates: at most MAX_CLIENTS, least recently used evicted.
        self._clients: ClientPool[tuple[str, str | None, str | None], openai.AsyncOpenAI] = ClientPool(
            max_size=MAX_CLIENTS
        )
        self._limits: ClientPool[None, asyncio.Semaphore] = ClientPool(
            lambda _: asyncio.Semaphore(settings.max_concurrency)
        )

    async def client(self, api_key: str, organization: str | None) -> openai.AsyncOpenAI:
        """The client for this key and organization on the running loop, made on first use."""
        settings = self.settings
        return await self._clients.get(
            (secret_fingerprint(api_key), organization, settings.base_url),
            lambda: openai.AsyncOpenAI(
                api_key=api_key,
                organization=organization,
                base_url=settings.base_url,
                timeout=settings.timeout,
                max_retries=0,
            ),
        )

    @contextlib.asynccontextmanager
    async def limit(self) -> AsyncIterator[None]:
        """Hold one of the running loop's ``max_concurrency`` slots for in-flight calls."""
        async with await self._limits.get(None):
            yield

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        """Close the running loop's clients and their connection pools."""
        await self._clients.aclose()
        await self._limits.aclose()
