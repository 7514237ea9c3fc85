"""A custom async agent and a custom sync agent in one workflow, run locally.

    python examples/custom_agent.py
    pyflyte run examples/custom_agent.py wf --n 4 --word flyte

The async agent "runs" a report job that takes ``duration`` seconds; its jobs live as
JSON files in a directory (``FLYTEAGENTS_EXAMPLE_JOBS``, default a temp dir), so any
process serving the agent can poll or delete a job another one created. Deletions
are appended to ``deletions.log`` there.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import FlyteContextManager, kwtypes, workflow
from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskTemplate
from flytekit.types.file import FlyteFile

from flyteagents import (
    AgentRegistry,
    AsyncAgentBase,
    AsyncAgentExecutorMixin,
    Resource,
    ResourceMeta,
    SyncAgentBase,
    SyncAgentExecutorMixin,
)


@dataclass
class Summary:
    n: int
    word: str


def jobs_dir() -> Path:
    path = Path(os.environ.get("FLYTEAGENTS_EXAMPLE_JOBS", Path(tempfile.gettempdir()) / "flyteagents-example-jobs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class ReportJob(ResourceMeta):
    job_id: str


class ReportAgent(AsyncAgentBase):
    """Starts a report job that finishes after the task's ``duration`` seconds."""

    name = "Example Report Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name="example_report", metadata_type=ReportJob)

    def create(
        self, task_template: TaskTemplate, output_prefix: str, inputs: LiteralMap | None = None, **kwargs: Any
    ) -> ReportJob:
        meta = kwargs.get("task_execution_metadata")
        # One job per task attempt: a repeated create finds the job it already started.
        job_id = _job_id(meta) if meta is not None else os.urandom(6).hex()
        path = jobs_dir() / f"{job_id}.json"
        if not path.exists():
            ctx = FlyteContextManager.current_context()
            values = TypeEngine.literal_map_to_kwargs(ctx, inputs, literal_types=task_template.interface.inputs)
            job = {
                "started": time.time(),
                "duration": task_template.custom["duration"],
                "n": values["n"],
                "word": values["word"],
                "output_prefix": output_prefix,
                "state": "RUNNING",
            }
            path.write_text(json.dumps(job))
        return ReportJob(job_id=job_id)

    def get(self, resource_meta: ReportJob, **kwargs: Any) -> Resource:
        path = jobs_dir() / f"{resource_meta.job_id}.json"
        job = json.loads(path.read_text())
        if job["state"] == "CANCELLED":
            return Resource(phase=TaskExecution.ABORTED, message="the job was cancelled")
        if time.time() - job["started"] < job["duration"]:
            return Resource(phase=TaskExecution.RUNNING, message=f"writing report {resource_meta.job_id}")
        n, word = job["n"], job["word"]
        if n < 0:
            return Resource(phase=TaskExecution.FAILED, message=f"cannot report on {n} items")
        report = Path(tempfile.mkdtemp()) / "report.txt"
        report.write_text(f"{word}\n" * n)
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            outputs={
                "count": n * 2,
                "greeting": f"hello {word}",
                "squares": [i * i for i in range(n)],
                "summary": Summary(n=n, word=word),
                "report": FlyteFile(str(report)),
            },
        )

    def delete(self, resource_meta: ReportJob, **kwargs: Any) -> None:
        path = jobs_dir() / f"{resource_meta.job_id}.json"
        job = json.loads(path.read_text())
        job["state"] = "CANCELLED"
        path.write_text(json.dumps(job))
        with open(jobs_dir() / "deletions.log", "a") as log:
            log.write(f"{resource_meta.job_id}\n")


def _job_id(meta: Any) -> str:
    tid = meta.task_execution_id
    ex = tid.node_execution_id.execution_id
    return f"{ex.name}-{tid.node_execution_id.node_id}-{tid.retry_attempt}"


class ShoutAgent(SyncAgentBase):
    """Answers at once: the text upper-cased, and its length."""

    name = "Example Shout Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name="example_shout")

    async def do(
        self, task_template: TaskTemplate, output_prefix: str, inputs: LiteralMap | None = None, **kwargs: Any
    ) -> Resource:
        text = inputs.literals["text"].scalar.primitive.string_value if inputs else ""
        return Resource(phase=TaskExecution.SUCCEEDED, outputs={"loud": text.upper(), "length": len(text)})


class ReportTask(AsyncAgentExecutorMixin, PythonTask):
    """A task whose report job runs on ReportAgent."""

    def __init__(self, name: str, duration: float = 0.0, **kwargs: Any) -> None:
        super().__init__(
            task_type="example_report",
            name=name,
            task_config=None,
            interface=Interface(
                inputs=kwtypes(n=int, word=str),
                outputs=kwtypes(count=int, greeting=str, squares=list[int], summary=Summary, report=FlyteFile),
            ),
            **kwargs,
        )
        self.duration = duration

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        return {"duration": self.duration}


class ShoutTask(SyncAgentExecutorMixin, PythonTask):
    """A task answered by ShoutAgent."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(
            task_type="example_shout",
            name=name,
            task_config=None,
            interface=Interface(inputs=kwtypes(text=str), outputs=kwtypes(loud=str, length=int)),
            **kwargs,
        )


AgentRegistry.register(ReportAgent())
AgentRegistry.register(ShoutAgent())

report = ReportTask(name="report", duration=float(os.environ.get("FLYTEAGENTS_EXAMPLE_DURATION", "0")))
shout = ShoutTask(name="shout")


@workflow
def wf(n: int = 3, word: str = "flyte") -> tuple[int, str, list[int], Summary, FlyteFile, str, int]:
    r = report(n=n, word=word)
    s = shout(text=r.greeting)
    return r.count, r.greeting, r.squares, r.summary, r.report, s.loud, s.length


if __name__ == "__main__":
    count, greeting, squares, summary, report_file, loud, length = wf()
    print(f"count={count} greeting={greeting!r} squares={squares} summary={asdict(summary)}")
    print(f"report={Path(report_file.download()).read_text().split()} loud={loud!r} length={length}")
