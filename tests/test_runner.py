"""AgentRunner: coroutines on the loop, plain functions on its own bounded pool."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

from flyteagents import AgentRunner, AsyncAgentBase, ResourceMeta

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


class Probe(AsyncAgentBase):
    def __init__(self) -> None:
        super().__init__(task_type_name="probe", metadata_type=ResourceMeta)
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kwargs: Any) -> ResourceMeta:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.05)  # a blocking SDK call
        with self.lock:
            self.running -= 1
        return ResourceMeta()

    async def get(self, resource_meta: ResourceMeta, **kwargs: Any) -> Any:
        return threading.current_thread().name, request_id.get()

    def delete(self, resource_meta: ResourceMeta, **kwargs: Any) -> Any:
        return threading.current_thread().name, request_id.get()


def test_which_methods_are_coroutines_is_recorded_once_per_class() -> None:
    assert Probe.async_methods == frozenset({"get"})


async def test_coroutines_run_on_the_loop_thread() -> None:
    runner = AgentRunner(max_workers=2)
    name, _ = await runner.call(Probe(), "get", resource_meta=ResourceMeta())
    assert name == threading.current_thread().name
    runner.shutdown()


async def test_plain_functions_run_on_the_runner_pool_with_the_callers_context() -> None:
    runner = AgentRunner(max_workers=2)
    request_id.set("req-7")
    name, seen = await runner.call(Probe(), "delete", resource_meta=ResourceMeta())
    assert name.startswith("flyteagents-sync")
    assert seen == "req-7"
    runner.shutdown()


async def test_plain_functions_are_bounded_and_do_not_block_the_loop() -> None:
    runner = AgentRunner(max_workers=2)
    agent = Probe()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    calls = [runner.call(agent, "create", task_template=None, output_prefix="") for _ in range(6)]
    await asyncio.gather(*calls)
    tick_task.cancel()
    assert agent.peak == 2
    assert ticks >= 10  # the loop kept running during 3 rounds of 50 ms blocking calls
    assert runner.busy_workers == 0
    runner.shutdown()
