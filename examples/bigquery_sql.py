"""A BigQuery query in a workflow: typed parameters in, a pandas DataFrame out to the next task.

    python examples/bigquery_sql.py
    pyflyte run examples/bigquery_sql.py city_report --min_miles 6 --cities '["city0", "city2"]'

With neither ``BIGQUERY_EMULATOR_HOST`` nor ``FLYTEAGENTS_BIGQUERY_API_ENDPOINT`` set,
running the file starts the local BigQuery server from ``plugins/bigquery/tests`` (DuckDB
behind the BigQuery REST API), fills ``demo.trips`` and points Application Default
Credentials at a key made for it. Set ``BQ_PROJECT`` and real credentials, and create
``demo.trips``, to run on BigQuery.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
from flyteagents_bigquery import BigQueryConfig, BigQueryTask
from flytekit import kwtypes, task, workflow
from google.cloud import bigquery

PROJECT = os.environ.get("BQ_PROJECT", "example-project")

trips_by_city = BigQueryTask(
    name="trips_by_city",
    query_template="""
        SELECT city, count(*) AS trips, sum(miles) AS miles
        FROM demo.trips
        WHERE miles >= @min_miles AND city IN UNNEST(@cities)
        GROUP BY city
        ORDER BY trips DESC, city
    """,
    task_config=BigQueryConfig(
        project=PROJECT,
        location="US",
        query_job_config=bigquery.QueryJobConfig(labels={"team": "examples"}, maximum_bytes_billed=10**9),
    ),
    inputs=kwtypes(min_miles=float, cities=list[str]),
    output_structured_dataset_type=pd.DataFrame,
)


@task
def summarize(df: pd.DataFrame) -> str:
    top = df.iloc[0]
    return f"{len(df)} cities; busiest {top['city']} with {top['trips']} trips, {df['miles'].sum():.1f} miles in all"


@workflow
def city_report(min_miles: float = 6.0, cities: list[str] = ["city0", "city2"]) -> str:  # noqa: B006
    return summarize(df=trips_by_city(min_miles=min_miles, cities=cities))


def start_local_bigquery() -> object:
    """Start the test server, fill demo.trips, and point the client and ADC at it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "bigquery" / "tests"))
    from bq_emulator import BigQueryEmulator

    server = BigQueryEmulator(pending_polls=1, running_polls=2).start()
    server.sql(
        "CREATE SCHEMA demo; CREATE TABLE demo.trips AS"
        " SELECT range AS id, 'city' || (range % 3) AS city, range * 1.5 AS miles FROM range(20)"
    )
    key = Path(tempfile.mkdtemp()) / "service-account.json"
    key.write_text(json.dumps(server.service_account_info(PROJECT)))
    os.environ["BIGQUERY_EMULATOR_HOST"] = server.url
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(key)
    return server


if __name__ == "__main__":
    elsewhere = os.environ.get("BIGQUERY_EMULATOR_HOST") or os.environ.get("FLYTEAGENTS_BIGQUERY_API_ENDPOINT")
    local = start_local_bigquery() if not elsewhere else None
    try:
        print(city_report())
    finally:
        if local is not None:
            local.stop()  # type: ignore[attr-defined]
