"""Python functions and a notebook run on Databricks, in one workflow, run locally.

    python examples/databricks_task.py
    pyflyte run examples/databricks_task.py wf --text "to be or not to be"

With ``FLYTEAGENTS_DATABRICKS_INSTANCE`` unset, the example starts the local Jobs API 2.1
server from ``plugins/databricks/tests/jobs_server.py`` (the one the tests use): each run's
``pyflyte-execute`` command really executes there, as the task's image would on a cluster,
reading ``inputs.pb`` and writing ``outputs.pb``. Against a real workspace, set
``FLYTEAGENTS_DATABRICKS_INSTANCE=<name>.cloud.databricks.com``, put a personal access token
in ``FLYTEAGENTS_SECRET_DATABRICKS_TOKEN`` (or mount it as the secret ``databricks-token``),
build the image named below, and use a remote ``--raw-output-data-prefix`` (s3://...).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flyteagents_databricks import Databricks, DatabricksNotebookTask
from flytekit import task, workflow

CLUSTER = {
    "new_cluster": {
        "spark_version": "15.4.x-scala2.12",
        "node_type_id": "m5.large",
        "num_workers": 1,
    },
    "timeout_seconds": 600,
}


@dataclass
class WordStats:
    words: int
    distinct: int
    longest: str


@task(task_config=Databricks(databricks_conf=CLUSTER), container_image="ghcr.io/example/flyte-databricks:1.0")
def word_stats(text: str) -> WordStats:
    """Runs on a Databricks cluster started from the task's image."""
    words = text.split()
    return WordStats(words=len(words), distinct=len(set(words)), longest=max(words, key=len) if words else "")


@task(task_config=Databricks(databricks_conf=CLUSTER), container_image="ghcr.io/example/flyte-databricks:1.0")
def ratio(stats: WordStats) -> float:
    """A second run, fed the first one's outputs."""
    return round(stats.distinct / stats.words, 3) if stats.words else 0.0


refresh_dashboard = DatabricksNotebookTask(
    name="refresh_dashboard",
    notebook_path="/Shared/dashboards/refresh",
    task_config=Databricks(databricks_conf={"existing_cluster_id": "0101-000000-example"}),
    base_parameters={"mode": "incremental"},
    inputs={"longest": str},
)


@workflow
def wf(text: str = "to be or not to be that is the question") -> tuple[WordStats, float]:
    stats = word_stats(text=text)
    refresh_dashboard(longest=stats.longest)
    return stats, ratio(stats=stats)


def start_local_workspace() -> Any:
    """Start the tests' Jobs API server on a free port and point the agent at it."""
    root = Path(__file__).resolve().parent.parent
    path = root / "plugins" / "databricks" / "tests" / "jobs_server.py"
    spec = importlib.util.spec_from_file_location("databricks_jobs_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    token = "dapi-local-example"
    # The "cluster" imports this file's tasks by module name, as an image with the code would.
    code = [str(Path(__file__).resolve().parent), str(Path.cwd())]
    server = module.JobsServer(module.Workspace({token}, code_path=code)).serve_in_thread()
    os.environ["FLYTEAGENTS_DATABRICKS_INSTANCE"] = server.instance
    os.environ["FLYTEAGENTS_SECRET_DATABRICKS_TOKEN"] = token
    print(f"[example] local Databricks Jobs API at {server.instance}", file=sys.stderr)
    return server


if not os.environ.get("FLYTEAGENTS_DATABRICKS_INSTANCE"):
    # The runs re-import this module with the variable inherited, so they start no server.
    _server = start_local_workspace()


if __name__ == "__main__":
    stats, r = wf()
    print(f"stats={stats} distinct/words={r}")
