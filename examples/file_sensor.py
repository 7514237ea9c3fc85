"""Wait for files with FileSensor, then read them: a local directory or S3.

    python file_sensor.py                      # a temp directory; a writer thread adds the file
    python file_sensor.py s3://bucket/exports  # any fsspec URL; write part-0.csv there yourself

The sensor waits for ``part-*.csv`` under the location and reports it only once its size has
stopped changing between two pokes, so a file still being written is not picked up.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import fsspec
from flytekit import task, workflow

from flyteagents.sensor import FileSensor

wait_for_export = FileSensor(name="wait_for_export", stable=True, poke_interval=0.2, timeout=600)


@task
def count_rows(paths: list[str]) -> int:
    rows = 0
    for path in paths:
        with fsspec.open(path, "rt") as f:
            rows += sum(1 for _ in f)
    return rows


@workflow
def wf(pattern: str) -> int:
    found = wait_for_export(path=pattern)
    return count_rows(paths=found.paths)


def _write_later(directory: Path) -> None:
    time.sleep(0.5)
    (directory / "part-0.csv").write_text("".join(f"{i},row\n" for i in range(3)))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        location = sys.argv[1].rstrip("/")
    else:
        directory = Path(tempfile.mkdtemp())
        threading.Thread(target=_write_later, args=(directory,), daemon=True).start()
        location = str(directory)
    print(f"rows: {wf(pattern=f'{location}/part-*.csv')}")
