"""Every variable in docs/plugins/bigquery.md's "Another endpoint" table, set in the environment, reaches a server.

The table is read from the page: a variable documented there without a case here fails the test.
Each case runs a query with an agent whose client is built from the environment, as the service's
is, and checks where it went. ``test_endpoints.py`` runs the page's commands as written.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from bq_emulator import BigQueryEmulator
from doc_commands import ROOT
from flyteagents_bigquery import BigQueryAgent, BigQueryConfig, BigQueryJob, BigQueryTask, ClientCache
from flyteidl.core.execution_pb2 import TaskExecution
from helpers import execution, template_of
from network_fixtures import ConnectProxy, PrivateCA, private_ca

from flyteagents import ExternalServiceError, is_terminal_phase

PROJECT = "test-project"
SETUP = "CREATE SCHEMA demo; CREATE TABLE demo.t AS SELECT range AS id FROM range(5)"
#: Documented, not executed here: choosing the Storage Read API needs google-cloud-bigquery-storage
#: and a server speaking its gRPC API, and no emulator installable from PyPI speaks it.
NOT_EXECUTED = {"FLYTEAGENTS_BIGQUERY_STORAGE_API"}


def documented_variables() -> set[str]:
    page = (ROOT / "docs/plugins/bigquery.md").read_text()
    section = page.split("### Another endpoint", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No endpoint, credential, proxy or CA setting, and no Application Default Credentials to find."""
    for name in [*documented_variables(), "https_proxy", "no_proxy", "CURL_CA_BUNDLE", "HTTP_PROXY", "http_proxy"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    return monkeypatch


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return private_ca(tmp_path_factory.mktemp("bq-ca"))


@pytest.fixture(scope="module")
def https_api(ca: PrivateCA) -> Iterator[BigQueryEmulator]:
    """An API root over https for ``localhost``, its certificate signed by the private CA, checking credentials."""
    server = BigQueryEmulator(pending_polls=0, running_polls=0).start(tls=ca.issue("bq-api", "localhost"))
    server.sql(SETUP)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def open_emulator() -> Iterator[BigQueryEmulator]:
    with BigQueryEmulator(pending_polls=0, running_polls=0, require_auth=False) as server:
        server.sql(SETUP)
        yield server


def query(name: str) -> TaskExecution.Phase:
    task = BigQueryTask(
        name=f"q_{uuid.uuid4().hex[:8]}",
        query_template="SELECT count(*) AS n FROM demo.t",
        task_config=BigQueryConfig(project=PROJECT),
        output_structured_dataset_type=pd.DataFrame,
    )
    agent = BigQueryAgent(clients=ClientCache(), timeout=5, create_retry_deadline=5)
    meta = agent.create(template_of(task), "/tmp/out", None, execution(f"{name}-{uuid.uuid4().hex[:6]}"))
    for _ in range(20):
        resource = agent.get(BigQueryJob.decode(meta.encode()))
        if is_terminal_phase(resource.phase):
            return resource.phase
    raise AssertionError("the job did not finish")


class Env:
    def __init__(
        self, env: pytest.MonkeyPatch, tmp: Path, ca: PrivateCA, api: BigQueryEmulator, open_: BigQueryEmulator
    ):
        self.env, self.tmp, self.ca, self.api, self.open = env, tmp, ca, api, open_

    def key_file(self) -> str:
        path = self.tmp / f"key-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(self.api.service_account_info(PROJECT)))
        return str(path)

    def https_root(self) -> None:
        """The API root as a bare host:port (so https), trusted through the CA, with a key for it."""
        self.env.setenv("FLYTEAGENTS_BIGQUERY_API_ENDPOINT", self.api.url.removeprefix("https://"))
        self.env.setenv("REQUESTS_CA_BUNDLE", self.ca.ca_file)
        self.env.setenv("GOOGLE_APPLICATION_CREDENTIALS", self.key_file())


def emulator_host(e: Env) -> None:
    e.env.setenv("BIGQUERY_EMULATOR_HOST", e.open.url.removeprefix("http://"))
    before = e.open.count("POST", "/jobs")
    assert query("emulator") == TaskExecution.SUCCEEDED
    assert e.open.count("POST", "/jobs") == before + 1


def api_endpoint_and_credentials(e: Env) -> None:
    e.https_root()
    before = e.api.count("POST", "/jobs")
    assert query("api-root") == TaskExecution.SUCCEEDED
    assert e.api.count("POST", "/jobs") == before + 1, "a bare host:port means https at that host"
    e.env.setenv("BIGQUERY_EMULATOR_HOST", e.open.url)  # both set: the emulator wins
    emulated = e.open.count("POST", "/jobs")
    assert query("both") == TaskExecution.SUCCEEDED
    assert (e.open.count("POST", "/jobs"), e.api.count("POST", "/jobs")) == (emulated + 1, before + 1)


def ca_bundle(e: Env) -> None:
    e.https_root()
    e.env.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(ExternalServiceError, match="REQUESTS_CA_BUNDLE") as info:
        query("untrusted")
    assert not info.value.retryable
    e.env.setenv("REQUESTS_CA_BUNDLE", e.ca.ca_file)
    assert query("trusted") == TaskExecution.SUCCEEDED


def proxy(e: Env) -> None:
    e.https_root()
    port = int(e.api.url.rsplit(":", 1)[1])
    with ConnectProxy({f"localhost:{port}": ("127.0.0.1", port)}) as through:
        e.env.setenv("HTTPS_PROXY", through.url)
        assert query("proxied") == TaskExecution.SUCCEEDED
        assert through.tunnels and set(through.tunnels) == {f"localhost:{port}"}
        tunnels = len(through.tunnels)
        e.env.setenv("NO_PROXY", "localhost")
        assert query("not-proxied") == TaskExecution.SUCCEEDED
        assert len(through.tunnels) == tunnels, "NO_PROXY's hosts are reached directly"


CASES: dict[str, tuple[tuple[str, ...], Callable[[Env], None]]] = {
    "emulator_host": (("BIGQUERY_EMULATOR_HOST",), emulator_host),
    "api_endpoint": (
        ("FLYTEAGENTS_BIGQUERY_API_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS"),
        api_endpoint_and_credentials,
    ),
    "ca_bundle": (("REQUESTS_CA_BUNDLE",), ca_bundle),
    "proxy": (("HTTPS_PROXY", "NO_PROXY"), proxy),
}


def test_every_documented_variable_has_a_case() -> None:
    covered = {name for names, _ in CASES.values() for name in names}
    assert documented_variables() == covered | NOT_EXECUTED


@pytest.mark.parametrize("case", sorted(CASES))
def test_documented_variable(
    case: str,
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    ca: PrivateCA,
    https_api: BigQueryEmulator,
    open_emulator: BigQueryEmulator,
) -> None:
    CASES[case][1](Env(clean_env, tmp_path, ca, https_api, open_emulator))


def query_with_secret(name: str) -> TaskExecution.Phase:
    task = BigQueryTask(
        name=f"q_{uuid.uuid4().hex[:8]}",
        query_template="SELECT count(*) AS n FROM demo.t",
        task_config=BigQueryConfig(project=PROJECT, credentials_secret="group/key"),
        output_structured_dataset_type=pd.DataFrame,
    )
    agent = BigQueryAgent(clients=ClientCache(), timeout=5, create_retry_deadline=5)
    meta = agent.create(template_of(task), "/tmp/out", None, execution(f"{name}-{uuid.uuid4().hex[:6]}"))
    return agent.get(BigQueryJob.decode(meta.encode())).phase


#: Where the docs say the agent finds ``credentials_secret="group/key"``'s key.
SECRET_PLACES = ("_FSEC_GROUP_KEY", "/etc/secrets/group/key", "FLYTEAGENTS_SECRET_GROUP_KEY")


def test_the_docs_name_these_secret_places() -> None:
    page = " ".join((ROOT / "docs/plugins/bigquery.md").read_text().split())
    section = page.split("## Credentials and clients", 1)[1].split("###", 1)[0]
    assert all(f"`{place}`" in section for place in SECRET_PLACES)


@pytest.mark.parametrize("place", SECRET_PLACES)
def test_a_credentials_secret_is_found_where_the_docs_say(
    place: str, clean_env: pytest.MonkeyPatch, tmp_path: Path, ca: PrivateCA, https_api: BigQueryEmulator
) -> None:
    key = json.dumps(https_api.service_account_info(PROJECT))
    clean_env.setenv("FLYTEAGENTS_BIGQUERY_API_ENDPOINT", https_api.url)
    clean_env.setenv("REQUESTS_CA_BUNDLE", ca.ca_file)
    clean_env.setenv("FLYTE_SECRETS_DEFAULT_DIR", str(tmp_path / "secrets"))  # /etc/secrets, in the test
    for variable in ("_FSEC_GROUP_KEY", "FLYTEAGENTS_SECRET_GROUP_KEY"):
        clean_env.delenv(variable, raising=False)
    if place.startswith("/"):
        (tmp_path / "secrets" / "group").mkdir(parents=True)
        (tmp_path / "secrets" / "group" / "key").write_text(key)
    else:
        clean_env.setenv(place, key)
    # The API root answers 401 to calls without a token signed by a key it made: the key was found and used.
    assert query_with_secret(place) == TaskExecution.SUCCEEDED
