"""Literals built directly, where flytekit's TypeEngine would only add cost: str, int, float and bool outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flyteidl.core import literals_pb2
from flytekit.models.literals import LiteralMap

__all__ = ["literal_map_model", "primitive_literal_map"]

_INT64 = range(-(2**63), 2**63)
_PB = "_flyteagents_pb"


def primitive_literal_map(
    values: Mapping[str, Any], python_types: Mapping[str, Any] | None = None
) -> literals_pb2.LiteralMap | None:
    """``values`` as a LiteralMap when each is a str, int, float or bool; None otherwise.

    Builds the proto flytekit's TypeEngine would build for these values, without the TypeEngine:
    each value takes its type from ``python_types`` (output name -> Python type) when given,
    else its own. Any other value or pair (None, lists, dataclasses, files, an int for a float,
    which flytekit refuses) gives None: convert those with the TypeEngine.
    """
    pb = literals_pb2.LiteralMap()
    literals = pb.literals
    for name, value in values.items():
        kind = type(value)
        python_type = kind if python_types is None else python_types.get(name)
        if python_type is not kind:
            return None
        primitive = literals[name].scalar.primitive
        if kind is str:
            primitive.string_value = value
        elif kind is int and value in _INT64:
            primitive.integer = value
        elif kind is float:
            primitive.float_value = value
        elif kind is bool:
            primitive.boolean = value
        else:
            return None
    return pb


class _ProtoLiteralMap(LiteralMap):  # type: ignore[misc]
    """A flytekit LiteralMap holding its proto, converted to the model only when a field is read."""

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the instance lacks: before conversion, all of the model's.
        pb = self.__dict__.pop(_PB, None)
        if pb is None or name.startswith("__"):
            raise AttributeError(name)
        self.__dict__.update(LiteralMap.from_flyte_idl(pb).__dict__)
        return getattr(self, name)

    def to_flyte_idl(self) -> literals_pb2.LiteralMap:
        pb = self.__dict__.get(_PB)
        return pb if pb is not None else LiteralMap.to_flyte_idl(self)


def literal_map_model(pb: literals_pb2.LiteralMap) -> LiteralMap:
    """A flytekit LiteralMap for ``pb`` that costs nothing until read; ``to_flyte_idl()`` unread is ``pb`` itself."""
    model = object.__new__(_ProtoLiteralMap)
    setattr(model, _PB, pb)
    return model
