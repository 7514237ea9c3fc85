"""Reading inputs from and building outputs as Flyte literals, without the type engine on the hot path."""

from __future__ import annotations

from typing import Any

from flytekit.models.literals import Literal, LiteralMap, Primitive, Scalar

from flyteagents import InvalidTaskError

__all__ = ["string_input", "string_literal", "task_custom"]


def task_custom(task_template: Any) -> dict[str, Any]:
    """The template's custom field as a dict (it is one for every task these agents serve)."""
    custom = task_template.custom
    if not isinstance(custom, dict):
        raise InvalidTaskError(f"task {task_template.id.name!r} has no custom configuration")
    return custom


def string_input(inputs: LiteralMap | None, name: str) -> str:
    """The string input ``name``.

    Raises:
        InvalidTaskError: the input is missing or not a string.
    """
    literal = inputs.literals.get(name) if inputs is not None else None
    if literal is None:
        raise InvalidTaskError(f"missing input {name!r}")
    scalar = literal.scalar
    primitive = scalar.primitive if scalar is not None else None
    if primitive is None or primitive.string_value is None:
        raise InvalidTaskError(f"input {name!r} must be a string")
    return primitive.string_value


def string_literal(value: str) -> Literal:
    """A string literal."""
    return Literal(scalar=Scalar(primitive=Primitive(string_value=value)))
