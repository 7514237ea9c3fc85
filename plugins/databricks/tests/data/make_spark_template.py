"""Regenerate spark_databricks_template.json: a task template made by flytekitplugins-spark's DatabricksV2.

    python plugins/databricks/tests/data/make_spark_template.py   (needs flytekitplugins-spark)

The tests check that DatabricksAgent serves this recorded template, so the compatibility
check runs even where flytekitplugins-spark (and the pyspark it pulls in) is not installed.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from flytekit import task
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.tools.translator import get_serializable
from flytekitplugins.spark import DatabricksV2
from google.protobuf.json_format import MessageToJson

CONF = DatabricksV2(
    spark_conf={"spark.driver.memory": "1g"},
    databricks_conf={
        "run_name": "flytekit databricks task",
        "new_cluster": {
            "spark_version": "13.3.x-scala2.12",
            "node_type_id": "m5.xlarge",
            "num_workers": 2,
            "spark_env_vars": {"FROM_CONF": "1"},
        },
        "timeout_seconds": 3600,
    },
    databricks_instance="dbc-example.cloud.databricks.com",
    databricks_token_secret="team-databricks-token",
)


@task(task_config=CONF, container_image="ghcr.io/example/spark-task:1.0")
def spark_double(x: int) -> int:
    return 2 * x


def template_json() -> str:
    """The serialized TaskTemplate of ``spark_double`` as JSON."""
    settings = SerializationSettings(
        ImageConfig(default_image=Image(name="default", fqn="ghcr.io/example/spark-task", tag="1.0"))
    )
    entity = get_serializable(OrderedDict(), settings, spark_double)
    return MessageToJson(entity.template.to_flyte_idl())


if __name__ == "__main__":
    out = Path(__file__).with_name("spark_databricks_template.json")
    out.write_text(template_json() + "\n")
    print(f"wrote {out}")
