"""Turning the Python values an agent returns as outputs into a LiteralMap proto."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

from flyteidl.core import literals_pb2
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine
from flytekit.models.types import LiteralType

__all__ = ["outputs_to_proto", "python_type_of"]


async def outputs_to_proto(
    values: Mapping[str, Any], interface: Mapping[str, Any] | None = None
) -> literals_pb2.LiteralMap:
    """Convert ``{name: value}`` with flytekit's async TypeEngine.

    A value's own type is used, except for lists and dicts, whose element types are
    erased at runtime: those take the type the task's interface declares (``interface``:
    output name -> flyteidl Variable) when it is known, else one inferred from the elements.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"Resource.outputs must be a dict or a LiteralMap, not {type(values).__name__}")
    hints: dict[str, type] = {}
    declared: dict[str, type] = {}
    for name, value in values.items():
        if isinstance(value, (list, dict)):
            hints[name] = python_type_of(value)
            declared_type = _declared_type(interface.get(name)) if interface is not None else None
            if declared_type is not None:
                declared[name] = declared_type
    ctx = FlyteContextManager.current_context()
    if declared:
        try:
            pb = await TypeEngine.dict_to_literal_map_pb(ctx, dict(values), {**hints, **declared})
        except Exception:  # the values do not fit the declared types (ints for floats, ...): use their own
            pb = await TypeEngine.dict_to_literal_map_pb(ctx, dict(values), hints)
    else:
        pb = await TypeEngine.dict_to_literal_map_pb(ctx, dict(values), hints)
    assert pb is not None
    return pb


def _declared_type(variable: Any) -> type | None:
    if variable is None:
        return None
    try:
        return TypeEngine.guess_python_type(LiteralType.from_flyte_idl(variable.type))
    except Exception:  # a type flytekit cannot reverse: infer from the value instead
        return None


def python_type_of(value: Any) -> Any:
    """The Python type flytekit should convert ``value`` as, looking inside lists and dicts."""
    if isinstance(value, list):
        return list[_common_type([python_type_of(v) for v in value])]  # type: ignore[misc]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return dict[str, _common_type([python_type_of(v) for v in value.values()])]  # type: ignore[misc]
        return dict
    return type(value)


def _common_type(types: list[Any]) -> Any:
    unique = list(dict.fromkeys(types))
    if not unique:
        return str  # an empty collection converts the same whatever its element type
    if len(unique) == 1:
        return unique[0]
    if set(unique) == {int, float}:
        return float
    return typing.Union[tuple(unique)]  # noqa: UP007
