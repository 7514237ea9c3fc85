"""Local run of an instantly-finishing async task: flyteagents vs flytekit's own agent mixin.

    .venv/bin/python benchmarks/local_latency.py [--runs N]

Both tasks have the same agent (create returns a job id, get answers SUCCEEDED with one
int output) and run in this process, as `python wf.py` would run them. Prints the median
wall time per task call for each and the ratio. Floor: flyteagents under 0.1 s, at least
10x faster than flytekit.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    fa.AgentRegistry.register(FaInstant())
    fk.AgentRegistry.register(FkInstant())
    ours = measure(make_task(fa.AsyncAgentExecutorMixin, "fa_instant"), args.runs)
    theirs = measure(make_task(fk.AsyncAgentExecutorMixin, "fk_instant"), args.runs)

    print(f"{'runner':<28}{'median wall time per task':>28}")
    print(f"{'flyteagents':<28}{ours * 1000:>25.1f} ms")
    print(f"{'flytekit AsyncAgentExecutor':<28}{theirs * 1000:>25.1f} ms")
    print(f"ratio flytekit / flyteagents: {theirs / ours:.1f}x   (floor: flyteagents < 100 ms and >= 10x)")


if __name__ == "__main__":
    main()
