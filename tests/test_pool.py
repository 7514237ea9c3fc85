"""ClientPool: one client per event loop and key, closed when its loop ends."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest
from aiohttp import web

from flyteagents import AgentRegistry
from flyteagents.plugin import ClientPool, close_clients
from flyteagents.server._app import close_agents


class Client:
    made = 0

    def __init__(self, key: str) -> None:
        Client.made += 1
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.closed = False

    async def aclose(self) -> None:
        assert asyncio.get_running_loop() is self.loop, "closed on the loop it was made on"
        self.closed = True


async def slow_make(key: str) -> Client:
    await asyncio.sleep(0.01)
    return Client(key)


def test_a_client_per_loop_and_key_closed_when_its_loop_ends() -> None:
    pool: ClientPool[str, Client] = ClientPool(Client)

    async def run() -> tuple[Client, Client, Client]:
        a, again, b = await pool.get("a"), await pool.get("a"), await pool.get("b")
        assert a is again and a is not b and not a.closed
        return a, again, b

    first = asyncio.run(run())
    second = asyncio.run(run())
    assert all(c.closed for c in first + second), "asyncio.run's end closed every client"
    assert first[0] is not second[0], "a new loop gets clients of its own"
    assert len(pool) == 0


def test_loops_in_threads_do_not_share_clients() -> None:
    pool: ClientPool[str, Client] = ClientPool(slow_make)
    seen: list[Client] = []

    def worker() -> None:
        async def run() -> None:
            seen.append(await pool.get("k"))

        asyncio.run(run())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 4 and all(c.closed for c in seen)


async def test_concurrent_first_calls_share_one_client_and_failures_are_not_kept() -> None:
    pool: ClientPool[str, Client] = ClientPool(slow_make)
    before = Client.made
    clients = await asyncio.gather(*(pool.get("shared") for _ in range(20)))
    assert len({id(c) for c in clients}) == 1 and Client.made == before + 1

    calls = 0

    def flaky(key: str) -> Client:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("first try fails")
        return Client(key)

    other: ClientPool[str, Client] = ClientPool(flaky)
    with pytest.raises(ConnectionError):
        await other.get("x")
    assert (await other.get("x")).key == "x" and calls == 2
    await pool.aclose()
    await other.aclose()
    assert clients[0].closed and other.clients() == []


async def test_the_least_recently_used_client_is_closed_beyond_max_size() -> None:
    pool: ClientPool[str, Client] = ClientPool(Client, max_size=2)
    pool.close_delay = 0.01  # what calls still using an evicted client get (60 s by default)
    a, b = await pool.get("a"), await pool.get("b")
    await pool.get("a")  # a is now the most recent
    c = await pool.get("c")
    assert not b.closed, "open for the calls in flight"
    await asyncio.sleep(0.05)  # the eviction closes in a task of its own, after close_delay
    assert b.closed and not a.closed and not c.closed
    assert {x.key for x in pool.clients()} == {"a", "c"}
    await close_clients()
    assert a.closed and c.closed and pool.clients() == []


async def test_get_can_bring_its_own_make_and_close_can_be_given() -> None:
    closed: list[str] = []
    pool: ClientPool[str, str] = ClientPool(close=closed.append)
    assert await pool.get("k", lambda: "value-made-with-a-secret") == "value-made-with-a-secret"
    assert await pool.get("k", lambda: "never built") == "value-made-with-a-secret"
    with pytest.raises(TypeError, match="make"):
        await pool.get("other")
    await pool.aclose()
    assert closed == ["value-made-with-a-secret"]


async def test_the_service_closes_pooled_clients_as_it_stops() -> None:
    pool: ClientPool[str, Client] = ClientPool(Client)
    client = await pool.get("stop")
    await close_agents(AgentRegistry())  # what serve() awaits once the port is closed
    assert client.closed and pool.clients() == []


async def test_a_client_evicted_beyond_max_size_finishes_the_request_it_is_serving() -> None:
    """Eviction must not close a session under a request in flight (a 17th tenant on the service, say)."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    pool: ClientPool[str, aiohttp.ClientSession] = ClientPool(
        lambda base: aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=10)), max_size=1
    )
    try:
        first = await pool.get(f"http://127.0.0.1:{port}")

        async def call() -> str:
            async with first.get("/slow") as response:
                return await response.text()

        in_flight = asyncio.create_task(call())
        await asyncio.sleep(0.05)  # the request is on the wire
        await pool.get(f"http://localhost:{port}")  # a second key: the first session is evicted
        for _ in range(5):
            await asyncio.sleep(0)
        release.set()
        assert await in_flight == "done"
        assert not first.closed, "kept open for the calls still using it"
        await pool.aclose()
        assert first.closed, "the evicted session is closed with the pool, not leaked"
    finally:
        release.set()
        await pool.aclose()
        await runner.cleanup()


async def test_a_caller_cancelled_while_making_the_client_does_not_cancel_the_others_waiting_for_it() -> None:
    """Two first calls share one make; the one that started it is cancelled (its RPC's deadline, say)."""
    started = asyncio.Event()
    makes = 0

    async def make(key: str) -> Client:
        nonlocal makes
        makes += 1
        started.set()
        await asyncio.sleep(0.05)
        return Client(key)

    pool: ClientPool[str, Client] = ClientPool(make)
    first = asyncio.create_task(pool.get("k"))
    await started.wait()
    second = asyncio.create_task(pool.get("k"))
    await asyncio.sleep(0)  # the second is waiting for the first's make
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    client = await second
    assert client.key == "k" and not second.cancelled() and makes == 2
    assert pool.clients() == [client]
    await pool.aclose()


async def test_a_waiting_caller_cancelled_itself_is_cancelled() -> None:
    pool: ClientPool[str, Client] = ClientPool(slow_make)
    first = asyncio.create_task(pool.get("k"))
    await asyncio.sleep(0)
    second = asyncio.create_task(pool.get("k"))
    await asyncio.sleep(0)
    first.cancel()
    second.cancel()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert pool.clients() == []


def test_a_client_whose_close_hangs_does_not_hold_up_the_loops_end() -> None:
    """A close that never returns (a broker that stopped answering, say) must not keep asyncio.run from ending."""

    class Stuck(Client):
        async def aclose(self) -> None:
            await asyncio.Event().wait()

    pool: ClientPool[str, Stuck] = ClientPool(Stuck)
    pool.close_timeout = 0.1
    made: list[Stuck] = []

    async def run() -> None:
        made.append(await pool.get("stuck"))

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    thread.join(30)
    assert made and not thread.is_alive(), "the loop's end waited for a close that never returns"
