"""DatabricksAgent against the local Jobs API 2.1 server: create, get, delete, retries, credentials."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from databricks_test_workflows import double, report
from flyteagents_databricks import (
    Credentials,
    DatabricksAgent,
    DatabricksRunMeta,
    DatabricksSettings,
)
from flyteidl.core import tasks_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.models.core import identifier as id_models
from flytekit.models.literals import Literal, LiteralMap, Primitive, Scalar
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate
from flytekit.tools.translator import get_serializable
from google.protobuf.json_format import Parse

from flyteagents import ExternalServiceError, InvalidResourceMetaError, InvalidTaskError, Resource

HERE = Path(__file__).parent
TOKEN = "dapi-test-0123456789abcdef"
SETTINGS = SerializationSettings(ImageConfig(default_image=Image(name="default", fqn="ghcr.io/example/task", tag="7")))


def template_of(task: Any) -> TaskTemplate:
    return get_serializable(OrderedDict(), SETTINGS, task).template


def execution(name: str = "exec1", node: str = "n0", attempt: int = 0) -> TaskExecutionMetadata:
    wf = id_models.WorkflowExecutionIdentifier("proj", "dev", name)
    return TaskExecutionMetadata(
        task_execution_id=id_models.TaskExecutionIdentifier(
            task_id=id_models.Identifier(id_models.ResourceType.TASK, "proj", "dev", "t", "v1"),
            node_execution_id=id_models.NodeExecutionIdentifier(node, wf),
            retry_attempt=attempt,
        ),
        namespace="proj-dev",
        labels={},
        annotations={},
        k8s_service_account="",
        environment_variables={},
        identity=None,
    )


def int_inputs(**values: Any) -> LiteralMap:
    return LiteralMap({k: Literal(scalar=Scalar(primitive=Primitive(integer=v))) for k, v in values.items()})


async def wait_terminal(agent: DatabricksAgent, meta: DatabricksRunMeta, timeout: float = 10.0) -> list[Resource]:
    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        res = await agent.get(resource_meta=meta)
        seen.append(res)
        if res.phase in (
            TaskExecution.SUCCEEDED,
            TaskExecution.FAILED,
            TaskExecution.ABORTED,
            TaskExecution.RETRYABLE_FAILED,
        ):
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {meta.run_id} did not finish: {[r.phase_name for r in seen]}")


@pytest.fixture
def idle(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A server whose runs do not execute and last until cancelled."""
    srv = make_server(execute=False, run_seconds=float("inf"))
    monkeypatch.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", srv.instance)
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    return srv


@pytest.fixture
def quick(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A server whose runs do not execute and succeed after 0.1 s."""
    srv = make_server(execute=False, run_seconds=0.1)
    monkeypatch.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", srv.instance)
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    return srv


async def test_repeated_create_attaches_to_the_same_run(idle: Any) -> None:
    agent = DatabricksAgent()
    tmpl = template_of(double)
    first = await agent.create(tmpl, "/tmp/out/a", int_inputs(x=1), execution(attempt=0))
    again = await agent.create(tmpl, "/tmp/out/a", int_inputs(x=1), execution(attempt=0))
    retry = await agent.create(tmpl, "/tmp/out/b", int_inputs(x=1), execution(attempt=1))
    snap = idle.workspace.snapshot()
    assert first.run_id == again.run_id != retry.run_id
    assert snap["submit_count"] == 3 and len(snap["runs"]) == 2
    tokens = {r["payload"]["idempotency_token"] for r in snap["runs"].values()}
    assert len(tokens) == 2 and all(0 < len(t) <= 64 for t in tokens)
    for meta in (first, retry):
        await agent.delete(resource_meta=meta)


async def test_submitted_spec_runs_the_task_image_with_rendered_args(idle: Any) -> None:
    agent = DatabricksAgent()
    tmpl = template_of(double)
    tmpl.container.args[:] = [a for a in tmpl.container.args]  # unrendered, as a raw template would be
    meta = await agent.create(tmpl, "s3://bucket/prefix", int_inputs(x=1), execution())
    payload = idle.workspace.snapshot()["runs"][str(meta.run_id)]["payload"]
    task = payload["tasks"][0]
    assert task["new_cluster"]["docker_image"] == {"url": "ghcr.io/example/task:7"}
    assert task["new_cluster"]["num_workers"] == 1 and isinstance(task["new_cluster"]["num_workers"], int)
    params = task["spark_python_task"]["parameters"]
    assert params[params.index("--inputs") + 1] == "s3://bucket/prefix/inputs.pb"
    assert params[params.index("--output-prefix") + 1] == "s3://bucket/prefix"
    assert payload["git_source"]["git_url"].startswith("https://github.com/flyteorg/")
    assert payload["run_name"] == tmpl.id.name
    await agent.delete(resource_meta=meta)


async def test_delete_cancels_and_the_run_reports_aborted(idle: Any) -> None:
    agent = DatabricksAgent()
    meta = await agent.create(template_of(double), "/tmp/out/c", int_inputs(x=1), execution("cancel-me"))
    running = await wait_running(agent, meta)
    assert running.phase == TaskExecution.RUNNING
    assert running.log_links and running.log_links[0].uri.endswith(f"#job/{meta.run_id}/run/{meta.run_id}")
    await agent.delete(resource_meta=meta)
    await agent.delete(resource_meta=meta)  # idempotent
    final = (await wait_terminal(agent, meta))[-1]
    assert final.phase == TaskExecution.ABORTED, final
    assert "CANCELED" in (final.message or "")
    assert idle.workspace.snapshot()["runs"][str(meta.run_id)]["history"][-1] == "TERMINATED:CANCELED"


async def wait_running(agent: DatabricksAgent, meta: DatabricksRunMeta) -> Resource:
    for _ in range(200):
        res = await agent.get(resource_meta=meta)
        if res.phase == TaskExecution.RUNNING:
            return res
        assert res.phase in (TaskExecution.QUEUED, TaskExecution.WAITING_FOR_RESOURCES), res
        await asyncio.sleep(0.01)
    raise AssertionError("run never reached RUNNING")


async def test_life_cycle_is_reported_phase_by_phase(quick: Any) -> None:
    agent = DatabricksAgent()
    meta = await agent.create(template_of(double), "/tmp/out/d", int_inputs(x=1), execution("lc"))
    seen = await wait_terminal(agent, meta)
    phases = [r.phase_name for r in seen]
    assert phases[0] == "QUEUED" and phases[-1] == "SUCCEEDED" and "RUNNING" in phases
    assert seen[-1].custom_info == {
        "run_id": meta.run_id,
        "life_cycle_state": "TERMINATED",
        "result_state": "SUCCESS",
        "run_page_url": seen[-1].log_links[0].uri,
    }


async def test_rate_limits_and_5xx_are_retried(idle: Any) -> None:
    agent = DatabricksAgent()
    meta = await agent.create(template_of(double), "/tmp/out/e", int_inputs(x=1), execution("retry"))
    ws = idle.workspace
    before = ws.snapshot()["requests"].get("GET /api/2.1/jobs/runs/get", 0)
    ws.faults += [
        {"path": "runs/get", "status": 429, "count": 1, "retry_after": 0},
        {"path": "runs/get", "status": 503, "count": 2, "retry_after": None},
    ]
    res = await agent.get(resource_meta=meta)
    assert res.phase in (TaskExecution.QUEUED, TaskExecution.RUNNING)
    assert ws.snapshot()["requests"]["GET /api/2.1/jobs/runs/get"] - before == 4
    # Submit retried after a 502 reaches the same run: the idempotency token makes it safe.
    ws.faults.append({"path": "runs/submit", "status": 502, "count": 1, "retry_after": None})
    again = await agent.create(template_of(double), "/tmp/out/e", int_inputs(x=1), execution("retry"))
    assert again.run_id == meta.run_id
    await agent.delete(resource_meta=meta)


async def test_persistent_5xx_becomes_a_retryable_error_within_the_budget(idle: Any) -> None:
    agent = DatabricksAgent(DatabricksSettings(instance=idle.instance, call_timeout=0.5, request_timeout=0.2))
    meta = await agent.create(template_of(double), "/tmp/out/f", int_inputs(x=1), execution("budget"))
    idle.workspace.faults.append({"path": "runs/get", "status": 503, "count": 10_000, "retry_after": None})
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ExternalServiceError) as info:
        await agent.get(resource_meta=meta)
    assert info.value.retryable
    assert "503" in str(info.value)
    assert loop.time() - start < 1.5
    idle.workspace.faults.clear()
    await agent.delete(resource_meta=meta)


async def test_unreachable_workspace_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = DatabricksAgent(DatabricksSettings(instance="http://127.0.0.1:9", call_timeout=0.3, request_timeout=0.1))
    meta = DatabricksRunMeta(run_id=1, instance="http://127.0.0.1:9")
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    with pytest.raises(ExternalServiceError) as info:
        await agent.get(resource_meta=meta)
    assert info.value.retryable


async def test_token_stays_out_of_resource_meta_and_errors(idle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = DatabricksAgent()
    meta = await agent.create(template_of(double), "/tmp/out/g", int_inputs(x=1), execution("secret"))
    encoded = meta.encode()
    assert TOKEN.encode() not in encoded
    assert json.loads(encoded) == {
        "run_id": meta.run_id,
        "instance": idle.instance,
        "auth_type": "pat",
        "secret": "databricks-token",
        "client_id": None,
    }
    assert DatabricksRunMeta.decode(encoded) == meta
    # A rotated (here: wrong) token is read from the secret on the next call, and never echoed.
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", "dapi-wrong-token-xyz")
    with pytest.raises(ExternalServiceError) as info:
        await agent.get(resource_meta=meta)
    assert not info.value.retryable and "403" in str(info.value)
    assert "dapi-wrong-token-xyz" not in str(info.value) and TOKEN not in str(info.value)
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN", TOKEN)
    await agent.delete(resource_meta=meta)


async def test_secret_by_name_from_a_mounted_file(idle: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FLYTEAGENTS_SECRET_DATABRICKS_TOKEN")
    monkeypatch.setenv("FLYTEAGENTS_SECRETS_DIR", str(tmp_path))
    (tmp_path / "team-token").write_text(TOKEN + "\n")
    agent = DatabricksAgent(DatabricksSettings(instance=idle.instance, credentials=Credentials("pat", "team-token")))
    meta = await agent.create(template_of(double), "/tmp/out/h", int_inputs(x=1), execution("file"))
    assert meta.secret == "team-token"
    assert (await agent.get(resource_meta=meta)).phase in (TaskExecution.QUEUED, TaskExecution.RUNNING)
    missing = DatabricksRunMeta(run_id=meta.run_id, instance=idle.instance, secret="nope")
    with pytest.raises(ExternalServiceError) as info:
        await agent.get(resource_meta=missing)
    assert not info.value.retryable and "'nope'" in str(info.value)
    await agent.delete(resource_meta=meta)


async def test_oauth_m2m_client_credentials(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = make_server(execute=False, run_seconds=0.05, oauth_clients={"sp-42": "oauth-secret-value"})
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DBX_OAUTH", "oauth-secret-value")
    settings = DatabricksSettings(instance=srv.instance, credentials=Credentials("oauth_m2m", "dbx-oauth", "sp-42"))
    agent = DatabricksAgent(settings)
    meta = await agent.create(template_of(double), "/tmp/out/i", int_inputs(x=1), execution("oauth"))
    assert (meta.auth_type, meta.secret, meta.client_id) == ("oauth_m2m", "dbx-oauth", "sp-42")
    assert b"oauth-secret-value" not in meta.encode()
    assert (await wait_terminal(agent, meta))[-1].phase == TaskExecution.SUCCEEDED
    # One token fetched and reused across calls.
    assert srv.workspace.snapshot()["requests"]["POST /oidc/v1/token"] == 1
    # The workspace revokes it: the next call fetches a new token once and goes on.
    srv.workspace.tokens = {t for t in srv.workspace.tokens if not t.startswith("oauth-")}
    assert (await agent.get(resource_meta=meta)).phase == TaskExecution.SUCCEEDED
    assert srv.workspace.snapshot()["requests"]["POST /oidc/v1/token"] == 2
    # A wrong client secret is refused without retrying, and never echoed.
    monkeypatch.setenv("FLYTEAGENTS_SECRET_DBX_OAUTH", "not-the-secret")
    srv.workspace.tokens = {t for t in srv.workspace.tokens if not t.startswith("oauth-")}
    with pytest.raises(ExternalServiceError) as info:
        await agent.get(resource_meta=meta)
    assert not info.value.retryable and "not-the-secret" not in str(info.value)


async def test_one_pooled_client_per_workspace_and_token(idle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = DatabricksAgent()
    meta = await agent.create(template_of(double), "/tmp/out/j", int_inputs(x=1), execution("pool"))
    for _ in range(5):
        await agent.get(resource_meta=meta)
    clients = agent.pool.clients()
    assert len(clients) == 1
    monkeypatch.setenv("FLYTEAGENTS_SECRET_OTHER", TOKEN + "-other")
    idle.workspace.tokens.add(TOKEN + "-other")
    other = DatabricksRunMeta(run_id=meta.run_id, instance=idle.instance, secret="other")
    await agent.get(resource_meta=other)
    await agent.get(resource_meta=meta)
    assert len(agent.pool.clients()) == 2 and clients[0] in agent.pool.clients()
    await agent.delete(resource_meta=meta)
    await agent.aclose()
    assert clients[0].closed


async def test_bad_templates_and_meta_are_invalid(idle: Any) -> None:
    agent = DatabricksAgent()
    tmpl = template_of(double)
    tmpl.custom["databricksConf"] = {"run_name": "no compute"}
    with pytest.raises(InvalidTaskError, match="compute"):
        await agent.create(tmpl, "/tmp/out/k", int_inputs(x=1), execution("bad"))
    tmpl.custom.pop("databricksConf")
    with pytest.raises(InvalidTaskError, match="databricksConf"):
        await agent.create(tmpl, "/tmp/out/k", int_inputs(x=1), execution("bad"))
    with pytest.raises(InvalidResourceMetaError):
        DatabricksRunMeta.decode(b'{"run_id": "12", "instance": "x"}')
    # The server's own 400 for a spec it refuses is the user's error, not a retryable one.
    tmpl = template_of(double)
    tmpl.custom["databricksConf"] = {"existing_cluster_id": "c1", "idempotency_token": "x" * 80}
    with pytest.raises(InvalidTaskError, match="rejected"):
        await agent.create(tmpl, "/tmp/out/k", int_inputs(x=1), None)


async def test_unknown_run_is_failed_not_an_error(idle: Any) -> None:
    agent = DatabricksAgent()
    res = await agent.get(resource_meta=DatabricksRunMeta(run_id=424242, instance=idle.instance))
    assert res.phase == TaskExecution.FAILED and "424242" in (res.message or "")
    await agent.delete(resource_meta=DatabricksRunMeta(run_id=424242, instance=idle.instance))


async def test_notebook_task_passes_base_parameters_and_inputs(quick: Any) -> None:
    agent = DatabricksAgent()
    tmpl = template_of(report)
    inputs = LiteralMap({"day": Literal(scalar=Scalar(primitive=Primitive(string_value="2026-11-22")))})
    meta = await agent.create(tmpl, "/tmp/out/l", inputs, execution("nb"))
    task = quick.workspace.snapshot()["runs"][str(meta.run_id)]["payload"]["tasks"][0]
    assert task["notebook_task"] == {
        "notebook_path": "/Shared/report",
        "base_parameters": {"mode": "full", "day": "2026-11-22"},
    }
    assert task["existing_cluster_id"] == "0101-abc" and "spark_python_task" not in task
    assert (await wait_terminal(agent, meta))[-1].phase == TaskExecution.SUCCEEDED


async def test_task_timeout_becomes_the_run_timeout(idle: Any) -> None:
    agent = DatabricksAgent()
    tmpl = template_of(double)
    tmpl.metadata._timeout = timedelta(seconds=0.3)
    meta = await agent.create(tmpl, "/tmp/out/m", int_inputs(x=1), execution("timeout"))
    assert idle.workspace.snapshot()["runs"][str(meta.run_id)]["payload"]["timeout_seconds"] == 1
    final = (await wait_terminal(agent, meta, timeout=5))[-1]
    assert final.phase == TaskExecution.FAILED and "TIMEDOUT" in (final.message or "")


def recorded_spark_template() -> TaskTemplate:
    text = (HERE / "data" / "spark_databricks_template.json").read_text()
    return TaskTemplate.from_flyte_idl(Parse(text, tasks_pb2.TaskTemplate()))


async def test_flytekitplugins_spark_template_is_served(quick: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tmpl = recorded_spark_template()
    assert tmpl.type == "databricks"
    # The template names its own workspace; point it at the local one as an operator's override would.
    tmpl.custom["databricksInstance"] = quick.instance
    agent = DatabricksAgent()
    monkeypatch.setenv("FLYTEAGENTS_SECRET_TEAM_DATABRICKS_TOKEN", TOKEN)
    meta = await agent.create(tmpl, "s3://b/p", int_inputs(x=3), execution("spark"))
    assert meta.secret == "team-databricks-token"
    payload = quick.workspace.snapshot()["runs"][str(meta.run_id)]["payload"]
    task = payload["tasks"][0]
    assert payload["run_name"] == "flytekit databricks task" and payload["timeout_seconds"] == 3600
    assert task["new_cluster"]["docker_image"] == {"url": "ghcr.io/example/spark-task:1.0"}
    assert task["new_cluster"]["spark_conf"] == {"spark.driver.memory": "1g"}
    assert task["new_cluster"]["spark_env_vars"] == {"FROM_CONF": "1", "FLYTE_FAIL_ON_ERROR": "true"}
    assert task["new_cluster"]["num_workers"] == 2
    assert task["spark_python_task"]["python_file"] == "flytekitplugins/databricks/entrypoint.py"
    assert task["spark_python_task"]["parameters"][2] == "s3://b/p/inputs.pb"
    assert (await wait_terminal(agent, meta))[-1].phase == TaskExecution.SUCCEEDED


def test_live_flytekitplugins_spark_template_matches_the_recording() -> None:
    pytest.importorskip("flytekitplugins.spark")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_spark_template", HERE / "data" / "make_spark_template.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_spark_template"] = module  # flytekit names tasks after their module
    try:
        spec.loader.exec_module(module)
        live_json = module.template_json()
    finally:
        del sys.modules["make_spark_template"]
    live = TaskTemplate.from_flyte_idl(Parse(live_json, tasks_pb2.TaskTemplate()))
    recorded = recorded_spark_template()
    assert live.type == recorded.type and live.custom == recorded.custom
    assert list(live.container.args)[:-4] == list(recorded.container.args)[:-4]


async def test_submit_without_an_idempotency_token_is_not_retried(idle: Any) -> None:
    agent = DatabricksAgent()
    idle.workspace.faults.append({"path": "runs/submit", "status": 503, "count": 1})
    with pytest.raises(ExternalServiceError) as info:
        await agent.create(template_of(double), "/tmp/out/n", int_inputs(x=1), None)
    assert info.value.retryable
    assert idle.workspace.snapshot()["requests"]["POST /api/2.1/jobs/runs/submit"] == 1
