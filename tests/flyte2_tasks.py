"""Flyte 2 tasks on flyteagents for the tests: sensors of each kind and an async agent task.

Imported by tests/test_flyte2.py and by the `flyteagents serve` it starts (FLYTEAGENTS_MODULES),
whose sensor engine imports these sensors by module and name, as it would a user's module.

The agent's jobs are JSON files in ``FLYTEAGENTS_F2_JOBS`` (a temp dir by default), so a test can
watch a job the local run or the service created, and see it deleted (``deletions.log``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flyte
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface

from flyteagents import AgentRegistry, AsyncAgentBase, AsyncAgentExecutorMixin, Resource, ResourceMeta
from flyteagents.flyte2 import AgentTask, BaseSensor, FileSensor, HTTPSensor, TimeSensor, sensor, split_options

JOB_TYPE = "flyte2_test_job"


def jobs_dir() -> Path:
    path = Path(os.environ.get("FLYTEAGENTS_F2_JOBS", Path(tempfile.gettempdir()) / "flyteagents-f2-jobs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Job(ResourceMeta):
    job_id: str


class JobAgent(AsyncAgentBase):
    """Doubles ``x`` in a job that takes the task's ``duration`` seconds."""

    name = "Flyte 2 Test Job Agent"

    def __init__(self) -> None:
        super().__init__(task_type_name=JOB_TYPE, metadata_type=Job)

    def create(self, task_template: Any, output_prefix: str, inputs: Any = None, **kwargs: Any) -> Job:
        x = inputs.literals["x"].scalar.primitive.integer if inputs is not None else 0
        job_id = os.urandom(6).hex()
        job = {"x": x, "started": time.time(), "duration": task_template.custom["duration"], "state": "RUNNING"}
        (jobs_dir() / f"{job_id}.json").write_text(json.dumps(job))
        return Job(job_id=job_id)

    def get(self, resource_meta: Job, **kwargs: Any) -> Resource:
        path = jobs_dir() / f"{resource_meta.job_id}.json"
        job = json.loads(path.read_text())
        if job["state"] == "CANCELLED":
            return Resource(phase=TaskExecution.ABORTED, message="cancelled")
        if time.time() - job["started"] < job["duration"]:
            return Resource(phase=TaskExecution.RUNNING, message="doubling")
        return Resource(phase=TaskExecution.SUCCEEDED, outputs={"doubled": 2 * job["x"]})

    def delete(self, resource_meta: Job, **kwargs: Any) -> None:
        path = jobs_dir() / f"{resource_meta.job_id}.json"
        job = json.loads(path.read_text())
        job["state"] = "CANCELLED"
        path.write_text(json.dumps(job))
        with open(jobs_dir() / "deletions.log", "a") as log:
            log.write(resource_meta.job_id + "\n")


AgentRegistry.register(JobAgent(), override=True)


class DoubleTask(AsyncAgentExecutorMixin, PythonTask):
    """flytekit side: input ``x: int``, output ``doubled: int``, run by JobAgent."""

    def __init__(self, name: str, duration: float = 0.0, **kwargs: Any) -> None:
        self.duration = duration
        super().__init__(
            task_type=JOB_TYPE,
            name=name,
            task_config=None,
            interface=Interface(inputs={"x": int}, outputs={"doubled": int}),
            **kwargs,
        )

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        return {"duration": self.duration}


class Double(AgentTask):
    """The Flyte 2 task of DoubleTask, as a plugin would write it."""

    def __init__(self, name: str, duration: float = 0.0, **kwargs: Any) -> None:
        options, rest = split_options(kwargs)
        super().__init__(DoubleTask(name=name, duration=duration, **rest), **options)


@dataclass
class Found:
    key: str = ""
    size: int = -1


class KeySensor(BaseSensor):
    """Waits for ``<prefix>.ready``; outputs its path and size. Counts its pokes in ``<prefix>.pokes``."""

    def poke(self, prefix: str) -> Found | None:
        with open(prefix + ".pokes", "a") as log:
            log.write(f"{time.time()}\n")
        path = Path(prefix + ".ready")
        return Found(key=str(path), size=path.stat().st_size) if path.exists() else None


@sensor(poke_interval=0.05, timeout=30)
def marker_written(directory: str, name: str) -> bool:
    return (Path(directory) / name).exists()


wait_for_key = KeySensor(name="wait_for_key", poke_interval=0.05, timeout=30)
wait_softly = KeySensor(name="wait_softly", poke_interval=0.05, timeout=0.3, soft_fail=True)
wait_briefly = KeySensor(name="wait_briefly", poke_interval=0.05, timeout=0.3)
wait_for_file = FileSensor(name="wait_for_file", poke_interval=0.05, timeout=30, min_size=1)
wait_a_moment = TimeSensor(name="wait_a_moment", delay=0.3, poke_interval=0.05)
wait_for_api = HTTPSensor(name="wait_for_api", poke_interval=0.05, timeout=30)
double = Double(name="double")
slow_double = Double(name="slow_double", duration=600)
too_slow_double = Double(name="too_slow_double", duration=600, timeout=0.3, retries=0)

sensors_env = flyte.TaskEnvironment.from_task(
    "flyteagents_sensors",
    wait_for_key,
    wait_softly,
    wait_briefly,
    wait_for_file,
    marker_written,
    wait_a_moment,
    wait_for_api,
)
agents_env = flyte.TaskEnvironment.from_task("flyteagents_agents", double, slow_double, too_slow_double)
env = flyte.TaskEnvironment(name="flyteagents_wf", depends_on=[sensors_env, agents_env])


@env.task
async def pipeline(prefix: str, x: int) -> tuple[str, int, int]:
    """A sensor, then a file sensor on what it found, then an agent task on its size."""
    key, size = await wait_for_key(prefix=prefix)
    path, _ = await wait_for_file(path=key)
    doubled = await double(x=x + size)
    return path, size, doubled
