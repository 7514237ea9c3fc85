"""Every variable in docs/plugins/databricks.md's settings table, set in the environment, reaches a real server.

The table is read from the page: a variable documented there without a case here fails the test.
Each case builds the agent as ``flyteagents serve`` does (``DatabricksAgent()``, settings from the
environment) and checks the effect where the Jobs API server sees it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from databricks_test_workflows import double
from doc_commands import ROOT
from flyteagents_databricks import DatabricksAgent
from flyteagents_databricks._client import DatabricksAPIError
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.models.literals import Literal, LiteralMap, Primitive, Scalar
from network_fixtures import ConnectProxy, hashed_ca_directory, private_ca

from flyteagents import testing

TOKEN = "dapi-test-0123456789abcdef"  # the token the tests' servers accept (conftest.py)
SETTINGS = SerializationSettings(ImageConfig(default_image=Image(name="default", fqn="ghcr.io/example/task", tag="7")))
INPUTS = LiteralMap({"x": Literal(scalar=Scalar(primitive=Primitive(integer=1)))})


def documented_variables() -> set[str]:
    """The variables named in the first column of the "Configuring the service" table."""
    page = (ROOT / "docs/plugins/databricks.md").read_text()
    table = page.split("## Configuring the service", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An agent environment with none of the table's variables and no token set."""
    for name in [*documented_variables(), "FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", "FLYTE_DATABRICKS_ACCESS_TOKEN"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def submit(agent: DatabricksAgent, name: str) -> Any:
    try:
        return await agent.create(
            testing.template_of(double, SETTINGS), "/tmp/out", INPUTS, testing.execution_metadata(name)
        )
    finally:
        await agent.aclose()


async def instance(env: pytest.MonkeyPatch, make_server: Any, tmp_path: Path) -> None:
    server = make_server(execute=False, run_seconds=float("inf"))
    env.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", server.instance)
    env.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    with ConnectProxy() as proxy:  # the docs say HTTP(S)_PROXY are not read: this proxy refuses everything
        env.setenv("HTTP_PROXY", proxy.url)
        env.setenv("HTTPS_PROXY", proxy.url)
        meta = await submit(DatabricksAgent(), "env-instance")
    assert str(meta.run_id) in server.workspace.snapshot()["runs"]


async def flytekit_instance(env: pytest.MonkeyPatch, make_server: Any, tmp_path: Path) -> None:
    server = make_server(execute=False, run_seconds=float("inf"))
    env.setenv("FLYTE_DATABRICKS_INSTANCE", server.instance)
    env.setenv("FLYTE_DATABRICKS_ACCESS_TOKEN", TOKEN)  # flytekit's variable for the token, too
    meta = await submit(DatabricksAgent(), "flytekit-instance")
    assert str(meta.run_id) in server.workspace.snapshot()["runs"]


async def token_secret(env: pytest.MonkeyPatch, make_server: Any, tmp_path: Path) -> None:
    server = make_server(execute=False, run_seconds=float("inf"))
    env.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", server.instance)
    env.setenv("FLYTEAGENTS_DATABRICKS_TOKEN_SECRET", "team-token")
    env.setenv("FLYTEAGENTS_SECRET_TEAM_TOKEN", TOKEN)
    meta = await submit(DatabricksAgent(), "token-secret")
    assert meta.secret == "team-token" and str(meta.run_id) in server.workspace.snapshot()["runs"]


async def oauth(env: pytest.MonkeyPatch, make_server: Any, tmp_path: Path) -> None:
    server = make_server(execute=False, run_seconds=float("inf"), oauth_clients={"sp-env": "oauth-value"})
    env.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", server.instance)
    env.setenv("FLYTEAGENTS_DATABRICKS_AUTH_TYPE", "oauth_m2m")
    env.setenv("DATABRICKS_CLIENT_ID", "sp-env")
    env.setenv("FLYTEAGENTS_DATABRICKS_OAUTH_SECRET", "team-oauth")
    env.setenv("FLYTEAGENTS_SECRET_TEAM_OAUTH", "oauth-value")
    meta = await submit(DatabricksAgent(), "oauth-env")
    assert (meta.auth_type, meta.client_id, meta.secret) == ("oauth_m2m", "sp-env", "team-oauth")
    assert server.workspace.snapshot()["requests"]["POST /oidc/v1/token"] == 1


async def timeouts(env: pytest.MonkeyPatch, make_server: Any, tmp_path: Path) -> None:
    """A workspace that accepts connections and never answers: each request ends, then the call's budget."""
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        env.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        env.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
        env.setenv("FLYTEAGENTS_DATABRICKS_REQUEST_TIMEOUT", "0.3")
        env.setenv("FLYTEAGENTS_DATABRICKS_CALL_TIMEOUT", "2")
        agent = DatabricksAgent()
        assert (agent.settings.request_timeout, agent.settings.call_timeout) == (0.3, 2.0)
        with pytest.raises(DatabricksAPIError) as info:
            await submit(agent, "silent")
    finally:
        server.close()
    assert info.value.retryable, "a workspace that does not answer in time may answer later"
    assert connections >= 2, "each request timed out on its own and was retried within the call's budget"


async def ca_file(env: pytest.MonkeyPatch, make_server: Any, tmp_path: Path) -> None:
    ca = private_ca(tmp_path)
    server = make_server(tls=ca.issue("workspace", "localhost"), execute=False, run_seconds=float("inf"))
    env.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", f"localhost:{server.server_address[1]}")  # a host name: https
    env.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    env.setenv("SSL_CERT_FILE", ca.ca_file)
    meta = await submit(DatabricksAgent(), "ca-file")
    assert meta.instance.startswith("https://localhost:") and str(meta.run_id) in server.workspace.snapshot()["runs"]


async def ca_directory(env: pytest.MonkeyPatch, make_server: Any, tmp_path: Path) -> None:
    ca = private_ca(tmp_path)
    server = make_server(tls=ca.issue("workspace", "localhost"), execute=False, run_seconds=float("inf"))
    env.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", f"https://localhost:{server.server_address[1]}")
    env.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    env.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))  # not a file: only the directory is read
    env.setenv("SSL_CERT_DIR", hashed_ca_directory(ca.ca_file, tmp_path / "certs"))
    meta = await submit(DatabricksAgent(), "ca-dir")
    assert str(meta.run_id) in server.workspace.snapshot()["runs"]


Case = Callable[[pytest.MonkeyPatch, Any, Path], Awaitable[None]]
CASES: dict[str, tuple[tuple[str, ...], Case]] = {
    "instance": (("FLYTEAGENTS_DATABRICKS_INSTANCE",), instance),
    "flytekit_instance": (("FLYTE_DATABRICKS_INSTANCE",), flytekit_instance),
    "token_secret": (("FLYTEAGENTS_DATABRICKS_TOKEN_SECRET",), token_secret),
    "oauth": (
        ("FLYTEAGENTS_DATABRICKS_AUTH_TYPE", "DATABRICKS_CLIENT_ID", "FLYTEAGENTS_DATABRICKS_OAUTH_SECRET"),
        oauth,
    ),
    "timeouts": (("FLYTEAGENTS_DATABRICKS_REQUEST_TIMEOUT", "FLYTEAGENTS_DATABRICKS_CALL_TIMEOUT"), timeouts),
    "ca_file": (("SSL_CERT_FILE",), ca_file),
    "ca_directory": (("SSL_CERT_DIR",), ca_directory),
}


def test_every_documented_variable_has_a_case() -> None:
    covered = {name for names, _ in CASES.values() for name in names}
    assert documented_variables() == covered


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("case", sorted(CASES))
async def test_documented_variable(case: str, clean_env: pytest.MonkeyPatch, make_server: Any, tmp_path: Path) -> None:
    await CASES[case][1](clean_env, make_server, tmp_path)


def _env_form(name: str) -> Callable[[pytest.MonkeyPatch, Path], None]:
    return lambda env, tmp: env.setenv(name, TOKEN)


def _file_form(variable: str, name: str, directory: bool) -> Callable[[pytest.MonkeyPatch, Path], None]:
    def put(env: pytest.MonkeyPatch, tmp: Path) -> None:
        path = tmp / "secrets" / name
        if directory:  # a mounted Kubernetes secret: a directory holding the key "token"
            path, name_path = path / "token", path
            name_path.mkdir(parents=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TOKEN + "\n")
        env.setenv(variable, str(tmp / "secrets"))

    return put


#: The token's places the "Secrets are resolved by name" paragraph lists, for the default secret name.
SECRET_FORMS: dict[str, Callable[[pytest.MonkeyPatch, Path], None]] = {
    "FLYTEAGENTS_SECRET_<NAME>": _env_form("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN"),
    "FLYTE_DATABRICKS_ACCESS_TOKEN": _env_form("FLYTE_DATABRICKS_ACCESS_TOKEN"),
    "_FSEC_FLYTE_DATABRICKS_ACCESS_TOKEN": _env_form("_FSEC_FLYTE_DATABRICKS_ACCESS_TOKEN"),
    "_FSEC_<NAME>": _env_form("_FSEC_DATABRICKS-TOKEN"),  # flytekit's spelling: upper-cased, nothing replaced
    "$FLYTEAGENTS_SECRETS_DIR/<name>": _file_form("FLYTEAGENTS_SECRETS_DIR", "databricks-token", False),
    "$FLYTE_SECRETS_DEFAULT_DIR/<name lower-cased>": _file_form("FLYTE_SECRETS_DEFAULT_DIR", "databricks-token", False),
    "<name>/token": _file_form("FLYTEAGENTS_SECRETS_DIR", "databricks-token", True),
}


def test_the_secret_paragraph_lists_these_forms() -> None:
    page = " ".join((ROOT / "docs/plugins/databricks.md").read_text().split())
    paragraph = page.split("**Secrets are resolved by name", 1)[1].split("OAuth M2M", 1)[0]
    assert all(f"`{form}`" in paragraph for form in SECRET_FORMS), [
        f for f in SECRET_FORMS if f"`{f}`" not in paragraph
    ]


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("form", sorted(SECRET_FORMS))
async def test_the_token_is_found_where_the_docs_say(
    form: str, clean_env: pytest.MonkeyPatch, make_server: Any, tmp_path: Path
) -> None:
    for directory in ("FLYTEAGENTS_SECRETS_DIR", "FLYTE_SECRETS_DEFAULT_DIR"):  # no token anywhere else
        clean_env.setenv(directory, str(tmp_path / "nowhere"))
    for variable in ("_FSEC_FLYTE_DATABRICKS_ACCESS_TOKEN", "_FSEC_DATABRICKS-TOKEN"):
        clean_env.delenv(variable, raising=False)
    server = make_server(execute=False, run_seconds=float("inf"))
    clean_env.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", server.instance)
    SECRET_FORMS[form](clean_env, tmp_path)
    meta = await submit(DatabricksAgent(), f"secret-{len(form)}")
    assert str(meta.run_id) in server.workspace.snapshot()["runs"], "the server accepted the token"
