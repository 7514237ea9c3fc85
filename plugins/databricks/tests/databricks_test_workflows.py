"""Tasks and workflows the Databricks tests run; the local Jobs API server's runs import this module."""

from __future__ import annotations

import time

from flyteagents_databricks import Databricks, DatabricksNotebookTask
from flytekit import task, workflow

CLUSTER = {
    "new_cluster": {
        "spark_version": "15.4.x-scala2.12",
        "node_type_id": "m5.large",
        "num_workers": 1,
        "spark_env_vars": {"CLUSTER_OWNED": "yes"},
    }
}
config = Databricks(databricks_conf=CLUSTER, spark_conf={"spark.speculation": "false"})


@task(task_config=config)
def double(x: int) -> int:
    return 2 * x


@task(task_config=config)
def describe(n: int, word: str) -> str:
    return f"{word} x{n}"


@task(task_config=config)
def explode(x: int) -> int:
    if x > 0:
        raise ValueError(f"cannot handle x={x}")
    return x


@task(task_config=config)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


report = DatabricksNotebookTask(
    name="report_notebook",
    notebook_path="/Shared/report",
    task_config=Databricks(databricks_conf={"existing_cluster_id": "0101-abc"}),
    base_parameters={"mode": "full"},
    inputs={"day": str},
)


@workflow
def pipeline(x: int = 3, word: str = "flyte") -> str:
    return describe(n=double(x=x), word=word)


@workflow
def failing(x: int = 1) -> int:
    return explode(x=x)
