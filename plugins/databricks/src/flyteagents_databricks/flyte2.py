"""DatabricksNotebookTask for Flyte 2 (the ``flyte`` SDK): a notebook run submitted by the same DatabricksAgent.

Add it to a ``flyte.TaskEnvironment``; a local run (``flyte.with_runcontext(mode="local")``)
submits the run through DatabricksAgent in this process and waits for it, and remotely
``flyteagents serve`` answers its template over Flyte 2's connector protocol.

A Python *function* run on Databricks is not here yet: on Flyte 2 the cluster would run
flyte's own entrypoint (``a0``), which the agent's run spec does not build.
"""

from __future__ import annotations

from typing import Any

from flyteagents.flyte2 import AgentTask, split_options

from ._task import Databricks
from ._task import DatabricksNotebookTask as _FlytekitNotebookTask

__all__ = ["Databricks", "DatabricksNotebookTask"]


class DatabricksNotebookTask(AgentTask):
    """Run a Databricks notebook from Flyte 2; the task's inputs are added to its base parameters.

    The arguments are those of ``flyteagents_databricks.DatabricksNotebookTask``, plus flyte
    task options (``retries``, ...).

    Example:
        ```python
        report = DatabricksNotebookTask(
            name="report",
            notebook_path="/Shared/report",
            task_config=Databricks(databricks_conf={"existing_cluster_id": "0101-abc"}),
            inputs={"day": str},
        )
        env = flyte.TaskEnvironment.from_task("databricks", report)
        ```
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
        options, rest = split_options(kwargs)
        task = _FlytekitNotebookTask(
            name=name,
            notebook_path=notebook_path,
            task_config=task_config,
            base_parameters=base_parameters,
            inputs=inputs,
            **rest,
        )
        super().__init__(task, **options)
