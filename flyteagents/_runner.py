"""Calling agent methods: coroutines on the event loop, plain functions on a bounded thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ._agent import AgentBase

_T = TypeVar("_T")

__all__ = ["AgentRunner", "default_sync_workers", "run_sync", "shared_runner"]


def default_sync_workers() -> int:
    """The thread pool size used when none is given: ``FLYTEAGENTS_SYNC_WORKERS`` or 4 per core, 8-64."""
    env = os.environ.get("FLYTEAGENTS_SYNC_WORKERS")
    if env:
        return int(env)
    return max(8, min(64, 4 * (os.cpu_count() or 1)))


class AgentRunner:
    """Runs agent methods without blocking the event loop.

    ``async def`` methods are awaited on the running loop. Plain ``def`` methods run on
    this runner's own ThreadPoolExecutor (never the loop's default executor), with the
    caller's contextvars, so at most ``max_workers`` of them run at once.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or default_sync_workers()
        self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="flyteagents-sync")
        self._busy = 0
        self._lock = threading.Lock()

    @property
    def busy_workers(self) -> int:
        """How many plain-function calls are running or queued, counted until their thread is done with them."""
        return self._busy

    def call(self, agent: AgentBase, method: str, **kwargs: Any) -> Awaitable[Any]:
        """Call ``agent.<method>(**kwargs)``; await the result.

        The one place that decides how an agent method runs: a coroutine method's own
        coroutine is returned to be awaited on the running loop, a plain method is submitted
        to the thread pool.
        """
        fn = getattr(agent, method)
        if method in agent.async_methods:
            return fn(**kwargs)  # type: ignore[no-any-return]
        return self._submit(functools.partial(fn, **kwargs))

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run the plain function ``fn(*args)`` on this runner's thread pool (say, to drain a generator)."""
        return await self._submit(functools.partial(fn, *args))

    def _submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        # Counted until the thread is done with it: a cancelled caller does not stop a thread.
        with self._lock:
            self._busy += 1
        future = self._executor.submit(contextvars.copy_context().run, fn)
        future.add_done_callback(self._done)
        return asyncio.wrap_future(future)

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self._busy -= 1

    def shutdown(self, wait: bool = True) -> None:
        """Stop the thread pool; with ``wait``, after the running calls finish."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)


_shared: AgentRunner | None = None
_shared_lock = threading.Lock()


def shared_runner() -> AgentRunner:
    """The process-wide runner, made on first use, for work outside a server's own runner.

    Local task runs call agents through it, and sensors run their blocking calls on it.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = AgentRunner()
        return _shared


async def run_sync(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)``, run off the event loop on the process's bounded thread pool.

    For blocking calls (a sync SDK, file I/O) from async agent or sensor code. The call sees
    the caller's contextvars; at most ``default_sync_workers()`` such calls run at once.
    """
    return await shared_runner().run(functools.partial(fn, *args, **kwargs))  # type: ignore[no-any-return]
