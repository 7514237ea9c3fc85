"""Helpers shared by the OpenAI plugin's tests."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.models.task import TaskTemplate
from flytekit.tools.translator import get_serializable


def template_of(task: Any) -> TaskTemplate:
    """The task template flytekit serializes for ``task``."""
    settings = SerializationSettings(ImageConfig.auto_default_image())
    return get_serializable(OrderedDict(), settings, task).template
