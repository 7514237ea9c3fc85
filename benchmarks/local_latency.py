"""Local run of an instantly-finishing async task: flyteagents vs the SDKs' own local connector paths.

    .venv/bin/python benchmarks/local_latency.py [--runs N] [--connector-runs M]

Flyte 1: both tasks have the same agent (create returns a job id, get answers SUCCEEDED with
one int output) and run in this process, as `python wf.py` would run them. Floor:
flyteagents under 0.1 s, at least 10x faster than flytekit.

Flyte 2: the same instant agent as a flyteagents.flyte2 task, and the same job as a
flyte-sdk AsyncConnector task (AsyncConnectorExecutorMixin), each run with
``flyte.with_runcontext(mode="local").run(task, x=1)``; an empty flyte task run the same
way shows what flyte's own local run costs. flyte-sdk's loop sleeps 3 s after every get,
even the one that answered SUCCEEDED. Floor: the flyteagents task under 0.1 s.

Prints the median wall time per task call for each, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

from _common import finish
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import kwtypes
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.extend.backend import base_agent as fk

import flyteagents as fa


@dataclass
class FaMeta(fa.ResourceMeta):
    job_id: str


@dataclass
class FkMeta(fk.ResourceMeta):
    job_id: str


class FaInstant(fa.AsyncAgentBase):
    def __init__(self) -> None:
        super().__init__(task_type_name="bench_instant", metadata_type=FaMeta)

    async def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kw: Any) -> FaMeta:
        return FaMeta(job_id="j")

    async def get(self, resource_meta: FaMeta, **kw: Any) -> fa.Resource:
        return fa.Resource(phase=TaskExecution.SUCCEEDED, outputs={"y": 1})

    async def delete(self, resource_meta: FaMeta, **kw: Any) -> None:
        pass


class FkInstant(fk.AsyncAgentBase):
    def __init__(self) -> None:
        super().__init__(task_type_name="bench_instant", metadata_type=FkMeta)

    async def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kw: Any) -> FkMeta:
        return FkMeta(job_id="j")

    async def get(self, resource_meta: FkMeta, **kw: Any) -> fk.Resource:
        return fk.Resource(phase=TaskExecution.SUCCEEDED, outputs={"y": 1})

    async def delete(self, resource_meta: FkMeta, **kw: Any) -> None:
        pass


def make_task(mixin: type, name: str) -> PythonTask:
    class InstantTask(mixin, PythonTask):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(
                task_type="bench_instant",
                name=name,
                task_config=None,
                interface=Interface(inputs=kwtypes(x=int), outputs=kwtypes(y=int)),
            )

    return InstantTask()


def measure(task: PythonTask, runs: int) -> float:
    assert task(x=1) == 1  # warm-up: imports, type engine caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        assert task(x=1) == 1
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flyte2_tasks() -> tuple[Any, Any, Any]:
    """The flyteagents Flyte 2 task, flyte-sdk's connector task and an empty flyte task; all instant."""
    import flyte
    from flyte.connectors import AsyncConnector, AsyncConnectorExecutorMixin, ConnectorRegistry
    from flyte.connectors import Resource as ConnectorResource
    from flyte.connectors import ResourceMeta as ConnectorMeta
    from flyte.extend import TaskTemplate
    from flyte.models import NativeInterface

    from flyteagents.flyte2 import AgentTask

    @dataclass
    class F2Meta(ConnectorMeta):
        job_id: str

    class F2Instant(AsyncConnector[F2Meta]):
        name = "bench instant"
        task_type_name = "bench_instant_v2"
        metadata_type = F2Meta

        async def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kw: Any) -> F2Meta:
            return F2Meta(job_id="j")

        async def get(self, resource_meta: F2Meta, **kw: Any) -> ConnectorResource:
            return ConnectorResource(phase=TaskExecution.SUCCEEDED, outputs={"y": 1})

        async def delete(self, resource_meta: F2Meta, **kw: Any) -> None:
            pass

    class ConnectorInstantTask(AsyncConnectorExecutorMixin, TaskTemplate):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(
                name="f2_connector_instant",
                interface=NativeInterface({"x": (int, NativeInterface.has_default)}, {"y": int}),
                task_type="bench_instant_v2",
                image=None,
            )

    ConnectorRegistry.register(F2Instant(), override=True)
    ours = AgentTask(make_task(fa.AsyncAgentExecutorMixin, "f2_fa_instant"))
    theirs = ConnectorInstantTask()
    env = flyte.TaskEnvironment(name="bench_empty")

    @env.task
    async def empty(x: int) -> int:
        return 1

    flyte.TaskEnvironment.from_task("bench_flyte2", ours, theirs)
    return ours, theirs, empty


def measure_flyte2(task: Any, runs: int) -> float:
    import flyte

    def once() -> None:
        outputs = flyte.with_runcontext(mode="local").run(task, x=1).outputs()
        assert outputs[0] in (1, (1,)), outputs  # flyte-sdk's mixin returns a one-tuple

    once()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--connector-runs", type=int, default=2, help="runs of flyte-sdk's path (3 s each)")
    args = parser.parse_args()

    fa.AgentRegistry.register(FaInstant())
    fk.AgentRegistry.register(FkInstant())
    ours = measure(make_task(fa.AsyncAgentExecutorMixin, "fa_instant"), args.runs)
    theirs = measure(make_task(fk.AsyncAgentExecutorMixin, "fk_instant"), args.runs)

    print(f"{'runner':<28}{'median wall time per task':>28}")
    print(f"{'flyteagents':<28}{ours * 1000:>25.1f} ms")
    print(f"{'flytekit AsyncAgentExecutor':<28}{theirs * 1000:>25.1f} ms")
    print(f"ratio flytekit / flyteagents: {theirs / ours:.1f}x   (floor: flyteagents < 100 ms and >= 10x)")
    held = ours < 0.1 and theirs / ours >= 10

    import flyte

    flyte.init()
    f2_ours, f2_theirs, f2_empty = flyte2_tasks()
    empty = measure_flyte2(f2_empty, args.runs)
    ours2 = measure_flyte2(f2_ours, args.runs)
    theirs2 = measure_flyte2(f2_theirs, args.connector_runs)
    print()
    print(f"{'Flyte 2, mode=local':<40}{'median wall time per run':>26}")
    print(f"{'an empty @env.task function, for scale':<40}{empty * 1000:>23.1f} ms")
    print(f"{'flyteagents.flyte2 AgentTask':<40}{ours2 * 1000:>23.1f} ms")
    print(f"{'flyte-sdk AsyncConnectorExecutorMixin':<40}{theirs2 * 1000:>23.1f} ms")
    print(f"ratio flyte-sdk / flyteagents: {theirs2 / ours2:.1f}x   (floor: flyteagents < 100 ms)")
    finish(held and ours2 < 0.1)


if __name__ == "__main__":
    main()
