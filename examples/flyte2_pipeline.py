"""A Flyte 2 pipeline on flyteagents: a file sensor, then a BigQuery query, then a plain task.

    python examples/flyte2_pipeline.py

Written with the ``flyte`` SDK (Flyte 2): the sensor and the query are tasks of their own
``TaskEnvironment``s, called from a ``pipeline`` task as any task is. Run locally, the
sensor is poked and the query job driven in this process by the same agents
``flyteagents serve`` runs for a Flyte 2 cluster.

The file appears a second after the run starts (written by this script). With
``BIGQUERY_EMULATOR_HOST`` unset, the script starts the local BigQuery server from
``plugins/bigquery/tests`` (DuckDB behind the BigQuery REST API), as
``examples/bigquery_sql.py`` does. Set ``BQ_PROJECT`` and real credentials, and create
``demo.trips``, to run on BigQuery.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import flyte
import pandas as pd
from bigquery_sql import start_local_bigquery
from flyteagents_bigquery.flyte2 import BigQueryConfig, BigQueryTask

from flyteagents.flyte2 import FileSensor

PROJECT = os.environ.get("BQ_PROJECT", "example-project")

wait_for_threshold = FileSensor(name="wait_for_threshold", min_size=1, poke_interval=0.2, timeout=60)

trips_by_city = BigQueryTask(
    name="f2_trips_by_city",
    query_template="""
        SELECT city, count(*) AS trips, sum(miles) AS miles
        FROM demo.trips
        WHERE miles >= @min_miles
        GROUP BY city
        ORDER BY trips DESC, city
    """,
    task_config=BigQueryConfig(project=PROJECT, location="US"),
    inputs={"min_miles": float},
    output_structured_dataset_type=pd.DataFrame,
    retries=1,
)

sensors = flyte.TaskEnvironment.from_task("sensors", wait_for_threshold)
bigquery = flyte.TaskEnvironment.from_task("bigquery", trips_by_city)
env = flyte.TaskEnvironment(name="pipeline", depends_on=[sensors, bigquery])


@env.task
def read_threshold(path: str) -> float:
    return float(Path(path).read_text())


@env.task
async def pipeline(threshold_file: str) -> str:
    path, _ = await wait_for_threshold(path=threshold_file)
    min_miles = await read_threshold.aio(path)
    rows = await trips_by_city(min_miles=min_miles)
    top = rows.iloc[0]
    return f"{len(rows)} cities over {min_miles} miles; busiest {top['city']} with {top['trips']} trips"


def write_later(path: Path, text: str, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), path.write_text(text)), daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    local = start_local_bigquery() if not os.environ.get("BIGQUERY_EMULATOR_HOST") else None
    try:
        flyte.init()
        threshold = Path(tempfile.mkdtemp()) / "threshold.txt"
        write_later(threshold, "6.0", 1.0)
        run = flyte.with_runcontext(mode="local").run(pipeline, threshold_file=str(threshold))
        print(run.outputs()[0])
    finally:
        if local is not None:
            local.stop()  # type: ignore[attr-defined]
