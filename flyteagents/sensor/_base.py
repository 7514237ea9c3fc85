"""BaseSensor: a flytekit task whose ``poke`` the sensor engine asks until it is done."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import inspect
import json
import socket
import ssl
import types
import typing
import urllib.error
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Union

from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask, TaskMetadata
from flytekit.core.interface import Interface
from flytekit.exceptions.user import FlyteRecoverableException
from flytekit.models.literals import LiteralMap

from .._exceptions import ExternalServiceError, InvalidTaskError, untrusted_certificate
from .._local import (
    AsyncAgentExecutorMixin,
    _backend,
    _LocalRun,
    _run_async_job,
    run_coroutine,
)
from .._models import Resource, _convert, whole_numbers_as_int
from .._polling import PollPolicy
from .._registry import import_object, module_of
from ._meta import DEFAULT_JITTER, DEFAULT_MAX_CONSECUTIVE_ERRORS, DEFAULT_POKE_INTERVAL, next_poke_wait

__all__ = ["DEFAULT_POKE_INTERVAL", "BaseSensor", "config_from_dict", "config_to_dict"]

_Seconds = Union[datetime.timedelta, int, float]  # noqa: UP007 - a runtime alias on 3.10


def _seconds(value: _Seconds | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return seconds


def config_to_dict(config: Any) -> dict[str, Any] | None:
    """The JSON-safe dict a sensor config travels as: ``dataclasses.asdict`` or ``to_dict()``.

    Raises:
        TypeError: the config is neither a dataclass nor has ``to_dict``, or its dict
            is not plain JSON.
    """
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        data = dataclasses.asdict(config)
    elif callable(getattr(config, "to_dict", None)):
        data = config.to_dict()
    else:
        raise TypeError(
            f"sensor_config must be a dataclass instance or have to_dict()/from_dict(), got {type(config).__name__}"
        )
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"sensor_config {type(config).__name__} is not JSON-safe: {exc}") from None
    return typing.cast(dict[str, Any], data)


def config_from_dict(data: dict[str, Any] | None, config_type: str | None) -> Any:
    """Rebuild a sensor config from ``config_to_dict``'s dict and its ``"module:QualName"`` type.

    With no type, the dict itself is returned.

    Raises:
        InvalidTaskError: the type cannot be imported or the dict does not fit it.
    """
    if data is None or not config_type:
        return data
    tp = import_object(config_type, "sensor config type")
    if dataclasses.is_dataclass(tp):
        return _convert(whole_numbers_as_int(data), tp, "sensor_config")
    from_dict = getattr(tp, "from_dict", None)
    if not callable(from_dict):
        raise InvalidTaskError(f"sensor config type {config_type} is neither a dataclass nor has from_dict()")
    try:
        return from_dict(data)
    except Exception as exc:
        raise InvalidTaskError(f"sensor_config does not fit {config_type}: {exc}") from None


def type_path(tp: Any) -> str:
    """``"module:QualName"`` for a class or function, the form ``import_object`` takes."""
    return f"{module_of(tp)}:{tp.__qualname__}"


def _is_optional_dataclass(tp: Any) -> type | None:
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            (arg,) = args
            if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                return arg
    return None


def poke_signature(
    fn: Callable[..., Any], owner: str, skip: tuple[str, ...] = ()
) -> tuple[collections.OrderedDict[str, Any], type | None]:
    """The task inputs and the outputs dataclass (or None) a poke function declares.

    ``poke`` returns ``bool``, or ``T | None`` for a dataclass ``T`` whose fields become
    the task's outputs.

    Raises:
        TypeError: an input lacks a type annotation, takes ``*args``/``**kwargs``, or
            the return annotation is neither form.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    inputs: collections.OrderedDict[str, Any] = collections.OrderedDict()
    for name, param in inspect.signature(fn).parameters.items():
        if name == "self" or name in skip:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{owner}: poke cannot take *{name} or **{name}; name every input")
        if name not in hints:
            raise TypeError(f"{owner}: poke input {name!r} needs a type annotation")
        inputs[name] = hints[name]
    returns = hints.get("return")
    if returns is bool:
        return inputs, None
    outputs = _is_optional_dataclass(returns)
    if outputs is None:
        raise TypeError(
            f"{owner}: poke must be annotated '-> bool' or '-> T | None' for a dataclass T "
            f"holding the sensor's outputs, not {returns!r}"
        )
    return inputs, outputs


class BaseSensor(AsyncAgentExecutorMixin, PythonTask):  # type: ignore[misc]
    """A task that waits for a condition: the sensor engine calls ``poke`` until it holds.

    Subclass it and write ``poke``: its parameters are the task's inputs, and it answers
    ``False`` (not yet) or ``True`` (done). To give the next tasks outputs, annotate poke
    ``-> T | None`` for a dataclass ``T``: return None while waiting and a ``T`` when done;
    T's fields are the task's outputs. ``poke`` may be ``async def`` (awaited on the event
    loop) or a plain ``def`` (run on a bounded thread pool).

    The engine builds the sensor as ``cls(name=..., sensor_config=config)``, once per
    (class, config), so a subclass's ``__init__`` must accept those two arguments and keep
    everything else it needs in its config.

    Args:
        name: the task's name.
        timeout: how long to wait before giving up (timedelta or seconds); None waits
            forever. Enforced by the engine, so ``soft_fail`` can end the task SUCCEEDED.
        sensor_config: a dataclass instance, or an object with ``to_dict()`` and a
            ``from_dict()`` classmethod; it reaches ``self.sensor_config`` wherever the
            sensor runs.
        poke_interval: least seconds (or timedelta) between two pokes, locally and in the
            service, whatever FlytePropeller's polling rate; 0 pokes on every GetTask.
        backoff: each wait between pokes is this many times the one before (2 doubles
            it), up to ``max_poke_interval``; 1 (the default) keeps it steady.
        max_poke_interval: the longest wait between pokes when backing off (seconds or
            timedelta; default an hour).
        jitter: each wait is lengthened by up to this fraction of itself (default 0.1),
            the same on every replica, so sensors started together do not poke together.
        soft_fail: on timeout, end SUCCEEDED (skipped) instead of FAILED. Output fields
            then need defaults, which are the outputs of a skipped sensor.
        max_consecutive_errors: fail after this many retryable poke errors in a row.

    Example:
        ```python
        @dataclass
        class Found:
            key: str
        class KeySensor(BaseSensor):
            async def poke(self, prefix: str) -> Found | None:
                keys = await list_keys(prefix)
                return Found(key=keys[0]) if keys else None
        wait = KeySensor(name="wait_for_key", timeout=3600, poke_interval=30)
        ```
    """

    #: Exceptions from poke that mean "try again": counted, logged, the sensor keeps running.
    #: Besides these, the standard library's network errors are retryable (see ``is_retryable``):
    #: ``urllib.error.URLError`` (not an HTTP 4xx answer), socket timeouts and TLS errors other
    #: than an untrusted certificate. Override to add a client library's errors.
    retryable_errors: ClassVar[tuple[type[BaseException], ...]] = (
        ConnectionError,
        TimeoutError,
        asyncio.TimeoutError,
        FlyteRecoverableException,
    )

    def __init__(
        self,
        name: str,
        timeout: _Seconds | None = None,
        sensor_config: Any = None,
        poke_interval: _Seconds | None = None,
        soft_fail: bool = False,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        task_type: str = "sensor",
        backoff: float = 1.0,
        max_poke_interval: _Seconds | None = None,
        jitter: float = DEFAULT_JITTER,
        **kwargs: Any,
    ) -> None:
        inputs, outputs = self._declared_io()
        if max_consecutive_errors < 1:
            raise ValueError(f"max_consecutive_errors must be at least 1, got {max_consecutive_errors}")
        if soft_fail and outputs is not None:
            missing = [
                f.name
                for f in dataclasses.fields(outputs)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ]
            if missing:
                raise TypeError(
                    f"sensor {name}: soft_fail needs a default for every output field of "
                    f"{outputs.__name__} (missing: {', '.join(missing)}); a skipped sensor outputs them"
                )
        self._config_dict = config_to_dict(sensor_config)
        self._sensor_config = sensor_config
        self._timeout = _seconds(timeout, "timeout")
        interval = _seconds(poke_interval, "poke_interval")
        self._poke_interval = DEFAULT_POKE_INTERVAL if interval is None else interval
        # Checked here, where the author can fix it, rather than when the engine starts the task.
        self._policy = PollPolicy(
            interval=self._poke_interval,
            backoff=float(backoff),
            max_interval=_seconds(max_poke_interval, "max_poke_interval"),
            jitter=float(jitter),
        )
        self._soft_fail = soft_fail
        self._max_consecutive_errors = max_consecutive_errors
        self._outputs_type = outputs
        out_types = {f.name: hint for f, hint in _field_hints(outputs)} if outputs is not None else {}
        super().__init__(
            task_type=task_type,
            name=name,
            task_config=None,
            interface=Interface(inputs=inputs, outputs=out_types),
            metadata=kwargs.pop("metadata", None) or TaskMetadata(),
            **kwargs,
        )

    def _declared_io(self) -> tuple[collections.OrderedDict[str, Any], type | None]:
        return poke_signature(type(self).poke, type(self).__qualname__)

    async def poke(self, *args: Any, **inputs: Any) -> Any:
        """Whether the condition holds: ``False``/``True``, or ``None``/an outputs dataclass."""
        raise NotImplementedError

    async def start(self, **inputs: Any) -> dict[str, Any] | None:
        """Called once when the sensor task is created, with poke's inputs; optional.

        Return a small JSON dict (where a stream stood when the sensor started, ...): it is
        kept in resource_meta and every poke reads it back as ``poke_context().state``, so a
        sensor stays stateless across agent replicas. Never return a secret. Raising a
        retryable error makes the create retryable (UNAVAILABLE); InvalidTaskError rejects it.
        """
        return None

    @property
    def sensor_config(self) -> Any:
        """The config this sensor was built with (a dataclass, a to_dict object or None)."""
        return self._sensor_config

    @property
    def poke_interval(self) -> float:
        """Least seconds between two pokes."""
        return self._poke_interval

    @property
    def poll_policy(self) -> PollPolicy:
        """When pokes are due: poke_interval, backoff, max_poke_interval and jitter."""
        return self._policy

    @property
    def sensor_timeout(self) -> float | None:
        """Seconds to wait before timing out; None waits forever."""
        return self._timeout

    @property
    def soft_fail(self) -> bool:
        """Whether a timeout ends the task SUCCEEDED (skipped) rather than FAILED."""
        return self._soft_fail

    @property
    def max_consecutive_errors(self) -> int:
        """Retryable poke errors in a row after which the sensor fails."""
        return self._max_consecutive_errors

    @property
    def outputs_type(self) -> type | None:
        """The dataclass whose fields are the sensor's outputs, or None."""
        return self._outputs_type

    def poke_function(self) -> tuple[Callable[..., Any], bool]:
        """The callable the engine pokes with the task's inputs, and whether it is a coroutine function."""
        return self.poke, inspect.iscoroutinefunction(type(self).poke)

    def sensor_location(self) -> tuple[str, str]:
        """(module, name) the engine imports to find this sensor: its class by default."""
        return module_of(type(self)), type(self).__qualname__

    @classmethod
    def for_engine(cls, name: str, config: Any) -> BaseSensor:
        """Build the sensor the engine pokes, from a task template's config."""
        return cls(name=name, sensor_config=config)

    def with_config(self, config: Any) -> BaseSensor:
        """This sensor with another config (itself when the config is the same)."""
        if config_to_dict(config) == self._config_dict:
            return self
        return type(self).for_engine(self.name, config)

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        """The template's custom field: where the sensor lives, its config and its options."""
        module, name = self.sensor_location()
        config = self._sensor_config
        return {
            "sensor_module": module,
            "sensor_name": name,
            "sensor_config": self._config_dict,
            "sensor_config_type": type_path(type(config)) if config is not None else None,
            "poke_interval": self._poke_interval,
            "timeout": self._timeout,
            "soft_fail": self._soft_fail,
            "max_consecutive_errors": self._max_consecutive_errors,
            "backoff": self._policy.backoff,
            "max_poke_interval": self._policy.max_interval,
            "jitter": self._policy.jitter,
        }

    def execute(self, **kwargs: Any) -> LiteralMap:
        """Run the sensor locally: poke on its schedule until done, timeout or Ctrl-C."""
        run = _LocalRun(self, kwargs)
        return run.outputs(run_coroutine(self._local_job(run)))

    def _local_job(self, run: _LocalRun) -> Coroutine[Any, Any, Resource]:
        """Poke on the sensor's schedule, to await on any loop (``execute`` here, a Flyte 2 task's loop)."""
        backend = _backend(run.template)  # the engine serving task type ``sensor``
        return _run_async_job(
            backend,
            self.name,
            run.template,
            run.output_prefix,
            run.inputs,
            run.meta,
            run.template.metadata.timeout or None,
            max_interval=self._poke_interval,
            first_interval=self._poke_interval,
            next_wait=next_poke_wait,
            pokes=True,
        )


def _field_hints(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


#: HTTP answers that may change if asked again (rate limits, server errors, gateways).
_RETRYABLE_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_stdlib_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a standard-library network error that asking again may fix.

    ``urllib.error.URLError`` (refused, reset, DNS, ...), ``socket.timeout`` and TLS errors
    are; an ``HTTPError`` only for 408/425/429/5xx, and an untrusted or mismatched
    certificate never (a configuration error: it fails the same way every time).
    """
    if untrusted_certificate(exc):  # also a hostname mismatch
        return False
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in _RETRYABLE_HTTP_STATUS
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return not isinstance(reason, BaseException) or is_stdlib_network_error(reason)
    return isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError, socket.gaierror))


def is_retryable(sensor: Any, exc: BaseException) -> bool:
    """Whether a poke error means "try again" for this sensor.

    ``ExternalServiceError`` says so itself; otherwise the sensor's ``retryable_errors``
    and the standard library's network errors (``is_stdlib_network_error``) count.
    """
    if isinstance(exc, ExternalServiceError):
        return exc.retryable
    errors = getattr(sensor, "retryable_errors", BaseSensor.retryable_errors)
    return isinstance(exc, errors) or is_stdlib_network_error(exc)
