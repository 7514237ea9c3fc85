"""Turning a task's input literals into typed BigQuery query parameters."""

from __future__ import annotations

import datetime
import io
import pickle
import typing
from typing import Any, Union

from flytekit.core.context_manager import FlyteContextManager
from flytekit.models.literals import Literal, LiteralMap
from flytekit.models.types import LiteralType, SimpleType
from google.cloud import bigquery

from flyteagents import InvalidTaskError

__all__ = ["SUPPORTED", "bigquery_type_for", "query_parameters"]

SUPPORTED = "int, float, str, bool, datetime, date, bytes, or a list of those"
_PICKLE_FORMAT = "PythonPickle"
_MAX_BYTES_PARAM = 10 * 1024 * 1024  # BigQuery caps a request at 10 MB anyway
_SIMPLE = {
    SimpleType.INTEGER: "INT64",
    SimpleType.FLOAT: "FLOAT64",
    SimpleType.STRING: "STRING",
    SimpleType.BOOLEAN: "BOOL",
    SimpleType.DATETIME: "DATETIME",
}
_PYTHON = {int: "INT64", float: "FLOAT64", str: "STRING", bool: "BOOL", bytes: "BYTES"}


def bigquery_type_for(python_type: Any) -> tuple[str, bool]:
    """The BigQuery type of a task input's Python type, and whether it is an array.

    Raises:
        TypeError: the type cannot be a query parameter.
    """
    origin = typing.get_origin(python_type)
    args = [a for a in typing.get_args(python_type) if a is not type(None)]
    if origin is Union or type(python_type).__name__ == "UnionType":
        if len(args) == 1:
            return bigquery_type_for(args[0])
    elif origin in (list, typing.List) and len(args) == 1:  # noqa: UP006
        inner, is_array = bigquery_type_for(args[0])
        if not is_array:
            return inner, True
    elif python_type in _PYTHON:
        return _PYTHON[python_type], False
    elif python_type is datetime.datetime:
        return "DATETIME", False
    elif python_type is datetime.date:
        return "DATE", False
    raise TypeError(f"{python_type!r} cannot be a BigQuery query parameter; use {SUPPORTED}")


def query_parameters(
    inputs: LiteralMap | None,
    input_types: dict[str, LiteralType],
    overrides: dict[str, str] | None = None,
) -> list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter]:
    """One named query parameter per task input, typed from the task interface.

    Args:
        inputs: the task's input literals.
        input_types: the template interface's input types by name.
        overrides: BigQuery types by input name (from the task config), such as
            ``{"day": "DATE"}``; they win over the types inferred from the interface.

    Raises:
        InvalidTaskError: an input has a type BigQuery parameters cannot take, or a
            value does not match its type.
    """
    overrides = overrides or {}
    params: list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter] = []
    literals = inputs.literals if inputs is not None else {}
    for name, literal in literals.items():
        lt = input_types.get(name)
        if lt is None:
            raise InvalidTaskError(f"input {name!r} is not declared in the task interface")
        bq_type, is_array = _type_of(name, lt)
        bq_type = overrides.get(name, bq_type)
        value = _value(name, literal)
        if is_array:
            items = [] if value is None else value
            params.append(bigquery.ArrayQueryParameter(name, bq_type, [_cast(name, bq_type, v) for v in items]))
        else:
            params.append(bigquery.ScalarQueryParameter(name, bq_type, _cast(name, bq_type, value)))
    return params


def _type_of(name: str, lt: LiteralType) -> tuple[str, bool]:
    if lt.union_type is not None:
        variants = [v for v in lt.union_type.variants if v.simple != SimpleType.NONE]
        if len(variants) == 1:
            return _type_of(name, variants[0])
    elif lt.collection_type is not None:
        inner, is_array = _type_of(name, lt.collection_type)
        if not is_array:
            return inner, True
    elif lt.simple is not None and lt.simple in _SIMPLE:
        return _SIMPLE[lt.simple], False
    elif lt.blob is not None and lt.blob.format == _PICKLE_FORMAT and _pickled_class(lt) == "<class 'bytes'>":
        return "BYTES", False
    raise InvalidTaskError(
        f"input {name!r} has type {_describe(lt)}, which cannot be a query parameter; use {SUPPORTED}"
    )


def _pickled_class(lt: LiteralType) -> str | None:
    meta = lt.metadata or {}
    return meta.get("python_class_name") if isinstance(meta, dict) else None


def _describe(lt: LiteralType) -> str:
    return " ".join(str(lt.to_flyte_idl()).split())[:120]


def _value(name: str, literal: Literal) -> Any:
    if literal.collection is not None:
        return [_value(name, item) for item in literal.collection.literals]
    scalar = literal.scalar
    if scalar is None:
        raise InvalidTaskError(f"input {name!r} is not a scalar or a list of scalars")
    if scalar.union is not None:
        return _value(name, scalar.union.value)
    if scalar.none_type is not None:
        return None
    if scalar.primitive is not None:
        return scalar.primitive.value
    if scalar.binary is not None:
        return bytes(scalar.binary.value)
    if scalar.blob is not None and scalar.blob.metadata.type.format == _PICKLE_FORMAT:
        return _read_pickled_bytes(name, scalar.blob.uri)
    raise InvalidTaskError(f"input {name!r} holds a value query parameters cannot take; use {SUPPORTED}")


class _BytesOnlyUnpickler(pickle.Unpickler):
    """Loads pickles of plain data only: resolving any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_pickled_bytes(name: str, uri: str) -> bytes:
    # flytekit sends ``bytes`` inputs as a pickle file; only a pickled bytes object is accepted.
    ctx = FlyteContextManager.current_context()
    local = ctx.file_access.get_random_local_path()
    try:
        ctx.file_access.get_data(uri, local)
        with open(local, "rb") as f:
            data = f.read(_MAX_BYTES_PARAM + 1024)
        value = _BytesOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise InvalidTaskError(f"input {name!r}: cannot read its bytes value: {type(exc).__name__}") from None
    if not isinstance(value, bytes):
        raise InvalidTaskError(f"input {name!r} is a pickled {type(value).__name__}, not bytes")
    return value


def _cast(name: str, bq_type: str, value: Any) -> Any:
    """Adjust a literal's Python value to the BigQuery type (Flyte datetimes are UTC instants)."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        utc = value.astimezone(datetime.timezone.utc) if value.tzinfo else value
        if bq_type == "DATE":
            return utc.date()
        if bq_type == "DATETIME":
            return utc.replace(tzinfo=None)
        if bq_type == "TIMESTAMP":
            return utc if utc.tzinfo else utc.replace(tzinfo=datetime.timezone.utc)
    accepted: dict[str, type | tuple[type, ...]] = {
        "INT64": int,
        "FLOAT64": (int, float),
        "NUMERIC": (int, float),
        "BIGNUMERIC": (int, float),
        "STRING": str,
        "BOOL": bool,
        "BYTES": bytes,
    }
    ok = accepted.get(bq_type)
    if ok is None or not isinstance(value, ok):
        raise InvalidTaskError(f"input {name!r}: a {type(value).__name__} value cannot be a {bq_type} parameter")
    return value
