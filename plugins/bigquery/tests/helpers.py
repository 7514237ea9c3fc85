"""Building task templates and execution metadata the way flytekit and FlytePropeller do."""

from __future__ import annotations

from typing import Any

from flytekit import FlyteContextManager
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

from flyteagents import testing


def template_of(task: Any) -> TaskTemplate:
    settings = SerializationSettings(ImageConfig.auto_default_image(), project="p", domain="development")
    return testing.template_of(task, settings)


def inputs_of(task: Any, **values: Any) -> LiteralMap:
    ctx = FlyteContextManager.current_context()
    return TypeEngine.dict_to_literal_map(ctx, values, task.get_input_types())


def execution(name: str, node: str = "n0", retry: int = 0) -> TaskExecutionMetadata:
    return testing.execution_metadata(name, node=node, attempt=retry, task="bq_task")
