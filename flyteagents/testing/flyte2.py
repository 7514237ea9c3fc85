"""Drive a Flyte 2 task through an agent service as the Flyte 2 backend does (needs the ``flyte`` SDK).

``run_on_service`` serializes the task with the flyte SDK's own serialization, converts the
inputs with its type engine, calls the service's ``flyteidl2.connector.AsyncConnectorService``
(CreateTask, then GetTask until the job ends) and converts the outputs back with flyte's type
engine: what a remote run does, minus the cluster.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import flyte.storage as storage
import grpc
from flyte._internal.runtime import convert, io
from flyte._internal.runtime.task_serde import get_proto_task
from flyte.extend import TaskTemplate
from flyte.models import SerializationContext
from flyteidl2.connector import connector_pb2, service_pb2_grpc
from flyteidl2.core import identifier_pb2, tasks_pb2
from flyteidl2.core.execution_pb2 import TaskExecution

from ._process import ServerProcess

__all__ = ["AgentService", "Flyte2Failure", "run_on_service", "serialize"]

_TERMINAL = (TaskExecution.SUCCEEDED, TaskExecution.FAILED, TaskExecution.ABORTED, TaskExecution.RETRYABLE_FAILED)


class AgentService(ServerProcess):
    """``flyteagents serve`` in a process of its own, on a free loopback port, one worker.

    Args:
        modules: modules the service imports besides the installed plugins (``--modules``).
        env: environment variables added to this process's for the service.
        cwd: its working directory (where ``modules`` are found).
    """

    name = "flyteagents serve"

    def __init__(
        self, modules: str = "", env: dict[str, str] | None = None, cwd: str | Path | None = None, **kwargs: Any
    ) -> None:
        super().__init__(startup_timeout=kwargs.pop("startup_timeout", 60.0), **kwargs)
        self.modules, self.env, self.cwd = modules, dict(env or {}), cwd

    @property
    def address(self) -> str:
        """``host:port`` to dial."""
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        """``flyteagents serve`` from this interpreter's environment."""
        binary = Path(sys.executable).parent / "flyteagents"
        command = [str(binary), "serve", "--host", self.host, "--port", str(self.port), "--workers", "1"]
        return [*command, "--metrics-port", "0", *(["--modules", self.modules] if self.modules else [])]

    def environment(self) -> dict[str, str] | None:
        """This process's environment plus ``env``; run from ``cwd``."""
        env = {**os.environ, **self.env}
        if self.cwd is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(self.cwd), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env


class Flyte2Failure(Exception):
    """The job ended in another phase than SUCCEEDED."""

    def __init__(self, phase: int, message: str) -> None:
        super().__init__(f"{TaskExecution.Phase.Name(phase)}: {message}")  # type: ignore[arg-type]
        self.phase = phase
        self.message = message


def serialize(task: TaskTemplate, project: str = "flyteagents", domain: str = "development") -> tasks_pb2.TaskTemplate:
    """The task's flyteidl2 TaskTemplate, made by the flyte SDK's own serialization."""
    sctx = SerializationContext(
        project=project,
        domain=domain,
        org="local",
        version="v1",
        image_cache=None,
        code_bundle=None,
        root_dir=Path.cwd(),
    )
    return get_proto_task(task, sctx)


async def run_on_service(
    address: str,
    task: TaskTemplate,
    output_prefix: str = "/tmp/flyteagents-flyte2",
    poll_interval: float = 0.05,
    timeout: float = 60.0,
    **inputs: Any,
) -> Any:
    """Run ``task`` on the agent service at ``address`` over Flyte 2's protocol; return its outputs.

    Outputs are as a flyte task returns them: None, one value, or a tuple.

    Raises:
        Flyte2Failure: the job ended FAILED, ABORTED or RETRYABLE_FAILED.
        grpc.aio.AioRpcError: the service refused a call.
        TimeoutError: the job did not end within ``timeout`` seconds.
    """
    template = serialize(task)
    literals = await convert.convert_from_native_to_inputs(task.native_interface, **inputs)
    if template.container.args:
        # A task whose job runs flyte's entrypoint (a Databricks function): like the backend, fill
        # the entrypoint's placeholders and store the inputs where they point.
        _render(template, output_prefix)
        await io.upload_inputs(literals, io.inputs_path(output_prefix))
    execution = identifier_pb2.TaskExecutionIdentifier(
        task_id=template.id,
        node_execution_id=identifier_pb2.NodeExecutionIdentifier(
            node_id="n0",
            execution_id=identifier_pb2.WorkflowExecutionIdentifier(
                project=template.id.project, domain=template.id.domain, name=f"f2-{uuid.uuid4().hex[:10]}"
            ),
        ),
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.AsyncConnectorServiceStub(channel)
        created = await stub.CreateTask(
            connector_pb2.CreateTaskRequest(
                template=template,
                inputs=literals.proto_inputs,
                output_prefix=output_prefix,
                task_execution_metadata=connector_pb2.TaskExecutionMetadata(task_execution_id=execution),
            ),
            timeout=10,
        )
        category = connector_pb2.TaskCategory(name=template.type, version=template.task_type_version)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = await stub.GetTask(
                connector_pb2.GetTaskRequest(
                    resource_meta=created.resource_meta, task_category=category, output_prefix=output_prefix
                ),
                timeout=10,
            )
            resource = got.resource
            if resource.phase in _TERMINAL:
                break
            if loop.time() > deadline:
                await stub.DeleteTask(
                    connector_pb2.DeleteTaskRequest(resource_meta=created.resource_meta, task_category=category),
                    timeout=10,
                )
                raise TimeoutError(f"{task.name} did not end within {timeout}s")
            await asyncio.sleep(poll_interval)
    if resource.phase != TaskExecution.SUCCEEDED:
        raise Flyte2Failure(resource.phase, resource.message)
    if not task.native_interface.outputs:
        return None
    outputs = convert.Outputs(resource.outputs)
    if not resource.outputs.literals and await storage.exists(io.outputs_path(output_prefix)):
        outputs = await io.load_outputs(io.outputs_path(output_prefix))  # written by the job itself
    return await convert.convert_outputs_to_native(task.native_interface, outputs)


def _render(template: tasks_pb2.TaskTemplate, output_prefix: str) -> None:
    values = {
        "{{.input}}": io.inputs_path(output_prefix),
        "{{.outputPrefix}}": output_prefix,
        "{{.rawOutputDataPrefix}}": f"{output_prefix}/raw",
        "{{.checkpointOutputPrefix}}": f"{output_prefix}/checkpoint",
        "{{.prevCheckpointPrefix}}": "",
        "{{.runName}}": "run0",
        "{{.actionName}}": "a0",
        "{{.runStartTime}}": "1970-01-01T00:00:00+00:00",
    }
    args = []
    for arg in template.container.args:
        for key, value in values.items():
            arg = arg.replace(key, value)
        args.append(arg)
    del template.container.args[:]
    template.container.args.extend(args)
