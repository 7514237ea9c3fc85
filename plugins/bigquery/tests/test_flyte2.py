"""BigQueryTask from a Flyte 2 TaskEnvironment: locally, and through `flyteagents serve` over v2."""

from __future__ import annotations

import asyncio

import flyte
import pandas as pd
import pytest
from flyteagents_bigquery.flyte2 import BigQueryConfig, BigQueryTask

from flyteagents.testing.flyte2 import AgentService, Flyte2Failure, run_on_service, serialize

PROJECT = "test-project"

trips_by_city = BigQueryTask(
    name="f2_trips_by_city",
    query_template="""
        SELECT city, count(*) AS trips, sum(miles) AS miles
        FROM demo.trips WHERE miles >= @min_miles
        GROUP BY city ORDER BY city
    """,
    task_config=BigQueryConfig(project=PROJECT, location="US"),
    inputs={"min_miles": float},
    output_structured_dataset_type=pd.DataFrame,
    retries=2,
)
bigquery_env = flyte.TaskEnvironment.from_task("f2_bigquery", trips_by_city)
env = flyte.TaskEnvironment(name="f2_report", depends_on=[bigquery_env])


@env.task
async def busiest(min_miles: float) -> str:
    rows = await trips_by_city(min_miles=min_miles)
    return str(rows.sort_values(["trips", "city"], ascending=[False, True]).iloc[0]["city"])


def expected_rows(min_miles: float) -> dict[str, int]:
    ids = [i for i in range(20) if i * 1.5 >= min_miles]
    return {f"city{c}": sum(1 for i in ids if i % 3 == c) for c in range(3)}


@pytest.fixture(scope="module", autouse=True)
def initialized():
    flyte.init()


def test_the_template_is_the_flytekit_tasks(emulator):
    template = serialize(trips_by_city)
    assert template.type == "bigquery_query_job_task"
    assert template.sql.statement.startswith("SELECT city") and "@min_miles" in template.sql.statement
    assert dict(template.custom)["ProjectID"] == PROJECT and dict(template.custom)["Location"] == "US"
    assert template.metadata.retries.retries == 2
    assert [v.key for v in template.interface.outputs.variables] == ["results"]


def test_a_local_run_queries_and_the_next_task_reads_the_rows(emulator):
    jobs = emulator.count("POST", "/jobs")
    rows = flyte.with_runcontext(mode="local").run(trips_by_city, min_miles=6.0).outputs()[0]
    assert dict(zip(rows["city"], rows["trips"], strict=True)) == expected_rows(6.0)
    top = flyte.with_runcontext(mode="local").run(busiest, min_miles=6.0).outputs()[0]
    counts = expected_rows(6.0)
    assert top == min(counts, key=lambda c: (-counts[c], c))
    assert emulator.count("POST", "/jobs") - jobs == 2


def test_a_failed_query_fails_the_local_run_with_bigquerys_message(emulator):
    broken = BigQueryTask(
        name="f2_broken",
        query_template="SELECT nope FROM demo.missing",
        task_config=BigQueryConfig(project=PROJECT, location="US"),
    )
    flyte.TaskEnvironment.from_task("f2_broken_env", broken)
    with pytest.raises(Exception, match="missing"):
        flyte.with_runcontext(mode="local").run(broken)


@pytest.fixture(scope="module")
def service(emulator):
    with AgentService() as svc:  # the installed plugin, found through its entry point
        yield svc


def test_through_the_service_over_v2_the_results_reach_the_next_task(service, emulator):
    rows = asyncio.run(run_on_service(service.address, trips_by_city, min_miles=3.0))
    assert isinstance(rows, pd.DataFrame)  # read from bq:// by the plugin's Flyte 2 decoder
    assert dict(zip(rows["city"], rows["trips"], strict=True)) == expected_rows(3.0)


def test_a_failed_query_through_the_service_is_a_failed_task(service, emulator):
    broken = BigQueryTask(
        name="f2_broken_remote",
        query_template="SELECT nope FROM demo.missing",
        task_config=BigQueryConfig(project=PROJECT, location="US"),
    )
    with pytest.raises(Flyte2Failure, match="missing") as failed:
        asyncio.run(run_on_service(service.address, broken))
    assert failed.value.phase != 0
