"""The runs/submit body built from a template: compute variants, entrypoint, overrides, settings."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from databricks_test_workflows import double
from flyteagents_databricks import Credentials, DatabricksSettings, build_submit_request
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.models.task import TaskTemplate
from flytekit.tools.translator import get_serializable

from flyteagents import InvalidTaskError

SETTINGS = SerializationSettings(ImageConfig(default_image=Image(name="default", fqn="ghcr.io/example/task", tag="7")))


def template(conf: dict[str, Any], **custom: Any) -> TaskTemplate:
    tmpl = get_serializable(OrderedDict(), SETTINGS, double).template
    tmpl.custom.clear()
    tmpl.custom.update({"databricksConf": conf, **custom})
    return tmpl


def test_serverless_environment_gets_the_task_environment() -> None:
    conf = {"environment_key": "py", "environments": [{"environment_key": "py", "spec": {"client": "2"}}]}
    body = build_submit_request(template(conf), "s3://b/p", "tok")
    (task,) = body["tasks"]
    assert task["environment_key"] == "py" and "new_cluster" not in task
    assert task["spark_python_task"]["python_file"] == "flytekitplugins/databricks/entrypoint_serverless.py"
    (env,) = body["environments"]
    assert env["spec"]["client"] == "2" and env["spec"]["environment_vars"]["FLYTE_FAIL_ON_ERROR"] == "true"
    assert body["idempotency_token"] == "tok"


def test_existing_cluster_and_a_custom_entrypoint() -> None:
    git = {"git_url": "https://example.com/repo.git", "git_provider": "gitHub", "git_branch": "main"}
    conf = {"existing_cluster_id": "0101-abc", "git_source": git, "python_file": "run.py", "max_retries": 2.0}
    body = build_submit_request(template(conf), "/tmp/p", None)
    (task,) = body["tasks"]
    assert task["existing_cluster_id"] == "0101-abc" and task["max_retries"] == 2
    assert task["spark_python_task"]["python_file"] == "run.py"
    assert body["git_source"] == git and "idempotency_token" not in body
    assert "existing_cluster_id" not in body and "python_file" not in body


def test_a_given_docker_image_and_env_vars_are_kept() -> None:
    conf = {"new_cluster": {"docker_image": {"url": "mine:1"}, "spark_env_vars": {"A": "1"}, "num_workers": 0}}
    (task,) = build_submit_request(template(conf, sparkConf={"k": "v"}), "/tmp/p", None)["tasks"]
    assert task["new_cluster"]["docker_image"] == {"url": "mine:1"}
    assert task["new_cluster"]["spark_env_vars"]["A"] == "1" and task["new_cluster"]["spark_conf"] == {"k": "v"}


def test_notebook_inputs_must_be_primitives() -> None:
    from flytekit.models.literals import Literal, LiteralCollection, LiteralMap

    tmpl = template({"existing_cluster_id": "c"}, notebookPath="/nb")
    inputs = LiteralMap({"xs": Literal(collection=LiteralCollection([]))})
    with pytest.raises(InvalidTaskError, match="xs"):
        build_submit_request(tmpl, "/tmp/p", None, inputs=inputs)


def test_task_overrides_and_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTEAGENTS_DATABRICKS_INSTANCE", "dbc-1.cloud.databricks.com/")
    monkeypatch.setenv("FLYTEAGENTS_DATABRICKS_AUTH_TYPE", "oauth_m2m")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "sp-1")
    settings = DatabricksSettings.from_env()
    assert settings.for_task({}) == (
        "https://dbc-1.cloud.databricks.com",
        Credentials("oauth_m2m", "databricks-oauth-secret", "sp-1"),
    )
    assert settings.for_task({"databricksInstance": "http://127.0.0.1:9", "databricksAuthType": "pat"}) == (
        "http://127.0.0.1:9",
        Credentials("pat", "databricks-token"),
    )
    assert settings.for_task({"databricksOauthSecret": "team", "databricksClientId": "sp-2"})[1] == Credentials(
        "oauth_m2m", "team", "sp-2"
    )
    with pytest.raises(InvalidTaskError, match="auth type"):
        settings.for_task({"databricksAuthType": "password"})
    with pytest.raises(InvalidTaskError, match="workspace"):
        DatabricksSettings().for_task({})
