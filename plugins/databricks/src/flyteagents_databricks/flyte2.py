"""Databricks tasks for Flyte 2 (the ``flyte`` SDK), submitted by the same DatabricksAgent.

- A function of a ``flyte.TaskEnvironment(plugin_config=Databricks(...))`` runs on Databricks:
  the run executes flyte's own task entrypoint (``a0``) with the function's inputs, and the
  function's outputs come back through ``{output_prefix}/outputs.pb``.
- ``DatabricksNotebookTask`` runs a notebook.

A local run (``flyte.with_runcontext(mode="local")``) submits the run through DatabricksAgent
in this process and waits for it; remotely ``flyteagents serve`` answers the template over
Flyte 2's connector protocol. Importing this module registers the function task plugin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from flyteagents import TaskFailedError
from flyteagents.flyte2 import AgentTask, run_agent_job, split_options

from ._task import TASK_TYPE, Databricks
from ._task import DatabricksNotebookTask as _FlytekitNotebookTask

# After flyteagents.flyte2, which names the extra to install when the flyte SDK is missing.
try:
    from flyte._internal.runtime import convert, io
    from flyte._internal.runtime.task_serde import get_proto_task
    from flyte.extend import AsyncFunctionTaskTemplate, TaskPluginRegistry
    from flyte.models import SerializationContext
except ImportError as exc:  # pragma: no cover - tests/test_flyte2_imports.py checks it in a subprocess
    raise ImportError(
        "flyteagents_databricks.flyte2 needs the flyte SDK (Flyte 2): pip install 'flyteagents[flyte2]'"
    ) from exc

__all__ = ["Databricks", "DatabricksFunctionTask", "DatabricksNotebookTask"]

#: The placeholders of flyte's entrypoint arguments that the backend fills before CreateTask.
_RUN_PLACEHOLDERS = ("{{.runName}}", "{{.actionName}}", "{{.runStartTime}}")


@dataclass(kw_only=True)
class DatabricksFunctionTask(AsyncFunctionTaskTemplate):  # type: ignore[misc]
    """A Flyte 2 function run on Databricks: ``env.task`` of an environment with ``plugin_config=Databricks(...)``.

    The ``Databricks`` options are the flytekit side's (``databricks_conf`` with the run's
    compute, ``databricks_instance``, ``spark_conf``, ``token_secret``, ...). The run's
    cluster needs the environment's image (flyte and your code), as a Flyte 2 pod does.

    Example:
        ```python
        spark = flyte.TaskEnvironment(
            name="spark",
            plugin_config=Databricks(databricks_conf={"new_cluster": {...}}),
            image=image_with_flyte_and_my_code,
        )

        @spark.task
        def double(x: int) -> int:
            return 2 * x
        ```
    """

    task_type: str = TASK_TYPE

    def __post_init__(self) -> None:
        super().__post_init__()
        # A Databricks run has no Flyte controller to talk to, and this task starts no sub-actions:
        # flyte's entrypoint then runs the function without one (what this variable tells it).
        self.env_vars = {"FLYTE_CLUSTERED_WORKER": "1", **(self.env_vars or {})}

    def custom_config(self, sctx: SerializationContext) -> dict[str, Any]:
        """The Databricks run spec, as DatabricksAgent reads it."""
        config = self.plugin_config
        if not isinstance(config, Databricks):
            raise TypeError(f"{self.name}: plugin_config must be a Databricks, got {type(config).__name__}")
        return config.custom()

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        """On the cluster, run the function; in a local run, submit it to Databricks and wait."""
        import flyte

        tctx = flyte.ctx()
        if not tctx or tctx.mode != "local":
            return await super().execute(*args, **kwargs)
        return await self._submit(tctx, *args, **kwargs)

    async def _submit(self, tctx: Any, *args: Any, **kwargs: Any) -> Any:
        from flyte._initialize import get_init_config

        prefix = tctx.raw_data_path.get_random_remote_path()
        if "://" not in prefix:
            os.makedirs(prefix, exist_ok=True)
        action = tctx.action
        sctx = SerializationContext(
            project=action.project or "local",
            domain=action.domain or "development",
            org=action.org or "local",
            version=tctx.version or "local",
            code_bundle=tctx.code_bundle,
            image_cache=tctx.compiled_image_cache,
            root_dir=get_init_config().root_dir,
        )
        template = get_proto_task(self, sctx)
        self._render(template, prefix, sctx, action)
        inputs = await convert.convert_from_native_to_inputs(self.native_interface, *args, **kwargs)
        await io.upload_inputs(inputs, io.inputs_path(prefix))
        resource = await run_agent_job(template, prefix, name=self.name)
        if resource.phase_name != "SUCCEEDED":
            raise TaskFailedError(
                f"task {self.name} ended {resource.phase_name}: {resource.message or 'no message'}",
                phase=resource.phase_name,
            )
        if not self.native_interface.outputs:
            return None
        outputs = await io.load_outputs(io.outputs_path(prefix))
        return await convert.convert_outputs_to_native(self.native_interface, outputs)

    @staticmethod
    def _render(template: Any, prefix: str, sctx: SerializationContext, action: Any) -> None:
        """Fill the run placeholders and the run's identity, as the Flyte 2 backend does before CreateTask."""
        values = {
            "{{.runName}}": action.run_name or action.name or "local",
            "{{.actionName}}": action.name or "a0",
            "{{.runStartTime}}": "1970-01-01T00:00:00+00:00",
        }
        args = list(template.container.args)
        for i, arg in enumerate(args):
            for key in _RUN_PLACEHOLDERS:
                arg = arg.replace(key, values[key])
            args[i] = arg
        identity = ["--org", sctx.org or "local", "--project", sctx.project, "--domain", sctx.domain]
        identity += ["--run-base-dir", f"{prefix}/base"]
        del template.container.args[:]
        template.container.args.extend([args[0], *identity, *args[1:]])


TaskPluginRegistry.register(Databricks, DatabricksFunctionTask)


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
