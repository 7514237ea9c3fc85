"""The getting-started workflow: a sensor waits for a file, then a sync agent answers.

Locally (every agent runs in this process):

    python quickstart.py

Against a running agent service (the sensor engine and the sync agent run in the service):

    flyteagents serve --port 8000 --metrics-port 9090 --modules quickstart
    FLYTEAGENTS_ENDPOINT=127.0.0.1:8000 python quickstart.py
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import kwtypes, task, workflow
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskTemplate

from flyteagents import AgentRegistry, Resource, SyncAgentBase, SyncAgentExecutorMixin, sensor


@dataclass
class Landed:
    """What the sensor hands on once the file is there."""

    path: str = ""
    size: int = 0


@sensor(poke_interval=0.2, timeout=120)
def file_landed(path: str) -> Landed | None:
    """Done once ``path`` exists and is not empty (a plain def: its blocking stat runs on the worker pool)."""
    file = Path(path)
    if not file.exists() or file.stat().st_size == 0:
        return None
    return Landed(path=path, size=file.stat().st_size)


class SummaryAgent(SyncAgentBase):
    """Answers at once with a one-line summary of a text."""

    name = "Summary Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name="quickstart_summary")

    async def do(
        self, task_template: TaskTemplate, output_prefix: str, inputs: LiteralMap | None = None, **kwargs: Any
    ) -> Resource:
        text = inputs.literals["text"].scalar.primitive.string_value if inputs else ""
        words = text.split()
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            outputs={"summary": f"{len(words)} words, starting with {words[0]!r}" if words else "empty"},
        )


class SummaryTask(SyncAgentExecutorMixin, PythonTask):
    def __init__(self, name: str) -> None:
        super().__init__(
            task_type="quickstart_summary",
            name=name,
            task_config=None,
            interface=Interface(inputs=kwtypes(text=str), outputs=kwtypes(summary=str)),
        )


AgentRegistry.register(SummaryAgent())
summarize = SummaryTask(name="summarize")


@task
def read(path: str) -> str:
    return Path(path).read_text()


@workflow
def wf(path: str) -> str:
    landed = file_landed(path=path)
    return summarize(text=read(path=landed.path))


def _write_later(path: Path) -> None:
    time.sleep(1)
    path.write_text("agents run flyte tasks without a pod per task\n")


if __name__ == "__main__":
    target = Path(tempfile.mkdtemp()) / "report.txt"
    threading.Thread(target=_write_later, args=(target,), daemon=True).start()
    print(f"waiting for {target} ...", file=sys.stderr)
    print(wf(path=str(target)))
