"""CreateTask and GetTask requests built the way FlytePropeller sends them, for tests."""

from __future__ import annotations

from typing import Any

from flyteidl.admin import agent_pb2
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine

from ._templates import template_of

__all__ = ["create_task_request", "get_task_request"]


def create_task_request(
    task: Any,
    output_prefix: str,
    inputs: dict[str, Any] | None = None,
    *,
    custom: dict[str, Any] | None = None,
) -> agent_pb2.CreateTaskRequest:
    """A CreateTaskRequest for a flytekit task: its serialized template and its inputs as literals.

    Args:
        task: the flytekit task (a sensor, an agent-backed task, ...).
        output_prefix: where the task's outputs belong.
        inputs: Python input values, converted with the task's interface; no inputs message when None.
        custom: keys that replace those of the template's ``custom`` (to send what a user could not build).
    """
    template = template_of(task)
    if custom:
        template.custom.update(custom)
    request = agent_pb2.CreateTaskRequest(template=template.to_flyte_idl(), output_prefix=output_prefix)
    if inputs is not None:
        ctx = FlyteContextManager.current_context()
        literals = TypeEngine.dict_to_literal_map(ctx, inputs, task.python_interface.inputs)
        request.inputs.CopyFrom(literals.to_flyte_idl())
    return request


def get_task_request(resource_meta: bytes, task_type: str, version: int = 0) -> agent_pb2.GetTaskRequest:
    """A GetTaskRequest with the task category and, as propeller also sends it, the deprecated task_type."""
    return agent_pb2.GetTaskRequest(
        task_category=agent_pb2.TaskCategory(name=task_type, version=version),
        task_type=task_type,
        resource_meta=resource_meta,
    )
