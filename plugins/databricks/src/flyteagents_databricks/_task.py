"""The task side: the ``Databricks`` task config, a Python task and a notebook task run by DatabricksAgent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flytekit import FlyteContextManager
from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.core.python_function_task import PythonFunctionTask
from flytekit.extend import TaskPlugins
from flytekit.models.literals import LiteralMap

from flyteagents import AgentNotFoundError, AgentRegistry, AsyncAgentExecutorMixin

__all__ = ["TASK_TYPE", "Databricks", "DatabricksNotebookTask", "DatabricksTask"]

#: The task type flytekitplugins-spark gives DatabricksV2 tasks; served by DatabricksAgent.
TASK_TYPE = "databricks"


@dataclass
class Databricks:
    """Run a ``@task`` function as a Databricks run.

    Args:
        databricks_conf: the Jobs API run spec: compute (``new_cluster`` runs the task's
            container image; or ``existing_cluster_id``; or serverless ``environment_key``)
            plus optional ``git_source``/``python_file`` for the entrypoint script,
            ``timeout_seconds``, ``run_name``, ``libraries`` ...
        databricks_instance: the workspace (``<name>.cloud.databricks.com`` or a URL);
            defaults to the agent service's setting.
        spark_conf: Spark configuration for a new cluster.
        token_secret: name of the secret holding a personal access token.
        auth_type: ``"pat"`` or ``"oauth_m2m"``; defaults to the agent service's setting.
        client_id: the OAuth M2M service principal's id.
        oauth_secret: name of the secret holding the OAuth M2M client secret.

    Example:
        >>> @task(task_config=Databricks(databricks_conf={"new_cluster": {...}}))
        ... def double(x: int) -> int:
        ...     return 2 * x
    """

    databricks_conf: dict[str, Any] | None = None
    databricks_instance: str | None = None
    spark_conf: dict[str, str] | None = None
    token_secret: str | None = None
    auth_type: str | None = None
    client_id: str | None = None
    oauth_secret: str | None = None

    def custom(self) -> dict[str, Any]:
        """The template's custom field, in flytekitplugins-spark's DatabricksV2 format."""
        fields = {
            "databricksConf": self.databricks_conf or {},
            "databricksInstance": self.databricks_instance,
            "sparkConf": self.spark_conf,
            "databricksTokenSecret": self.token_secret,
            "databricksAuthType": self.auth_type,
            "databricksClientId": self.client_id,
            "databricksOauthSecret": self.oauth_secret,
        }
        return {k: v for k, v in fields.items() if v is not None}


def _ensure_agent() -> None:
    # Local runs call the agent in-process: make the installed plugin known to the default registry.
    # Any: mypy cannot type AgentRegistry's class-or-instance methods (flyteagents' _defaultable).
    registry: Any = AgentRegistry.default()
    try:
        registry.get_agent(TASK_TYPE)
    except AgentNotFoundError:
        registry.discover()


def _runs_here() -> bool:
    """True when this process should submit the run; False on the cluster running the function itself."""
    state = FlyteContextManager.current_context().execution_state
    return bool(state and state.is_local_execution())


class DatabricksTask(AsyncAgentExecutorMixin, PythonFunctionTask[Databricks]):
    """A Python function run on Databricks; made by ``@task(task_config=Databricks(...))``.

    Run locally (``python wf.py``), it submits the run through DatabricksAgent and reads the
    outputs the run wrote; on the cluster, flytekit's entrypoint runs the function.
    """

    def __init__(self, task_config: Databricks, task_function: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(task_config=task_config, task_function=task_function, task_type=TASK_TYPE, **kwargs)

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        """The Databricks run spec, as DatabricksAgent reads it."""
        return self.task_config.custom()

    def execute(self, **kwargs: Any) -> Any:
        """Submit the run when running locally; run the function when on the cluster."""
        if _runs_here():
            _ensure_agent()
            return AsyncAgentExecutorMixin.execute(self, **kwargs)
        return PythonFunctionTask.execute(self, **kwargs)


class DatabricksNotebookTask(AsyncAgentExecutorMixin, PythonTask[Databricks]):
    """Run a Databricks notebook; the task's inputs are added to its base parameters.

    Args:
        name: the task's name.
        notebook_path: the notebook's workspace path (or repository path with ``git_source``).
        task_config: compute and credentials, as for a Python task.
        base_parameters: fixed notebook parameters.
        inputs: the task's inputs (primitive types), passed as base parameters by name.
    """

    def __init__(
        self,
        name: str,
        notebook_path: str,
        task_config: Databricks,
        base_parameters: dict[str, str] | None = None,
        inputs: dict[str, type] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            task_type=TASK_TYPE,
            name=name,
            task_config=task_config,
            interface=Interface(inputs=inputs or {}, outputs={}),
            **kwargs,
        )
        self.notebook_path = notebook_path
        self.base_parameters = dict(base_parameters or {})

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        """The run spec with ``notebookPath`` and ``notebookBaseParameters``."""
        custom = self.task_config.custom()
        custom["notebookPath"] = self.notebook_path
        if self.base_parameters:
            custom["notebookBaseParameters"] = self.base_parameters
        return custom

    def execute(self, **kwargs: Any) -> LiteralMap:
        """Submit the notebook run through DatabricksAgent and wait for it."""
        _ensure_agent()
        return AsyncAgentExecutorMixin.execute(self, **kwargs)


TaskPlugins.register_pythontask_plugin(Databricks, DatabricksTask)
