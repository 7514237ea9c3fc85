"""Hold a workflow back: until a moment, or for a while after a task started. No external calls.

python time_sensor.py            # waits 1 s after the sensor starts
python time_sensor.py 2026-12-01T14:30:00+00:00
"""

from __future__ import annotations

import sys
from datetime import timedelta

from flytekit import task, workflow

from flyteagents.sensor import TimeSensor

settle = TimeSensor(name="settle", delay=timedelta(seconds=1))


@task
def report(target: str) -> str:
    return f"waited until {target}"


@workflow
def wf() -> str:
    return report(target=settle().target)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(report(target=TimeSensor(name="until", until=sys.argv[1])()))
    else:
        print(wf())
