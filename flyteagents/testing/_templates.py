"""Task templates and execution metadata built the way flytekit and FlytePropeller do, for tests."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.models.core import identifier as ids
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate
from flytekit.tools.translator import get_serializable

__all__ = ["execution_metadata", "template_of"]


def template_of(task: Any, settings: SerializationSettings | None = None) -> TaskTemplate:
    """The task template flytekit serializes for ``task`` (default image unless ``settings`` say otherwise)."""
    settings = settings or SerializationSettings(ImageConfig.auto_default_image())
    return get_serializable(OrderedDict(), settings, task).template


def execution_metadata(
    name: str,
    *,
    node: str = "n0",
    attempt: int = 0,
    project: str = "p",
    domain: str = "development",
    task: str = "t",
) -> TaskExecutionMetadata:
    """What FlytePropeller sends with CreateTask for attempt ``attempt`` of node ``node`` in execution ``name``."""
    return TaskExecutionMetadata(
        task_execution_id=ids.TaskExecutionIdentifier(
            task_id=ids.Identifier(ids.ResourceType.TASK, project, domain, task, "v1"),
            node_execution_id=ids.NodeExecutionIdentifier(node, ids.WorkflowExecutionIdentifier(project, domain, name)),
            retry_attempt=attempt,
        ),
        namespace=f"{project}-{domain}",
        labels={},
        annotations={},
        k8s_service_account="",
        environment_variables={},
        identity=None,
    )
