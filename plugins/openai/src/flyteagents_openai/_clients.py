"""One AsyncOpenAI client per (API key, organization, base URL) and event loop, reused across calls."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from dataclasses import dataclass

import openai

from ._settings import OpenAISettings

__all__ = ["ClientCache"]


@dataclass
class _LoopClients:
    """The clients and the concurrency bound belonging to one event loop."""

    clients: dict[tuple[str, str | None, str | None], openai.AsyncOpenAI]
    limit: asyncio.Semaphore


class ClientCache:
    """Hands out cached AsyncOpenAI clients.

    An AsyncOpenAI client owns a connection pool tied to the event loop that first used it,
    so clients are kept per loop: the agent service has one loop for its lifetime, while a
    local run gets a fresh loop per task. The cache key holds a hash of the API key, never
    the key itself. Clients never retry on their own: a retry belongs to Flyte, which knows
    the task's budget, and a silent retry would outlast propeller's deadline.
    """

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _for_loop(self) -> _LoopClients:
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is None:
            with self._lock:
                entry = self._loops.get(loop)
                if entry is None:
                    entry = _LoopClients({}, asyncio.Semaphore(self.settings.max_concurrency))
                    self._loops[loop] = entry
        return entry

    def client(self, api_key: str, organization: str | None) -> openai.AsyncOpenAI:
        """The client for this key and organization on the running loop, made on first use."""
        entry = self._for_loop()
        key = (hashlib.sha256(api_key.encode()).hexdigest(), organization, self.settings.base_url)
        client = entry.clients.get(key)
        if client is None:
            client = openai.AsyncOpenAI(
                api_key=api_key,
                organization=organization,
                base_url=self.settings.base_url,
                timeout=self.settings.timeout,
                max_retries=0,
            )
            entry.clients[key] = client
        return client

    def limit(self) -> asyncio.Semaphore:
        """The semaphore bounding in-flight calls on the running loop."""
        return self._for_loop().limit

    def __len__(self) -> int:
        return sum(len(entry.clients) for entry in list(self._loops.values()))

    async def aclose(self) -> None:
        """Close the running loop's clients and their connection pools."""
        entry = self._loops.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            for client in entry.clients.values():
                await client.close()
