"""Reaching BigQuery somewhere else: an emulator with no credentials, host:port, another API root, bq:// readers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from bq_emulator import BigQueryEmulator
from doc_commands import ROOT, Command, commands
from flyteagents_bigquery import BigQueryAgent, BigQueryConfig, BigQueryJob, BigQueryTask, ClientCache
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import task, workflow
from helpers import execution, template_of
from network_fixtures import ConnectProxy, private_ca

from flyteagents import ExternalServiceError, is_terminal_phase

PROJECT = "test-project"
DOCS = "docs/plugins/bigquery.md"


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A process with no Application Default Credentials anywhere, and no metadata server to ask."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no application_default_credentials.json
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    for name in (
        "BIGQUERY_EMULATOR_HOST",
        "FLYTEAGENTS_BIGQUERY_API_ENDPOINT",
        "FLYTEAGENTS_BIGQUERY_CREDENTIALS_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def open_emulator() -> Iterator[BigQueryEmulator]:
    """A server that, like third-party emulators, asks for no credentials."""
    with BigQueryEmulator(pending_polls=0, running_polls=0, require_auth=False) as server:
        server.sql(
            "CREATE SCHEMA demo; CREATE TABLE demo.t AS SELECT range AS id FROM range(5);"
            "CREATE TABLE demo.trips AS SELECT range AS id, 'city' || (range % 3) AS city, range * 1.5 AS miles"
            " FROM range(20)"
        )
        yield server


def run(agent: BigQueryAgent, query: str, config: BigQueryConfig, name: str) -> tuple[BigQueryJob, object]:
    t = BigQueryTask(
        name=f"q_{uuid.uuid4().hex[:8]}",
        query_template=query,
        task_config=config,
        output_structured_dataset_type=pd.DataFrame,
    )
    meta = agent.create(template_of(t), "/tmp/out", None, execution(name))
    for _ in range(20):
        resource = agent.get(BigQueryJob.decode(meta.encode()))
        if is_terminal_phase(resource.phase):
            return meta, resource
    raise AssertionError("the job did not finish")


@pytest.mark.parametrize("scheme", ["http://", ""])
def test_an_emulator_needs_no_credentials_and_no_scheme(
    open_emulator: BigQueryEmulator, no_credentials: None, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    host = open_emulator.url.removeprefix("http://")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"{scheme}{host}")  # the emulators' docs say host:port
    agent = BigQueryAgent(clients=ClientCache(), timeout=5)
    _, resource = run(agent, "SELECT count(*) AS n FROM demo.t", BigQueryConfig(project=PROJECT), f"anon-{scheme!r}")
    assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    assert not any(path.startswith("/token") for _, path in open_emulator.requests), "nothing asked for a token"


def test_without_an_emulator_missing_credentials_say_what_to_set(no_credentials: None) -> None:
    with pytest.raises(ExternalServiceError) as info:
        ClientCache().get(PROJECT)
    assert not info.value.retryable
    assert "no Application Default Credentials" in str(info.value) and "BIGQUERY_EMULATOR_HOST" in str(info.value)


secret_trips = BigQueryTask(
    name="secret_trips",
    query_template="SELECT id, id * 2 AS twice FROM demo.t ORDER BY id",
    task_config=BigQueryConfig(project=PROJECT, credentials_secret="bq/reader"),
    output_structured_dataset_type=pd.DataFrame,
)


@task
def total(df: pd.DataFrame) -> int:
    return int(df["twice"].sum())


@workflow
def secret_report() -> int:
    return total(df=secret_trips())


def test_the_next_task_reads_bq_outputs_with_the_tasks_secret(
    emulator: BigQueryEmulator, no_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another API root that checks credentials (FLYTEAGENTS_BIGQUERY_API_ENDPOINT), and no ADC at all."""
    emulator.sql("CREATE SCHEMA IF NOT EXISTS demo; CREATE OR REPLACE TABLE demo.t AS SELECT range AS id FROM range(5)")
    monkeypatch.setenv("FLYTEAGENTS_BIGQUERY_API_ENDPOINT", emulator.url)
    monkeypatch.setenv("_FSEC_BQ_READER", json.dumps(emulator.service_account_info(PROJECT)))
    from flyteagents import AgentRegistry

    AgentRegistry.register(BigQueryAgent(clients=ClientCache(), timeout=5), override=True)
    assert secret_report() == 20  # the query and the downstream read both used bq/reader


def test_a_reader_without_the_outputs_metadata_names_its_secret(
    emulator: BigQueryEmulator, no_credentials: None, tmp_path: Path
) -> None:
    """A bq:// literal made elsewhere (flytekit's plugin, by hand): FLYTEAGENTS_BIGQUERY_CREDENTIALS_SECRET names it."""
    emulator.sql("CREATE SCHEMA IF NOT EXISTS demo; CREATE OR REPLACE TABLE demo.r AS SELECT 7 AS seven")
    script = tmp_path / "reader.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import pandas as pd
            from flytekit import FlyteContextManager
            from flytekit.models.literals import StructuredDataset, StructuredDatasetMetadata
            from flytekit.models.types import StructuredDatasetType
            from flytekit.types.structured.structured_dataset import StructuredDatasetTransformerEngine
            from flyteagents_bigquery import register_decoders

            register_decoders()
            metadata = StructuredDatasetMetadata(structured_dataset_type=StructuredDatasetType(format=""))
            literal = StructuredDataset(uri="bq://{PROJECT}:demo.r", metadata=metadata)
            ctx = FlyteContextManager.current_context()
            df = StructuredDatasetTransformerEngine().open_as(ctx, literal, pd.DataFrame, metadata)
            print(int(df["seven"][0]))
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "BIGQUERY_EMULATOR_HOST")}
    env.update(
        FLYTEAGENTS_BIGQUERY_API_ENDPOINT=emulator.url,
        FLYTEAGENTS_BIGQUERY_CREDENTIALS_SECRET="bq/reader",
        _FSEC_BQ_READER=json.dumps(emulator.service_account_info(PROJECT)),
    )
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "7"
    env.pop("FLYTEAGENTS_BIGQUERY_CREDENTIALS_SECRET")
    without = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert without.returncode != 0 and "no Application Default Credentials" in without.stderr


def run_documented(command: Command, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run a command from the docs page from the repository's root, in a process with no Google credentials."""
    clean = ("GOOGLE_APPLICATION_CREDENTIALS", "BIGQUERY_EMULATOR_HOST", "FLYTEAGENTS_BIGQUERY_API_ENDPOINT")
    env = {k: v for k, v in os.environ.items() if k not in clean and not k.lower().endswith("_proxy")}
    env.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="true", **command.env)
    assert command.argv[0] == "python"
    argv = [sys.executable, *command.argv[1:]]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_example_against_an_emulator_given_as_host_port(open_emulator: BigQueryEmulator, tmp_path: Path) -> None:
    """The docs' command for an emulator, as written: BIGQUERY_EMULATOR_HOST=host:port, no credentials."""
    host = open_emulator.url.removeprefix("http://")
    (command,) = commands(DOCS, "BIGQUERY_EMULATOR_HOST=127.0.0.1:9050", {"127.0.0.1:9050": host})
    assert command.env == {"BIGQUERY_EMULATOR_HOST": host}, "no credentials in the documented command"
    done = run_documented(command, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 cities; busiest city" in done.stdout, done.stdout
    assert open_emulator.count("POST", "/jobs") >= 1, "the query ran on this emulator, not one of the example's"


@pytest.mark.slow
def test_example_through_a_proxy_to_an_api_root_behind_a_private_ca(tmp_path: Path) -> None:
    """The docs' HTTPS_PROXY command, as written: the proxy tunnels every call, the private CA is trusted."""
    ca = private_ca(tmp_path)
    server = BigQueryEmulator(pending_polls=0, running_polls=0).start(tls=ca.issue("api", "bigquery.internal.example"))
    try:
        server.sql(
            "CREATE SCHEMA demo; CREATE TABLE demo.trips AS SELECT range AS id, 'city' || (range % 3) AS city,"
            " range * 1.5 AS miles FROM range(20)"
        )
        key = tmp_path / "key.json"
        key.write_text(json.dumps(server.service_account_info("example-project")))
        port = int(server.url.rsplit(":", 1)[1])
        with ConnectProxy({"bigquery.internal.example:443": ("127.0.0.1", port)}) as proxy:
            replace = {
                "http://proxy.internal.example:3128": proxy.url,
                "/etc/ssl/private-ca.pem": ca.ca_file,
                "/etc/bigquery/key.json": str(key),
            }
            (command,) = commands(DOCS, "HTTPS_PROXY=", replace)
            done = run_documented(command, tmp_path)
            assert done.returncode == 0, done.stderr[-3000:]
            assert "2 cities; busiest city" in done.stdout, done.stdout
            # Only the proxy could resolve the name: every call went through it.
            assert proxy.tunnels and set(proxy.tunnels) == {"bigquery.internal.example:443"}
            assert server.count("POST", "/jobs") >= 1, server.requests
    finally:
        server.stop()


def test_the_output_names_its_secret_never_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyteagents_bigquery._decoder import results_metadata, secret_of
    from flytekit.models.literals import StructuredDataset

    monkeypatch.delenv("FLYTEAGENTS_BIGQUERY_CREDENTIALS_SECRET", raising=False)
    monkeypatch.setenv("_FSEC_BQ_READER", '{"private_key": "PRIVATE"}')
    literal = StructuredDataset(uri="bq://p:d.t", metadata=results_metadata("bq/reader"))
    as_bytes = literal.to_flyte_idl().SerializeToString()
    assert b"bq/reader" in as_bytes and b"PRIVATE" not in as_bytes
    assert secret_of(StructuredDataset.from_flyte_idl(literal.to_flyte_idl())) == "bq/reader"
    assert secret_of(StructuredDataset(uri="bq://p:d.t", metadata=results_metadata(None))) is None
    monkeypatch.setenv("FLYTEAGENTS_BIGQUERY_CREDENTIALS_SECRET", "bq/other")
    assert secret_of(literal) == "bq/other", "the reading process's own setting wins"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost: a private CA's, as far as the client can tell."""
    from flyteagents.testing import self_signed_certificate

    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def test_an_api_root_behind_a_private_ca(
    certificate: tuple[str, str], no_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLYTEAGENTS_BIGQUERY_API_ENDPOINT over https with a private CA: refused at once, then trusted."""
    server = BigQueryEmulator(pending_polls=0, running_polls=0).start(tls=certificate)
    try:
        server.sql("CREATE SCHEMA demo; CREATE TABLE demo.t AS SELECT 1 AS one")
        assert server.url.startswith("https://localhost:")
        monkeypatch.setenv("FLYTEAGENTS_BIGQUERY_API_ENDPOINT", server.url)
        monkeypatch.setenv("_FSEC_BQ_TLS", json.dumps(server.service_account_info(PROJECT)))
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        config = BigQueryConfig(project=PROJECT, credentials_secret="bq/tls")
        agent = BigQueryAgent(clients=ClientCache(), timeout=5, create_retry_deadline=30)
        with pytest.raises(ExternalServiceError) as info:
            run(agent, "SELECT one FROM demo.t", config, "tls-untrusted")
        assert not info.value.retryable, "not retried: the certificate will not change"
        assert "REQUESTS_CA_BUNDLE" in str(info.value)
        assert server.count("POST", "/jobs") == 0
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
        _, resource = run(agent, "SELECT one FROM demo.t", config, "tls-trusted")
        assert resource.phase == TaskExecution.SUCCEEDED, resource.message
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("no_auth", [False, True], ids=["with-credentials", "no-auth"])
def test_the_local_server_as_documented(tmp_path: Path, no_auth: bool) -> None:
    """The page's commands for the tests' server: start it, paste what it prints, pyflyte run the example."""
    tables = tmp_path / "tables.sql"
    tables.write_text(
        "CREATE SCHEMA demo; CREATE TABLE demo.trips AS"
        " SELECT range AS id, 'city' || (range % 3) AS city, range * 1.5 AS miles FROM range(20);"
    )
    server_command, *_ = commands(DOCS, "bq_emulator.py --port", {"--port 9050": "--port 0", "tables.sql": str(tables)})
    argv = [sys.executable, *server_command.argv[1:], *(["--no-auth"] if no_auth else [])]
    server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        printed = [server.stdout.readline().strip() for _ in range(1 if no_auth else 2)]
        assert printed[0].startswith("export BIGQUERY_EMULATOR_HOST=http://127.0.0.1:"), printed
        assert no_auth or printed[1].startswith("export GOOGLE_APPLICATION_CREDENTIALS="), printed
        pasted = dict(word.split("=", 1) for line in printed for word in line.split()[1:])
        (run,) = re.findall(r"`(pyflyte run examples/bigquery_sql\.py [^`]*)`", (ROOT / DOCS).read_text())
        env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_APPLICATION_CREDENTIALS",)}
        env.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="true", **pasted)
        pyflyte = Path(sys.executable).with_name("pyflyte")
        done = subprocess.run(
            [str(pyflyte), *run.split()[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "busiest city" in done.stdout, done.stdout
