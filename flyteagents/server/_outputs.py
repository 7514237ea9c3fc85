"""Turning the Python values an agent returns as outputs into a LiteralMap proto.

Values that flytekit stores as files (pickled objects, FlyteFile, FlyteDirectory, data
frames) are written under the task's output_prefix, the one place the next task, on
another machine, can read them from; never to the service's own disk.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import sys
import tempfile
import threading
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from flyteidl.core import literals_pb2
from flytekit.configuration import DataConfig
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.data_persistence import FileAccessProvider
from flytekit.core.type_engine import TypeEngine
from flytekit.lazy_import.lazy_module import is_imported
from flytekit.models.types import LiteralType

from .._exceptions import TaskFailedError
from .._literals import primitive_literal_map

__all__ = ["outputs_to_proto", "python_type_of", "settle_type_engine"]

#: The modules whose import makes flytekit's TypeEngine register more transformers (its
#: lazy_import_transformers and lazy_import_structured_dataset_handler look at these).
_TRANSFORMER_MODULES = (
    "tensorflow",
    "torch",
    "sklearn",
    "pydantic",
    "pandas",
    "numpy",
    "PIL",
    "pyarrow",
    "google.cloud.bigquery",
    "snowflake.connector",
)
_settled = threading.Lock()

#: Values flytekit turns into literals without storing anything.
_INLINE = (str, int, float, bool, type(None), datetime.datetime, datetime.date, datetime.timedelta, enum.Enum)


def settle_type_engine() -> None:
    """Make flytekit's TypeEngine register its lazily imported transformers once, not on every lookup.

    flytekit 1.16 runs ``TypeEngine.lazy_import_transformers`` on every transformer lookup. With
    pandas imported and its StructuredDataset handlers registered first (as a plugin importing
    ``flytekit.types.structured`` does), the import of ``flytekit.types.schema.types_pandas`` in it
    fails with "already registered" and is retried, source compiled again, on each lookup: about
    a millisecond of CPU for every output converted. After this call the registration runs again
    only when one of the modules it looks at has been imported since. Idempotent, process-wide.
    """
    with _settled:
        current = TypeEngine.__dict__["lazy_import_transformers"]
        if getattr(current.__func__, "_flyteagents_settled", False):
            return
        register = current.__func__
        lock = threading.Lock()
        seen: list[tuple[bool, ...]] = []

        def lazy_import_transformers(cls: type[TypeEngine]) -> None:
            modules = sys.modules
            # is_imported only where the name is in sys.modules: most of these never are.
            key = tuple(name in modules and is_imported(name) for name in _TRANSFORMER_MODULES)
            if seen and seen[0] == key:
                return
            with lock:
                register(cls)
                seen[:] = [key]

        lazy_import_transformers._flyteagents_settled = True  # type: ignore[attr-defined]
        TypeEngine.lazy_import_transformers = classmethod(lazy_import_transformers)  # type: ignore[method-assign,assignment]
    TypeEngine.lazy_import_transformers()  # register now, not on the first call served


async def outputs_to_proto(
    values: Mapping[str, Any], interface: Mapping[str, Any] | None = None, output_prefix: str | None = None
) -> literals_pb2.LiteralMap:
    """Convert ``{name: value}`` with flytekit's async TypeEngine.

    A value's own type is used, except for lists and dicts, whose element types are
    erased at runtime: those take the type the task's interface declares (``interface``:
    output name -> flyteidl Variable) when it is known, else one inferred from the elements.
    Values stored as files go under ``output_prefix``.

    Raises:
        TaskFailedError: a value must be stored as a file and there is no ``output_prefix``.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"Resource.outputs must be a dict or a LiteralMap, not {type(values).__name__}")
    fast = primitive_literal_map(values)
    if fast is not None:
        return fast
    stored = not all(_inline(value) for value in values.values())
    pb = await _convert(values, interface, _file_access(output_prefix) if stored and output_prefix else None)
    if stored and not output_prefix:
        for name, uri in _local_uris(pb):
            raise TaskFailedError(
                f"output {name!r} is stored as a file, and the request carries no output_prefix to store it "
                f"under where the next task can read it (it would stay at {uri} on the agent service's disk)"
            )
    return pb


async def _convert(
    values: Mapping[str, Any], interface: Mapping[str, Any] | None, file_access: FileAccessProvider | None
) -> literals_pb2.LiteralMap:
    hints: dict[str, type] = {}
    declared: dict[str, type] = {}
    for name, value in values.items():
        if isinstance(value, (list, dict)):
            hints[name] = python_type_of(value)
            declared_type = _declared_type(interface.get(name)) if interface is not None else None
            if declared_type is not None:
                declared[name] = declared_type
    ctx = FlyteContextManager.current_context()
    if file_access is not None:
        ctx = ctx.with_file_access(file_access).build()
    if declared:
        try:
            pb = await TypeEngine.dict_to_literal_map_pb(ctx, dict(values), {**hints, **declared})
        except Exception:  # the values do not fit the declared types (ints for floats, ...): use their own
            pb = await TypeEngine.dict_to_literal_map_pb(ctx, dict(values), hints)
    else:
        pb = await TypeEngine.dict_to_literal_map_pb(ctx, dict(values), hints)
    assert pb is not None
    return pb


def _inline(value: Any) -> bool:
    """Whether flytekit converts ``value`` without storing a file (so no output_prefix is needed)."""
    if isinstance(value, _INLINE):
        return True
    if isinstance(value, (list, tuple)):
        return all(_inline(v) for v in value)
    if isinstance(value, dict):
        return all(_inline(v) for v in value.values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_inline(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


@functools.cache
def _data_config() -> DataConfig:
    return DataConfig.auto()  # credentials and endpoints from the service's environment, read once


@functools.cache
def _sandbox() -> str:
    return tempfile.mkdtemp(prefix="flyteagents-outputs-")


def _file_access(output_prefix: str) -> FileAccessProvider:
    """Where flytekit writes the files of outputs: under the task's output_prefix."""
    return FileAccessProvider(local_sandbox_dir=_sandbox(), raw_output_prefix=output_prefix, data_config=_data_config())


def _local_uris(pb: literals_pb2.LiteralMap) -> Iterator[tuple[str, str]]:
    """(output name, uri) for each file an output points to on this machine's disk."""
    for name, literal in pb.literals.items():
        for uri in _uris(literal):
            if "://" not in uri or uri.startswith("file://"):
                yield name, uri


def _uris(literal: literals_pb2.Literal) -> Iterator[str]:
    which = literal.WhichOneof("value")
    if which == "collection":
        for item in literal.collection.literals:
            yield from _uris(item)
    elif which == "map":
        for item in literal.map.literals.values():
            yield from _uris(item)
    elif which == "scalar":
        scalar = literal.scalar
        kind = scalar.WhichOneof("value")
        if kind == "union":
            yield from _uris(scalar.union.value)
        elif kind in ("blob", "schema", "structured_dataset"):
            uri = getattr(scalar, kind).uri
            if uri:
                yield uri


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
