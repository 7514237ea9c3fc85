"""BigQueryConfig, the template's custom field, and the client cache."""

from __future__ import annotations

import json

import pytest
from flyteagents_bigquery import BigQueryConfig, BigQueryTask, ClientCache
from flyteagents_bigquery._config import parse_custom
from google.cloud import bigquery
from helpers import template_of

from flyteagents import InvalidTaskError


def test_flytekit_argument_names_are_accepted():
    config = BigQueryConfig(ProjectID="p", Location="EU", QueryJobConfig=bigquery.QueryJobConfig(priority="BATCH"))
    assert (config.project, config.location, config.query_job_config.priority) == ("p", "EU", "BATCH")
    assert (config.ProjectID, config.Location) == ("p", "EU")
    with pytest.raises(ValueError, match="project"):
        BigQueryConfig(location="US")
    with pytest.raises(ValueError, match="unknown BigQuery parameter types"):
        BigQueryConfig(project="p", parameter_types={"x": "STRUCT"})


def test_custom_keeps_flytekits_format_and_round_trips_the_whole_job_config():
    job_config = bigquery.QueryJobConfig(
        destination="p.ds.t",
        write_disposition="WRITE_TRUNCATE",
        maximum_bytes_billed=123,
        labels={"team": "data"},
        job_timeout_ms=60_000,
    )
    task = BigQueryTask(
        name="custom_check",
        query_template="SELECT @day AS day",
        task_config=BigQueryConfig(project="p", location="US", query_job_config=job_config, credentials_secret="g/k"),
        inputs={"day": __import__("datetime").date},
    )
    custom = template_of(task).custom
    # flytekitplugins-bigquery's connector reads these keys
    assert custom["ProjectID"] == "p" and custom["Location"] == "US" and custom["Domain"] == "development"
    assert custom["writeDisposition"] == "WRITE_TRUNCATE"
    spec = parse_custom(json.loads(json.dumps(custom)))
    assert spec.job_config.destination.table_id == "t"
    assert spec.job_config.maximum_bytes_billed == 123
    assert spec.job_config.labels == {"team": "data"}
    assert int(spec.job_config.job_timeout_ms) == 60_000
    assert spec.credentials_secret == "g/k"
    assert spec.parameter_types == {"day": "DATE"}


@pytest.mark.parametrize(
    "custom",
    [{}, {"ProjectID": 3}, {"ProjectID": "p", "flyteagents": []}, {"ProjectID": "p", "Location": 5}],
)
def test_malformed_custom_is_an_invalid_task(custom):
    with pytest.raises(InvalidTaskError):
        parse_custom(custom)


def test_one_client_per_project_and_credentials(emulator, monkeypatch):
    cache = ClientCache(pool_size=3)
    a = cache.get("proj-a")
    assert cache.get("proj-a") is a
    assert cache.get("proj-b") is not a
    monkeypatch.setenv("_FSEC_BQ_KEY", json.dumps(emulator.service_account_info("proj-a")))
    secret_client = cache.get("proj-a", "bq/key")
    assert secret_client is not a and cache.get("proj-a", "bq/key") is secret_client
    monkeypatch.setenv("_FSEC_BQ_KEY", json.dumps(emulator.service_account_info("proj-a")))  # rotated key
    assert cache.get("proj-a", "bq/key") is not secret_client
    assert cache.created == 4
    adapter = a._http.get_adapter("http://127.0.0.1/")
    assert adapter._pool_maxsize == 3
    cache.close()


def test_a_bad_secret_value_is_not_echoed(monkeypatch):
    monkeypatch.setenv("_FSEC_BQ_BAD", "not-json-but-secret-material")
    from flyteagents import ExternalServiceError

    with pytest.raises(ExternalServiceError) as info:
        ClientCache().get("p", "bq/bad")
    assert "secret-material" not in str(info.value) and "not a service-account key" in str(info.value)
