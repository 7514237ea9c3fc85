"""BigQueryAgent against the local BigQuery server through the real google-cloud-bigquery client."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter

import pandas as pd
import pytest
from flyteagents_bigquery import BigQueryAgent, BigQueryConfig, BigQueryJob, BigQueryTask, ClientCache
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import kwtypes
from google.cloud import bigquery
from helpers import execution, inputs_of, template_of

from flyteagents import AgentRunner, ExternalServiceError, InvalidTaskError, Resource, is_terminal_phase

PROJECT = "test-project"


@pytest.fixture
def agent(emulator) -> BigQueryAgent:
    return BigQueryAgent(clients=ClientCache(), timeout=5, create_retry_deadline=3)


def poll(agent: BigQueryAgent, meta: BigQueryJob, limit: int = 20) -> list[Resource]:
    seen = []
    for _ in range(limit):
        resource = agent.get(BigQueryJob.decode(meta.encode()))
        seen.append(resource)
        if is_terminal_phase(resource.phase):
            return seen
    raise AssertionError(f"job {meta.job_id} did not finish: {[r.phase_name for r in seen]}")


def task(query: str, config: BigQueryConfig | None = None, **inputs: type) -> BigQueryTask:
    return BigQueryTask(
        name=f"q_{uuid.uuid4().hex[:8]}",
        query_template=query,
        task_config=config or BigQueryConfig(project=PROJECT, location="US"),
        inputs=kwtypes(**inputs) if inputs else None,
        output_structured_dataset_type=pd.DataFrame,
    )


def read(emulator, uri: str) -> pd.DataFrame:
    from flyteagents_bigquery import parse_bq_uri

    ref = parse_bq_uri(uri)
    return emulator.db.execute(f'SELECT * FROM "{ref.dataset_id}"."{ref.table_id}"').df()


def test_job_goes_pending_running_done_with_results_info_and_link(agent, emulator):
    t = task(
        "SELECT city, count(*) AS n FROM demo.trips WHERE miles >= @min GROUP BY city ORDER BY city",
        min=float,
    )
    meta = agent.create(template_of(t), "/tmp/out", inputs_of(t, min=15.0), execution("run1"))
    seen = poll(agent, meta)
    assert [r.phase_name for r in seen] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    done = seen[-1]
    uri = done.outputs.literals["results"].scalar.structured_dataset.uri
    assert uri.startswith(f"bq://{PROJECT}:")
    rows = read(emulator, uri)
    expected = Counter(f"city{i % 3}" for i in range(20) if i * 1.5 >= 15.0)
    assert dict(zip(rows["city"], rows["n"], strict=True)) == expected
    assert done.custom_info["total_bytes_processed"] > 0
    assert done.custom_info["slot_millis"] >= 1
    assert done.log_links[0].name == "BigQuery Console"
    assert f"j=bq:US:{meta.job_id}" in done.log_links[0].uri
    assert agent.clients.created == 1  # one client for create and every get


def test_repeated_create_reattaches_to_one_job(agent, emulator):
    t = task("SELECT count(*) AS n FROM demo.trips")
    template, meta_in = template_of(t), execution("dup-run")
    inserts_before = emulator.count("POST", "/jobs")
    first = agent.create(template, "/tmp/out", None, meta_in)
    again = agent.create(template, "/tmp/out", None, meta_in)
    assert first == again
    assert emulator.count("POST", "/jobs") - inserts_before == 2  # the second insert was answered 409
    assert sum(1 for (_, job_id) in emulator.jobs if job_id == first.job_id) == 1
    retried = agent.create(template, "/tmp/out", None, execution("dup-run", retry=1))
    assert retried.job_id != first.job_id
    assert poll(agent, first)[-1].phase == TaskExecution.SUCCEEDED


def test_delete_cancels_and_the_job_reports_aborted(agent, emulator):
    t = task("SELECT * FROM demo.trips")
    meta = agent.create(template_of(t), "/tmp/out", None, execution("cancel-run"))
    agent.delete(meta)
    last = poll(agent, meta)[-1]
    assert last.phase == TaskExecution.ABORTED
    assert "cancelled" in last.message
    assert emulator.jobs[(PROJECT, meta.job_id)].error["reason"] == "stopped"
    agent.delete(meta)  # deleting a finished job is not an error


def test_invalid_sql_fails_with_bigquerys_message(agent):
    t = task("SELEC id FROM demo.trips")
    meta = agent.create(template_of(t), "/tmp/out", None, execution("bad-sql"))
    last = poll(agent, meta)[-1]
    assert last.phase == TaskExecution.FAILED
    assert 'syntax error at or near "SELEC"' in last.message
    assert "invalidQuery" in last.message


def test_unknown_table_fails_with_message(agent):
    t = task("SELECT * FROM demo.nope")
    last = poll(agent, agent.create(template_of(t), "/tmp/out", None, execution("no-table")))[-1]
    assert last.phase == TaskExecution.FAILED
    assert "nope" in last.message


def test_5xx_and_429_on_get_keep_the_task_running_then_it_succeeds(agent, emulator):
    t = task("SELECT 1 AS one")
    meta = agent.create(template_of(t), "/tmp/out", None, execution("flaky-get"))
    emulator.fail_next("GET", f"/jobs/{meta.job_id}", status=503, times=1)
    emulator.fail_next("GET", f"/jobs/{meta.job_id}", status=429, times=1)
    first, second = agent.get(meta), agent.get(meta)
    assert (first.phase, second.phase) == (TaskExecution.RUNNING, TaskExecution.RUNNING)
    assert "503" in first.message and "429" in second.message
    assert poll(agent, meta)[-1].phase == TaskExecution.SUCCEEDED


def test_403_rate_limit_on_get_keeps_polling_but_403_access_denied_is_an_error(agent, emulator):
    t = task("SELECT 7 AS seven")
    meta = agent.create(template_of(t), "/tmp/out", None, execution("forbidden-get"))
    emulator.fail_next("GET", f"/jobs/{meta.job_id}", status=403, reason="rateLimitExceeded")
    limited = agent.get(meta)
    assert limited.phase == TaskExecution.RUNNING and "403" in limited.message
    emulator.fail_next("GET", f"/jobs/{meta.job_id}", status=403, reason="accessDenied")
    with pytest.raises(ExternalServiceError) as info:
        agent.get(meta)
    assert not info.value.retryable and "403" in str(info.value)
    assert poll(agent, meta)[-1].phase == TaskExecution.SUCCEEDED


def test_503_on_create_is_retried_and_makes_one_job(agent, emulator):
    t = task("SELECT 2 AS two")
    emulator.fail_next("POST", f"/projects/{PROJECT}/jobs", status=503, times=1)
    meta = agent.create(template_of(t), "/tmp/out", None, execution("flaky-create"))
    assert (PROJECT, meta.job_id) in emulator.jobs
    assert poll(agent, meta)[-1].phase == TaskExecution.SUCCEEDED


def test_create_during_an_outage_is_a_retryable_error(emulator):
    agent = BigQueryAgent(clients=ClientCache(), timeout=2, create_retry_deadline=0.5)
    t = task("SELECT 3 AS three")
    emulator.fail_next("POST", f"/projects/{PROJECT}/jobs", status=503, times=20)
    try:
        with pytest.raises(ExternalServiceError) as info:
            agent.create(template_of(t), "/tmp/out", None, execution("outage"))
        assert info.value.retryable
        assert "503" in str(info.value)
    finally:
        emulator.fail_next("POST", "", times=0)
        emulator._faults.clear()


def test_query_job_config_is_applied(agent, emulator):
    emulator.sql("CREATE SCHEMA IF NOT EXISTS out")
    config = bigquery.QueryJobConfig(
        destination=f"{PROJECT}.out.cities",
        write_disposition="WRITE_APPEND",
        labels={"team": "data"},
        default_dataset=f"{PROJECT}.demo",
    )
    t = task("SELECT DISTINCT city FROM trips", BigQueryConfig(project=PROJECT, query_job_config=config))
    template = template_of(t)
    for attempt in range(2):
        meta = agent.create(template, "/tmp/out", None, execution("config-run", retry=attempt))
        last = poll(agent, meta)[-1]
        assert last.phase == TaskExecution.SUCCEEDED
        assert last.outputs.literals["results"].scalar.structured_dataset.uri == f"bq://{PROJECT}:out.cities"
        job = emulator.jobs[(PROJECT, meta.job_id)]
        assert job.configuration["labels"] == {"team": "data"}
    assert len(read(emulator, f"bq://{PROJECT}:out.cities")) == 6  # appended twice


def test_maximum_bytes_billed_is_enforced(agent):
    config = bigquery.QueryJobConfig(maximum_bytes_billed=10)
    t = task("SELECT * FROM demo.trips", BigQueryConfig(project=PROJECT, query_job_config=config))
    last = poll(agent, agent.create(template_of(t), "/tmp/out", None, execution("bytes-run")))[-1]
    assert last.phase == TaskExecution.FAILED
    assert "bytesBilledLimitExceeded" in last.message


def test_flytekit_bigquery_task_template_is_served(agent, emulator, flytekit_plugin):
    flytekit_plugin("bigquery")
    from flytekitplugins.bigquery import BigQueryConfig as FlytekitConfig
    from flytekitplugins.bigquery import BigQueryTask as FlytekitTask

    emulator.sql("CREATE SCHEMA IF NOT EXISTS fk")
    t = FlytekitTask(
        name="flytekit_bq",
        query_template="SELECT id, miles FROM demo.trips WHERE id < @n AND city = @city ORDER BY id",
        task_config=FlytekitConfig(
            ProjectID=PROJECT,
            Location="US",
            QueryJobConfig=bigquery.QueryJobConfig(destination=f"{PROJECT}.fk.result", priority="BATCH"),
        ),
        inputs=kwtypes(n=int, city=str),
        output_structured_dataset_type=pd.DataFrame,
    )
    template = template_of(t)
    assert template.custom["ProjectID"] == PROJECT and template.custom["priority"] == "BATCH"
    meta = agent.create(template, "/tmp/out", inputs_of(t, n=7, city="city1"), execution("fk-run"))
    last = poll(agent, meta)[-1]
    assert last.phase == TaskExecution.SUCCEEDED
    assert last.outputs.literals["results"].scalar.structured_dataset.uri == f"bq://{PROJECT}:fk.result"
    assert read(emulator, f"bq://{PROJECT}:fk.result")["id"].tolist() == [1, 4]
    assert emulator.jobs[(PROJECT, meta.job_id)].configuration["query"]["priority"] == "BATCH"


def test_template_without_project_or_with_unsupported_input_is_invalid(agent, flytekit_plugin):
    t = task("SELECT 1")
    template = template_of(t)
    template.custom.pop("ProjectID")
    with pytest.raises(InvalidTaskError, match="ProjectID"):
        agent.create(template, "/tmp/out", None, execution("bad-template"))

    flytekit_plugin("bigquery")
    from flytekitplugins.bigquery import BigQueryConfig as FlytekitConfig
    from flytekitplugins.bigquery import BigQueryTask as FlytekitTask

    fk = FlytekitTask(
        name="flytekit_dict_input",
        query_template="SELECT @d",
        task_config=FlytekitConfig(ProjectID=PROJECT),
        inputs=kwtypes(d=dict),
    )
    with pytest.raises(InvalidTaskError, match=r"input 'd' has type .* cannot be a query parameter"):
        agent.create(template_of(fk), "/tmp/out", inputs_of(fk, d={"a": 1}), execution("dict-input"))


def test_bigquery_task_rejects_unsupported_input_types():
    with pytest.raises(TypeError, match=r"input 'd'.*cannot be a BigQuery query parameter"):
        task("SELECT @d", d=dict)
    with pytest.raises(TypeError, match="input 'm'"):
        task("SELECT @m", m=list[list[int]])


async def test_agent_methods_run_on_the_runner_pool_not_the_loop(agent):
    assert agent.async_methods == frozenset()  # plain functions: AgentRunner runs them on its threads
    runner = AgentRunner(max_workers=2)
    try:
        t = task("SELECT 4 AS four")
        meta = await runner.call(
            agent,
            "create",
            task_template=template_of(t),
            output_prefix="/tmp/out",
            inputs=None,
            task_execution_metadata=execution("runner-run"),
        )
        phases = []
        for _ in range(5):
            resource = await runner.call(agent, "get", resource_meta=meta)
            phases.append(resource.phase)
            if is_terminal_phase(resource.phase):
                break
        assert phases[-1] == TaskExecution.SUCCEEDED
    finally:
        runner.shutdown()


def test_resource_meta_is_small_json_without_secrets(agent, emulator, monkeypatch):
    info = emulator.service_account_info(PROJECT)
    import json

    secret = json.dumps(info)
    monkeypatch.setenv("_FSEC_BQ_SA", secret)
    t = task("SELECT 5 AS five", BigQueryConfig(project=PROJECT, credentials_secret="bq/sa"))
    template = template_of(t)
    assert "private_key" not in json.dumps(template.custom)
    meta = agent.create(template, "/tmp/out", None, execution("secret-run"))
    encoded = meta.encode()
    assert len(encoded) < 300 and b"PRIVATE" not in encoded and meta.credentials_secret == "bq/sa"
    assert poll(agent, meta)[-1].phase == TaskExecution.SUCCEEDED
    assert agent.clients.created == 1  # the secret's own client, reused by every poll


def test_missing_secret_is_a_clear_non_retryable_error(agent):
    t = task("SELECT 6", BigQueryConfig(project=PROJECT, credentials_secret="nope/missing"))
    with pytest.raises(ExternalServiceError, match="'nope/missing' is not available") as info:
        agent.create(template_of(t), "/tmp/out", None, execution("no-secret"))
    assert not info.value.retryable


def test_datetime_can_be_sent_as_timestamp(agent, emulator):
    t = task(
        "SELECT @ts AS ts",
        BigQueryConfig(project=PROJECT, parameter_types={"ts": "timestamp"}),
        ts=dt.datetime,
    )
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    meta = agent.create(template_of(t), "/tmp/out", inputs_of(t, ts=when), execution("ts-run"))
    assert poll(agent, meta)[-1].phase == TaskExecution.SUCCEEDED
    param = emulator.jobs[(PROJECT, meta.job_id)].configuration["query"]["queryParameters"][0]
    assert param["parameterType"] == {"type": "TIMESTAMP"}
