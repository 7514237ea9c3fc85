"""Flyte 2 Databricks function tasks for tests/test_flyte2.py; the local Jobs API server's runs import this module."""

from __future__ import annotations

import flyte
from flyteagents_databricks.flyte2 import Databricks

CLUSTER = {
    "new_cluster": {
        "spark_version": "15.4.x-scala2.12",
        "node_type_id": "m5.large",
        "num_workers": 1,
        "spark_env_vars": {"CLUSTER_OWNED": "yes"},
    }
}

spark = flyte.TaskEnvironment(name="f2_spark", plugin_config=Databricks(databricks_conf=CLUSTER))
env = flyte.TaskEnvironment(name="f2_spark_flow", depends_on=[spark])


@spark.task
def double(x: int) -> int:
    return 2 * x


@spark.task
def explode(x: int) -> int:
    raise ValueError(f"cannot handle x={x}")


@env.task
async def describe(x: int) -> str:
    doubled = await double.aio(x)
    return f"doubled on Databricks: {doubled}"
