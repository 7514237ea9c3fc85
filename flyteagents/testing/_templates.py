"""Task templates serialized the way ``pyflyte register`` does, for tests that play FlytePropeller."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.models.task import TaskTemplate
from flytekit.tools.translator import get_serializable

__all__ = ["template_of"]


def template_of(task: Any, settings: SerializationSettings | None = None) -> TaskTemplate:
    """The task template flytekit serializes for ``task`` (default image unless ``settings`` say otherwise)."""
    settings = settings or SerializationSettings(ImageConfig.auto_default_image())
    return get_serializable(OrderedDict(), settings, task).template
