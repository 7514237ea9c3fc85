"""BigQueryAgent against Crucible, a third-party BigQuery REST emulator (PyPI ``crucible-emulator``).

Crucible translates BigQuery SQL to DuckDB with sqlglot and serves jobs.insert/get/cancel,
getQueryResults, tables.get and tabledata.list; it checks no credentials. It is given to
the agent as users give emulators: ``BIGQUERY_EMULATOR_HOST=host:port`` and no credentials
at all. It does not support query parameters (``@name``), so the parameter tests run
against ``bq_emulator.py`` only.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from flyteagents_bigquery import BigQueryAgent, BigQueryConfig, BigQueryJob, BigQueryTask, ClientCache
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import task, workflow
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from helpers import execution, template_of

from flyteagents import AgentRegistry, Resource, is_terminal_phase
from flyteagents.testing import ServerProcess

PROJECT = "test-project"
CRUCIBLE = shutil.which("crucible", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(CRUCIBLE is None, reason="crucible-emulator is not installed (Python 3.11+)")


class Crucible(ServerProcess):
    name = "crucible"

    def command(self) -> list[str]:
        assert CRUCIBLE is not None
        return [CRUCIBLE, "serve", "--dialect", "bigquery", "--host", self.host, "--port", str(self.port)]


@pytest.fixture(scope="module")
def crucible() -> Iterator[Crucible]:
    with Crucible(startup_timeout=60) as server:
        client = bigquery.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": f"http://{server.host}:{server.port}"},
        )
        client.create_dataset("demo", exists_ok=True)
        client.query(
            "CREATE TABLE demo.trips AS SELECT id, CONCAT('city', CAST(MOD(id, 3) AS STRING)) AS city,"
            " id * 1.5 AS miles FROM UNNEST(GENERATE_ARRAY(0, 19)) AS id"
        ).result(timeout=30)
        client.close()
        yield server


@pytest.fixture
def on_crucible(crucible: Crucible, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> BigQueryAgent:
    """The agent as a user points it at an emulator: host:port, and no credentials anywhere."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"{crucible.host}:{crucible.port}")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("FLYTEAGENTS_BIGQUERY_API_ENDPOINT", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    agent = BigQueryAgent(clients=ClientCache(), timeout=10)
    AgentRegistry.register(agent, override=True)
    return agent


def query_task(query: str) -> BigQueryTask:
    return BigQueryTask(
        name=f"q_{uuid.uuid4().hex[:8]}",
        query_template=query,
        task_config=BigQueryConfig(project=PROJECT, location="US"),
        output_structured_dataset_type=pd.DataFrame,
    )


def poll(agent: BigQueryAgent, meta: BigQueryJob) -> Resource:
    for _ in range(30):
        resource = agent.get(BigQueryJob.decode(meta.encode()))
        if is_terminal_phase(resource.phase):
            return resource
    raise AssertionError(f"job {meta.job_id} did not finish")


busiest_cities = BigQueryTask(
    name="busiest_cities_crucible",
    query_template="SELECT city, COUNT(*) AS trips FROM demo.trips WHERE miles >= 6 GROUP BY city ORDER BY city",
    task_config=BigQueryConfig(project=PROJECT, location="US"),
    output_structured_dataset_type=pd.DataFrame,
)


@task
def report(df: pd.DataFrame) -> str:
    return ", ".join(f"{row.city}={row.trips}" for row in df.itertuples())


@workflow
def city_report() -> str:
    return report(df=busiest_cities())


def test_rows_reach_the_next_task(on_crucible: BigQueryAgent) -> None:
    assert city_report() == "city0=5, city1=6, city2=5"


def test_a_repeated_create_reattaches_to_the_same_job(on_crucible: BigQueryAgent) -> None:
    t = query_task("SELECT 42 AS answer")
    first = on_crucible.create(template_of(t), "/tmp/out", None, execution("crucible-again"))
    again = on_crucible.create(template_of(t), "/tmp/out", None, execution("crucible-again"))
    assert again.job_id == first.job_id
    done = poll(on_crucible, again)
    assert done.phase == TaskExecution.SUCCEEDED, done.message
    assert done.outputs.literals["results"].scalar.structured_dataset.uri.startswith(f"bq://{PROJECT}:")


def test_a_query_error_fails_the_task_with_its_message(on_crucible: BigQueryAgent) -> None:
    meta = on_crucible.create(
        template_of(query_task("SELECT nope FROM demo.no_such_table")), "/tmp/out", None, execution("crucible-err")
    )
    failed = poll(on_crucible, meta)
    assert failed.phase == TaskExecution.FAILED
    assert "no_such_table" in (failed.message or ""), failed.message
