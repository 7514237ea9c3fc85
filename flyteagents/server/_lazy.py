"""flytekit models built from their protos only when an agent first reads them.

The service hands agents flytekit models (TaskTemplate, LiteralMap, TaskExecutionMetadata),
but converting a template costs far more than the whole gRPC call. These lazy subclasses
hold the proto and convert it, once, on the first attribute an agent reads, so an agent
pays only for what it uses. They are real instances of the model classes.
"""

from __future__ import annotations

from typing import Any

from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

from .._exceptions import InvalidTaskError

__all__ = ["task_arguments", "unconverted_proto"]

_PB = "_flyteagents_pb"


class _Lazy:
    _model: type
    _what: str

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the instance lacks: before conversion, all of them.
        state = self.__dict__
        pb = state.pop(_PB, None)
        if pb is None or name.startswith("__"):
            raise AttributeError(name)
        try:
            model = self._model.from_flyte_idl(pb)  # type: ignore[attr-defined]
        except Exception as exc:
            raise InvalidTaskError(f"the {self._what} cannot be read: {exc}") from exc
        state.update(model.__dict__)
        return getattr(self, name)

    def to_flyte_idl(self) -> Any:
        pb = self.__dict__.get(_PB)
        return pb if pb is not None else self._model.to_flyte_idl(self)  # type: ignore[attr-defined]


class _LazyTaskTemplate(_Lazy, TaskTemplate):
    _model = TaskTemplate
    _what = "task template"


class _LazyLiteralMap(_Lazy, LiteralMap):
    _model = LiteralMap
    _what = "task inputs"


class _LazyTaskExecutionMetadata(_Lazy, TaskExecutionMetadata):
    _model = TaskExecutionMetadata
    _what = "task execution metadata"


def task_arguments(template_pb: Any, output_prefix: str, inputs_pb: Any, meta_pb: Any) -> dict[str, Any]:
    """The keyword arguments of an agent's ``create`` or ``do``: the request's protos as lazy flytekit models.

    ``inputs_pb`` and ``meta_pb`` are None when the request did not send them; so are their arguments.
    """
    # Three objects built inline, no helper per object: this runs on every CreateTask and ExecuteTaskSync,
    # where each Python call costs more than the object it makes (caches are cold between gRPC calls).
    # setattr, not obj.__dict__[...]: no instance dict is built until a model converts.
    template = object.__new__(_LazyTaskTemplate)
    setattr(template, _PB, template_pb)
    inputs = meta = None
    if inputs_pb is not None:
        inputs = object.__new__(_LazyLiteralMap)
        setattr(inputs, _PB, inputs_pb)
    if meta_pb is not None:
        meta = object.__new__(_LazyTaskExecutionMetadata)
        setattr(meta, _PB, meta_pb)
    return {
        "task_template": template,
        "output_prefix": output_prefix,
        "inputs": inputs,
        "task_execution_metadata": meta,
    }


def unconverted_proto(obj: Any) -> Any:
    """The proto behind a lazy model nobody has read yet (so it can be sent back as is), else None."""
    return obj.__dict__.get(_PB) if isinstance(obj, _Lazy) else None
