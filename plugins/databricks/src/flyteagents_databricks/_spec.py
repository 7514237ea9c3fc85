"""Turning a Databricks task template into a Jobs API 2.1 ``runs/submit`` request."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

from flyteagents import InvalidTaskError
from flyteagents.plugin import task_execution_id, whole_numbers_as_int

__all__ = ["DEFAULT_GIT_SOURCE", "build_submit_request", "idempotency_token", "notebook_parameters"]

#: Where a classic cluster finds the script that runs flytekit's entrypoint with the task's
#: container args (the same default as flytekitplugins-spark, so existing setups keep working).
DEFAULT_GIT_SOURCE = {
    "git_url": "https://github.com/flyteorg/flytetools",
    "git_provider": "gitHub",
    "git_commit": "572298df1f971fb58c258398bd70a6372f811c96",
}
DEFAULT_PYTHON_FILE = "flytekitplugins/databricks/entrypoint.py"
DEFAULT_SERVERLESS_PYTHON_FILE = "flytekitplugins/databricks/entrypoint_serverless.py"
#: pyflyte-execute exits non-zero on a user error when this is set, so the run reports FAILED.
_FAIL_ON_ERROR_ENV = "FLYTE_FAIL_ON_ERROR"
_MAX_RUN_NAME = 100


def idempotency_token(meta: TaskExecutionMetadata | None, task_name: str) -> str | None:
    """A token naming one attempt of one task execution (at most 64 characters), or None without metadata.

    FlytePropeller repeats CreateTask after any error; Databricks answers a repeated
    ``runs/submit`` with the same token with the run it already started.
    """
    attempt = task_execution_id(meta)
    if attempt is None:
        return None
    return "flyte-" + hashlib.sha256(f"{attempt}/{task_name}".encode()).hexdigest()[:58]


def _render(args: list[str], output_prefix: str) -> list[str]:
    # FlytePropeller renders these before CreateTask; a template sent unrendered still works.
    replacements = {
        "{{.input}}": f"{output_prefix}/inputs.pb",
        "{{.outputPrefix}}": output_prefix,
        "{{.rawOutputDataPrefix}}": f"{output_prefix}/raw_output",
        "{{.checkpointOutputPrefix}}": f"{output_prefix}/checkpoint_output",
        "{{.prevCheckpointPrefix}}": "",
    }
    out = []
    for arg in args:
        for key, value in replacements.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def _is_serverless(conf: dict[str, Any]) -> bool:
    has_cluster = conf.get("existing_cluster_id") is not None or conf.get("new_cluster") is not None
    return not has_cluster and bool(conf.get("environment_key") or conf.get("environments"))


def notebook_parameters(inputs: LiteralMap | None) -> dict[str, str]:
    """A notebook task's primitive inputs as base parameters (strings, by input name).

    Raises:
        InvalidTaskError: an input is not a primitive (a notebook parameter is a string).
    """
    params: dict[str, str] = {}
    for name, literal in (inputs.literals if inputs else {}).items():
        primitive = literal.scalar.primitive if literal.scalar else None
        if primitive is None:
            raise InvalidTaskError(f"notebook input {name!r} is not a primitive value; notebook parameters are strings")
        value = primitive.value
        params[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return params


def build_submit_request(
    template: TaskTemplate,
    output_prefix: str,
    token: str | None,
    *,
    inputs: LiteralMap | None = None,
    default_git_source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``runs/submit`` body for a ``databricks`` task template.

    The template's ``custom`` is the format flytekitplugins-spark's DatabricksV2 writes:
    ``databricksConf`` (a Jobs API run spec: ``new_cluster``, ``existing_cluster_id`` or a
    serverless ``environment_key``/``environments``; optional ``git_source``, ``python_file``,
    ``run_name``, ``timeout_seconds`` ...), ``sparkConf``, and for a notebook task
    ``notebookPath`` with ``notebookBaseParameters``. A Python task runs flytekit's entrypoint
    with the task's rendered container args, in the task's image on a new cluster; a
    notebook task gets its primitive ``inputs`` as base parameters too.

    Raises:
        InvalidTaskError: the custom field has no usable run spec.
    """
    custom = template.custom or {}
    conf_in = custom.get("databricksConf")
    if not isinstance(conf_in, dict):
        raise InvalidTaskError("databricks task template has no databricksConf object in its custom field")
    conf = whole_numbers_as_int(copy.deepcopy(conf_in))
    container = template.container
    env = {str(k): str(v) for k, v in ((container.env if container else None) or {}).items()}
    env[_FAIL_ON_ERROR_ENV] = "true"

    notebook_path = custom.get("notebookPath")
    serverless = _is_serverless(conf)
    if not serverless and conf.get("existing_cluster_id") is None and conf.get("new_cluster") is None:
        raise InvalidTaskError(
            "databricksConf needs compute: one of existing_cluster_id, new_cluster (classic) "
            "or environment_key / environments (serverless)"
        )
    if not notebook_path and (container is None or not container.args):
        raise InvalidTaskError("a databricks Python task needs a container with the flytekit entrypoint args")

    git_source = conf.pop("git_source", None)
    python_file = conf.pop("python_file", None)
    task: dict[str, Any] = {"task_key": "flyte_task"}
    request: dict[str, Any] = {}

    if serverless:
        key = conf.pop("environment_key", None) or "default"
        environments = conf.pop("environments", None) or []
        if not isinstance(environments, list):
            raise InvalidTaskError("databricksConf.environments must be a list")
        spec = next((e for e in environments if e.get("environment_key") == key), None)
        if spec is None:
            spec = {"environment_key": key, "spec": {"client": "1"}}
            environments.append(spec)
        spec_body = spec.setdefault("spec", {})
        spec_body["environment_vars"] = {**spec_body.get("environment_vars", {}), **env}
        task["environment_key"] = key
        request["environments"] = environments
    elif conf.get("existing_cluster_id") is not None:
        task["existing_cluster_id"] = conf.pop("existing_cluster_id")
        conf.pop("new_cluster", None)
    else:
        cluster = conf.pop("new_cluster")
        if not isinstance(cluster, dict):
            raise InvalidTaskError("databricksConf.new_cluster must be an object")
        if not cluster.get("docker_image") and container is not None and container.image:
            cluster["docker_image"] = {"url": container.image}
        if not cluster.get("spark_conf") and custom.get("sparkConf"):
            cluster["spark_conf"] = dict(custom["sparkConf"])
        cluster["spark_env_vars"] = {**(cluster.get("spark_env_vars") or {}), **env}
        task["new_cluster"] = cluster

    if notebook_path:
        notebook: dict[str, Any] = {"notebook_path": notebook_path}
        params = {str(k): str(v) for k, v in (custom.get("notebookBaseParameters") or {}).items()}
        params.update(notebook_parameters(inputs))
        if params:
            notebook["base_parameters"] = params
        if git_source:
            notebook["source"] = "GIT"
        task["notebook_task"] = notebook
    else:
        assert container is not None
        git_source = git_source or default_git_source or DEFAULT_GIT_SOURCE
        task["spark_python_task"] = {
            "python_file": python_file or (DEFAULT_SERVERLESS_PYTHON_FILE if serverless else DEFAULT_PYTHON_FILE),
            "source": "GIT",
            "parameters": _render(list(container.args), output_prefix),
        }
    for field in ("libraries", "max_retries", "min_retry_interval_millis", "retry_on_timeout"):
        if field in conf:
            task[field] = conf.pop(field)

    # Whatever else the run spec holds (access_control_list, notification settings,
    # health rules, ...) passes through at the top level, as runs/submit takes it.
    request.update(conf)
    request["tasks"] = [task]
    if git_source:
        request["git_source"] = git_source
    request.setdefault("run_name", (template.id.name if template.id else "flyte-task")[:_MAX_RUN_NAME])
    timeout = template.metadata.timeout if template.metadata else None
    if timeout and "timeout_seconds" not in request:
        request["timeout_seconds"] = max(int(timeout.total_seconds()), 1)
    if token is not None:
        request["idempotency_token"] = token
    return request
