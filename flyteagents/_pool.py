"""ClientPool: clients kept per event loop and key, closed when their loop or the service ends."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["ClientPool", "close_clients"]

logger = logging.getLogger("flyteagents")

_K = TypeVar("_K", bound=Hashable)
_C = TypeVar("_C")

_lock = threading.Lock()
#: Per event loop: every pool holding clients made on it, and the async generator that closes them.
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[weakref.WeakSet[ClientPool[Any, Any]], Any]] = (
    weakref.WeakKeyDictionary()
)


class ClientPool(Generic[_K, _C]):
    """Clients (HTTP sessions, SDK clients, ...) made on first use, one per event loop and key.

    Most async clients belong to the event loop they were made on: the service runs one
    loop for its lifetime, while each local run gets a loop of its own. A pool keeps a
    client per (running loop, key), makes it with ``make(key)`` the first time that pair
    is asked for (concurrent first calls share one), and closes it with ``close(client)``
    when its loop shuts down (``asyncio.run``, local runs and the service end with that),
    on ``aclose()``, or when ``max_size`` is exceeded (least recently used first): an
    evicted client is closed ``close_delay`` seconds later, since calls made with it may
    still be in flight (or at ``aclose()``/the loop's end, if sooner). A close taking longer
    than ``close_timeout`` seconds is abandoned.

    Keys must never hold a secret: key by the secret's name or :func:`secret_fingerprint`, and
    hand ``get`` a ``make`` that holds the secret itself.

    Args:
        make: builds the client for a key; a plain function or a coroutine function. None:
            every ``get`` brings its own.
        close: closes one client; a plain or coroutine function. None: the client's
            own ``aclose()`` or ``close()``, if it has one.
        max_size: most clients kept per loop; None keeps every key's.

    Example:
        ```python
        sessions = ClientPool(lambda base_url: aiohttp.ClientSession(base_url))

        async def poke(url: str) -> bool:
            session = await sessions.get("https://api.example.com")
            async with session.get(url) as response:
                return response.status == 200
        ```
    """

    #: Seconds an evicted client stays open for the calls still using it; longer than any bounded call.
    close_delay: float = 60.0
    #: Longest one client's close may take: closing is best effort, and a loop's end waits for it.
    close_timeout: float = 5.0

    def __init__(
        self,
        make: Callable[[_K], _C | Awaitable[_C]] | None = None,
        close: Callable[[_C], Any] | None = None,
        max_size: int | None = None,
    ) -> None:
        self._make = make
        self._close = close
        self.max_size = max_size
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[_K, asyncio.Future[_C]]] = (
            weakref.WeakKeyDictionary()
        )
        self._closing: set[asyncio.Task[None]] = set()
        #: Per loop: evicted clients not closed yet.
        self._retired: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[asyncio.Future[_C]]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, key: _K, make: Callable[[], _C | Awaitable[_C]] | None = None) -> _C:
        """The client for ``key`` on the running loop, made on first use by ``make()`` or the pool's ``make(key)``."""
        loop = asyncio.get_running_loop()
        clients = self._by_loop.get(loop)
        if clients is None:
            clients = await self._register(loop)
        found = clients.get(key)
        if found is not None:
            clients.move_to_end(key)
            try:
                return await asyncio.shield(found)
            except asyncio.CancelledError:
                if not found.cancelled() or _cancelling():
                    raise
                # The caller making it was cancelled, not this one: make it here instead.
                return await self.get(key, make)
        made: asyncio.Future[_C] = loop.create_future()
        clients[key] = made
        try:
            if make is not None:
                client = make()
            elif self._make is not None:
                client = self._make(key)
            else:
                raise TypeError("ClientPool.get needs a make function: the pool was built without one")
            if inspect.isawaitable(client):
                client = await client
        except BaseException as exc:
            if clients.get(key) is made:
                del clients[key]
            if isinstance(exc, asyncio.CancelledError):
                made.cancel()
            else:
                made.set_exception(exc)
                made.exception()  # retrieved: the callers waiting get it; not logged again as never retrieved
            raise
        made.set_result(client)  # type: ignore[arg-type]
        while self.max_size is not None and len(clients) > self.max_size:
            _, old = clients.popitem(last=False)
            self._close_later(loop, old)
        return client  # type: ignore[return-value]

    def clients(self) -> list[_C]:
        """The clients made so far on the running loop (for tests and diagnostics)."""
        clients = self._by_loop.get(asyncio.get_running_loop(), OrderedDict())
        return [f.result() for f in list(clients.values()) if f.done() and not f.cancelled() and f.exception() is None]

    def __len__(self) -> int:
        """How many clients the pool holds, over all loops still open."""
        return sum(len(c) for loop, c in list(self._by_loop.items()) if not loop.is_closed())

    async def aclose(self) -> None:
        """Close the clients this pool made on the running loop."""
        loop = asyncio.get_running_loop()
        clients = self._by_loop.pop(loop, None)
        retired = self._retired.pop(loop, set())
        made = [*(clients.values() if clients else ()), *retired]
        retired.clear()  # the delayed closes of these skip them
        if made:
            await asyncio.gather(*(self._close_one(f) for f in made))

    async def _register(self, loop: asyncio.AbstractEventLoop) -> OrderedDict[_K, asyncio.Future[_C]]:
        with _lock:
            entry = _loops.get(loop)
        if entry is None:
            pools: weakref.WeakSet[ClientPool[Any, Any]] = weakref.WeakSet()
            guard = _close_at_shutdown(pools)
            await guard.__anext__()  # suspended until the loop's shutdown_asyncgens resumes it
            with _lock:
                entry = _loops.setdefault(loop, (pools, guard))
        entry[0].add(self)
        return self._by_loop.setdefault(loop, OrderedDict())

    def _close_later(self, loop: asyncio.AbstractEventLoop, made: asyncio.Future[_C]) -> None:
        retired = self._retired.setdefault(loop, set())
        retired.add(made)
        task = loop.create_task(self._close_retired(retired, made))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_retired(self, retired: set[asyncio.Future[_C]], made: asyncio.Future[_C]) -> None:
        await asyncio.sleep(self.close_delay)
        if made in retired:  # else aclose() has closed it
            retired.discard(made)
            await self._close_one(made)

    async def _close_one(self, made: asyncio.Future[_C]) -> None:
        try:
            client = await made
        except BaseException:  # never made: nothing to close
            return
        try:
            if self._close is not None:
                result = self._close(client)
            else:
                closer = getattr(client, "aclose", None) or getattr(client, "close", None)
                result = closer() if closer is not None else None
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, self.close_timeout)
        except Exception as exc:  # closing is best effort (TimeoutError too): the work it served is done
            logger.debug("closing %s failed: %s", type(client).__name__, exc)


def _cancelling() -> bool:
    """Whether the running task has been asked to cancel (known on Python 3.11+; else False)."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


async def _close_at_shutdown(pools: weakref.WeakSet[ClientPool[Any, Any]]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await asyncio.gather(*(pool.aclose() for pool in list(pools)))


async def close_clients() -> None:
    """Close every pool's clients made on the running loop now, rather than when the loop shuts down."""
    with _lock:
        entry = _loops.get(asyncio.get_running_loop())
    if entry is not None:
        await asyncio.gather(*(pool.aclose() for pool in list(entry[0])))
