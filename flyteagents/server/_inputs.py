"""Checking a request's inputs against the interface its task template declares.

An input of the wrong kind would otherwise reach the agent and fail deep inside flytekit's
conversion, as an internal error whose message quotes the value. Checked here, it is the
caller's error (INVALID_ARGUMENT), named by input and types, never by value.
"""

from __future__ import annotations

from typing import Any

from flyteidl.core import literals_pb2, tasks_pb2, types_pb2

from .._exceptions import InvalidTaskError

__all__ = ["check_inputs"]

_Simple = types_pb2.SimpleType
#: simple type -> the Primitive field that carries it
_PRIMITIVES = {
    _Simple.INTEGER: "integer",
    _Simple.FLOAT: "float_value",
    _Simple.STRING: "string_value",
    _Simple.BOOLEAN: "boolean",
    _Simple.DATETIME: "datetime",
    _Simple.DURATION: "duration",
}
#: LiteralType kind -> the Scalar field that carries it
_SCALARS = {"blob": "blob", "schema": "schema", "structured_dataset_type": "structured_dataset"}
_NO_INPUTS: dict[str, literals_pb2.Literal] = {}


def check_inputs(template_pb: tasks_pb2.TaskTemplate, inputs_pb: literals_pb2.LiteralMap | None) -> None:
    """InvalidTaskError unless ``inputs_pb`` fits the template's declared inputs.

    Every declared input must be given (an optional one, a union with none, may be left
    out), none may be given that is not declared, and each must be of its declared kind.
    A template with no interface accepts any inputs.
    """
    declared = template_pb.interface.inputs.variables
    given = inputs_pb.literals if inputs_pb is not None else _NO_INPUTS
    if not declared and not template_pb.HasField("interface"):
        return
    # Names by key, never .items(): the proto maps' items() is collections.abc's Python-level view.
    unknown = [name for name in given if name not in declared]
    if unknown or len(given) < len(declared):
        missing = [name for name in declared if name not in given and not _optional(declared[name].type)]
        if unknown or missing:
            raise _mismatch(missing, unknown)
    for name in given:
        literal = given[name]
        declared_type = declared[name].type
        if not _fits(literal, declared_type):
            raise InvalidTaskError(
                f"input {name!r} is {_literal_kind(literal)}, but the task declares {_type_name(declared_type)}"
            )


def _mismatch(missing: list[str], unknown: list[str]) -> InvalidTaskError:
    parts = []
    if missing:
        parts.append(f"missing {', '.join(sorted(missing))}")
    if unknown:
        parts.append(f"not declared: {', '.join(sorted(unknown))}")
    return InvalidTaskError(f"the inputs do not match the task's interface ({'; '.join(parts)})")


def _optional(tp: types_pb2.LiteralType) -> bool:
    return tp.WhichOneof("type") == "union_type" and any(
        v.WhichOneof("type") == "simple" and v.simple == _Simple.NONE for v in tp.union_type.variants
    )


def _fits(literal: literals_pb2.Literal, tp: types_pb2.LiteralType) -> bool:
    """Whether ``literal`` is of the kind ``tp`` declares; True where flytekit decides (unions, structs, ...)."""
    kind = tp.WhichOneof("type")
    value = literal.WhichOneof("value")
    if kind is None or value is None or value == "offloaded_metadata":
        return True
    if kind == "union_type":
        if value == "scalar" and literal.scalar.WhichOneof("value") == "union":
            return True  # flytekit's own union literal names its variant
        return any(_fits(literal, variant) for variant in tp.union_type.variants)
    if value == "collection":
        items = literal.collection.literals
        return kind == "collection_type" and all(_fits(item, tp.collection_type) for item in items)
    if value == "map":
        values = literal.map.literals.values()
        return kind == "map_value_type" and all(_fits(item, tp.map_value_type) for item in values)
    scalar = literal.scalar
    which = scalar.WhichOneof("value")
    if which == "union":
        return _fits(scalar.union.value, tp)
    if kind == "simple":
        simple = tp.simple
        primitive = _PRIMITIVES.get(simple)
        if primitive is not None:
            return which == "primitive" and scalar.primitive.WhichOneof("value") == primitive
        if simple == _Simple.NONE:
            return which == "none_type"
        if simple == _Simple.STRUCT:  # a dict or a dataclass: a Struct, or msgpack bytes
            return which in ("generic", "binary")
        if simple == _Simple.BINARY:
            return which == "binary"
        return True
    if kind == "enum_type":
        return which == "primitive" and scalar.primitive.WhichOneof("value") == "string_value"
    expected = _SCALARS.get(kind)
    if expected is not None:
        return which == expected
    if kind in ("collection_type", "map_value_type"):
        return False
    return True


def _type_name(tp: types_pb2.LiteralType) -> str:
    kind = tp.WhichOneof("type")
    if kind == "simple":
        return _Simple.Name(tp.simple).lower()
    if kind == "collection_type":
        return f"a list of {_type_name(tp.collection_type)}"
    if kind == "map_value_type":
        return f"a map of {_type_name(tp.map_value_type)}"
    if kind == "union_type":
        return " or ".join(_type_name(v) for v in tp.union_type.variants)
    return {"blob": "a file", "enum_type": "an enum", "structured_dataset_type": "a dataset"}.get(kind or "", str(kind))


def _literal_kind(literal: Any) -> str:
    """What a literal holds, by kind only (never its value: inputs may be confidential)."""
    value = literal.WhichOneof("value")
    if value == "collection":
        return "a list"
    if value == "map":
        return "a map"
    if value != "scalar":
        return str(value)
    which = literal.scalar.WhichOneof("value")
    if which == "primitive":
        primitive = literal.scalar.primitive.WhichOneof("value")
        return {
            "integer": "an integer",
            "float_value": "a float",
            "string_value": "a string",
            "boolean": "a boolean",
            "datetime": "a datetime",
            "duration": "a duration",
        }.get(primitive or "", "an empty primitive")
    return {"blob": "a file", "none_type": "none", "generic": "a struct", "structured_dataset": "a dataset"}.get(
        which or "", str(which)
    )
