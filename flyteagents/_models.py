"""The data an agent exchanges with flyteagents: TaskCategory, ResourceMeta and Resource."""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from flyteidl.core.execution_pb2 import TaskExecution, TaskLog
from flytekit.models.literals import LiteralMap

from ._exceptions import InvalidResourceMetaError

__all__ = [
    "MAX_RESOURCE_META_BYTES",
    "Resource",
    "ResourceMeta",
    "TaskCategory",
    "task_execution_id",
    "whole_numbers_as_int",
]

#: FlytePropeller stores resource_meta in the workflow's CRD, so it must stay small.
MAX_RESOURCE_META_BYTES = 64 * 1024

_M = TypeVar("_M", bound="ResourceMeta")
_JSON = json.JSONDecoder()
_quote = json.encoder.encode_basestring_ascii  # a JSON string literal, as json.dumps writes it


@dataclass(frozen=True)
class TaskCategory:
    """A task type and its version: the key an agent is registered and looked up by."""

    name: str
    version: int = 0

    def __str__(self) -> str:
        return f"{self.name}_v{self.version}"


@dataclass
class ResourceMeta:
    """What an async agent's ``create`` returns and ``get``/``delete`` receive back.

    Subclass it as a dataclass holding what identifies the external job. It travels
    as JSON through FlytePropeller: keep it small and never put a secret in it.

    Example:
        ```python
        @dataclass
        class JobMeta(ResourceMeta):
            job_id: str

        assert JobMeta.decode(JobMeta(job_id="42").encode()) == JobMeta(job_id="42")
        ```
    """

    def encode(self) -> bytes:
        """Encode to compact JSON bytes.

        Raises:
            ValueError: the encoding exceeds MAX_RESOURCE_META_BYTES.
        """
        # The JSON of json.dumps(dataclasses.asdict(self), sort_keys=True), compact, without asdict's deep
        # copy. Fields holding a str, int, bool or None (most ResourceMetas) are written here: this runs
        # on every CreateTask. Any other value sends the whole object through the json module.
        cls: type = type(self)
        keys = _JSON_KEYS.get(cls)
        if keys is None:
            keys = _JSON_KEYS[cls] = tuple((name, _quote(name) + ":") for name in sorted(_class_info(cls).names))
        parts = []
        for name, key in keys:
            value = getattr(self, name)
            kind = type(value)
            if kind is str:
                parts.append(key + _quote(value))
            elif kind is int:
                parts.append(key + int.__repr__(value))
            elif kind is bool:
                parts.append(key + ("true" if value else "false"))
            elif value is None:
                parts.append(key + "null")
            else:
                text = _ENCODER.encode(_shallow_dict(self))
                break
        else:
            text = "{" + ",".join(parts) + "}"
        data = text.encode()
        if len(data) > MAX_RESOURCE_META_BYTES:
            raise ValueError(
                f"{type(self).__name__} encodes to {len(data)} bytes, over the "
                f"{MAX_RESOURCE_META_BYTES} byte limit: keep only job identifiers in resource_meta"
            )
        return data

    @classmethod
    def decode(cls: type[_M], data: bytes) -> _M:
        """Decode bytes made by ``encode``, checking every field's presence and type.

        Raises:
            InvalidResourceMetaError: the bytes are not JSON, or fields are missing,
                unknown or of the wrong type.
        """
        try:
            # str input skips json's encoding detection; undecodable bytes raise UnicodeDecodeError (a ValueError)
            obj = _JSON.decode(data.decode() if isinstance(data, bytes) else data)
        except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: nested past Python's limit
            raise InvalidResourceMetaError(f"resource_meta is not valid JSON for {cls.__name__}: {exc}") from None
        try:
            if dataclasses.is_dataclass(cls):
                return typing.cast(_M, _convert_dataclass(obj, "resource_meta", cls))
            return typing.cast(_M, _convert(obj, cls, "resource_meta"))
        except RecursionError:
            raise InvalidResourceMetaError(f"resource_meta is nested too deeply for {cls.__name__}") from None


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` (decoded JSON) against the type ``tp`` and build it."""
    try:
        convert = _converter(tp)
    except TypeError:  # an unhashable type, such as a Literal of a list: not cached
        convert = _converter.__wrapped__(tp)
    return convert(value, where)


_Converter = Callable[[Any, str], Any]


@functools.cache
def _converter(tp: Any) -> _Converter:
    """The check-and-build function of decoded JSON values for the type ``tp``, worked out once per type."""
    if tp is Any or tp is object:
        return _as_is
    origin = typing.get_origin(tp)
    if origin is Union or isinstance(tp, types.UnionType):
        return _union_converter(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return functools.partial(_convert_dataclass, cls=tp)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        args = typing.get_args(tp)
        item = _converter(args[0]) if args else _as_is
        as_tuple = (origin or tp) is tuple

        def sequence(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise _wrong_type(where, "list", value)
            items = [item(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if as_tuple else items

        return sequence
    if origin in (dict, typing.Mapping) or tp is dict:
        args = typing.get_args(tp)
        item = _converter(args[1]) if args else _as_is

        def mapping(value: Any, where: str) -> Any:
            if not isinstance(value, dict):
                raise _wrong_type(where, "object", value)
            if item is _as_is:
                return dict(value)
            return {k: item(v, f"{where}.{k}") for k, v in value.items()}

        return mapping
    if tp is float:
        return _number
    if tp in (int, str, bool):

        def exactly(value: Any, where: str) -> Any:
            if type(value) is tp:
                return value
            raise _wrong_type(where, tp.__name__, value)

        return exactly
    if origin is typing.Literal:
        allowed = typing.get_args(tp)

        def one_of(value: Any, where: str) -> Any:
            if value in allowed:
                return value
            raise InvalidResourceMetaError(f"{where}: {value!r} is not one of {allowed}")

        return one_of

    def unsupported(value: Any, where: str) -> Any:
        raise InvalidResourceMetaError(f"{where}: fields of type {tp!r} cannot travel in resource_meta")

    return unsupported


def _union_converter(tp: Any) -> _Converter:
    args = typing.get_args(tp)
    optional = type(None) in args
    options = [_converter(arg) for arg in args if arg is not type(None)]

    def union(value: Any, where: str) -> Any:
        if value is None and optional:
            return None
        errors = []
        for convert in options:
            try:
                return convert(value, where)
            except InvalidResourceMetaError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise InvalidResourceMetaError(errors[0])
        raise InvalidResourceMetaError(f"{where}: no type of {tp} matches {value!r}")

    return union


def _as_is(value: Any, where: str) -> Any:
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _wrong_type(where, "number", value)


class _ClassInfo(typing.NamedTuple):
    required: frozenset[str]
    #: field -> the value types it takes as decoded, with no further check (str for a str field, None for
    #: an optional one, ...): most values of most ResourceMetas, decoded without a converter call
    as_is: dict[str, frozenset[type]]
    names: tuple[str, ...]
    converters: dict[str, _Converter]


_EXACT = (str, int, bool, float)


def _as_is_types(tp: Any) -> frozenset[type]:
    """The types of decoded JSON values a field of type ``tp`` keeps unconverted."""
    if tp in _EXACT:
        return frozenset({tp})
    if typing.get_origin(tp) is Union or isinstance(tp, types.UnionType):
        args = typing.get_args(tp)
        return frozenset(arg for arg in args if arg in _EXACT or arg is type(None))
    return frozenset()


@functools.cache
def _class_info(cls: type) -> _ClassInfo:
    """What decoding and encoding need of a dataclass, worked out once per class (resolving hints is slow)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    required = frozenset(
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    as_is = {name: _as_is_types(hints[name]) for name in fields}
    names = tuple(f.name for f in dataclasses.fields(cls))
    converters = {name: _converter(hints[name]) for name in fields}
    return _ClassInfo(required, as_is, names, converters)


#: Per ResourceMeta class: each field's name and its JSON key with the colon, in sort_keys order.
_JSON_KEYS: dict[type, tuple[tuple[str, str], ...]] = {}


def _shallow_dict(obj: Any) -> dict[str, Any]:
    cls: type = type(obj)
    return {name: getattr(obj, name) for name in _class_info(cls).names}


def _nested(obj: Any) -> Any:
    """json.dumps' hook for values it cannot encode itself: nested dataclasses."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _shallow_dict(obj)
    raise TypeError(f"{type(obj).__name__} cannot travel in resource_meta")


def _convert_dataclass(value: Any, where: str, cls: type) -> Any:
    if not isinstance(value, dict):
        raise _wrong_type(where, f"object for {cls.__name__}", value)
    info = _class_info(cls)
    as_is, converters = info.as_is, info.converters
    kwargs = {}
    for name, v in value.items():
        if type(v) in as_is.get(name, ()):  # the common case, checked without a converter call
            kwargs[name] = v
        elif name in converters:
            kwargs[name] = converters[name](v, f"{where}.{name}")
        else:
            unknown = sorted(set(value) - set(converters))
            raise InvalidResourceMetaError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    if not info.required.issubset(kwargs):
        missing = sorted(info.required - kwargs.keys())
        raise InvalidResourceMetaError(f"{where}: missing field(s) {', '.join(missing)} for {cls.__name__}")
    return cls(**kwargs)


#: Compact, key-sorted JSON, as ``json.dumps(dataclasses.asdict(meta), sort_keys=True)`` without its deep copy.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=_nested)


def _wrong_type(where: str, expected: str, value: Any) -> InvalidResourceMetaError:
    return InvalidResourceMetaError(f"{where}: expected {expected}, got {type(value).__name__} {value!r:.60}")


@dataclass
class Resource:
    """The state of a job, as ``get`` and ``do`` report it.

    Args:
        phase: a ``TaskExecution.Phase`` (``TaskExecution.SUCCEEDED``, ...).
        message: a human-readable status or error message.
        log_links: links to the job's logs or console.
        outputs: the task's outputs, as a dict of Python values (converted with the
            task's declared output types) or a LiteralMap. Leave it None when the job
            writes ``{output_prefix}/outputs.pb`` itself.
        custom_info: JSON-safe details shown to users (bytes processed, cluster id, ...).
    """

    phase: int
    message: str | None = None
    log_links: list[TaskLog] | None = None
    outputs: LiteralMap | dict[str, Any] | None = None
    custom_info: dict[str, Any] | None = None

    @property
    def phase_name(self) -> str:
        """The phase's name, such as ``"SUCCEEDED"``."""
        return TaskExecution.Phase.Name(self.phase)


def task_execution_id(metadata: Any) -> str | None:
    """``project/domain/execution/node/attempt``: one attempt of one task execution, the same on every call.

    ``metadata`` is a TaskExecutionMetadata (the flytekit model or its proto); None when it, or
    its task_execution_id, is missing. Deterministic, so a repeated CreateTask for the same
    attempt can find the job it started.
    """
    task_id = getattr(metadata, "task_execution_id", None)
    if task_id is None:
        return None
    node = task_id.node_execution_id
    ex = node.execution_id
    return f"{ex.project}/{ex.domain}/{ex.name}/{node.node_id}/{task_id.retry_attempt}"


def whole_numbers_as_int(value: Any) -> Any:
    """``2.0 -> 2`` throughout lists and dicts: undoes protobuf Struct's float-only numbers.

    A task template's ``custom`` travels as a Struct, so an ``int`` written by the task arrives
    as a float; a ``float`` field still accepts the int.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [whole_numbers_as_int(v) for v in value]
    if isinstance(value, dict):
        return {k: whole_numbers_as_int(v) for k, v in value.items()}
    return value
