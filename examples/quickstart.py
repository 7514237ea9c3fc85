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

from flytekit import task, workflow

from flyteagents import sensor, sync_agent


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


@sync_agent(task_type="quickstart_summary")
async def summarize(text: str) -> str:
    """A one-line summary of a text, answered at once: a sync agent, no job to poll."""
    words = text.split()
    return f"{len(words)} words, starting with {words[0]!r}" if words else "empty"


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
