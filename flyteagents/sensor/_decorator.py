"""The @sensor decorator: a poke function becomes a sensor task."""

from __future__ import annotations

import collections
import functools
import inspect
from collections.abc import Callable
from typing import Any, overload

from .._registry import module_of
from .._runner import run_sync
from ._base import BaseSensor, config_to_dict, poke_signature

__all__ = ["FunctionSensor", "sensor"]

#: A poke function's parameter of this name receives the sensor's config instead of an input.
CONFIG_PARAMETER = "sensor_config"


class FunctionSensor(BaseSensor):
    """A sensor whose poke is a plain function; made by ``@sensor``."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None, **kwargs: Any) -> None:
        self._fn = fn
        self._wants_config = CONFIG_PARAMETER in inspect.signature(fn).parameters
        super().__init__(name=name or f"{module_of(fn)}.{fn.__qualname__}", **kwargs)
        self._options = kwargs

    def _declared_io(self) -> tuple[collections.OrderedDict[str, Any], type | None]:
        return poke_signature(self._fn, self._fn.__qualname__, skip=(CONFIG_PARAMETER,))

    def poke_function(self) -> tuple[Callable[..., Any], bool]:
        """The decorated function, given the config when it asks for ``sensor_config``."""
        fn = self._fn
        if self._wants_config:
            fn = functools.partial(fn, **{CONFIG_PARAMETER: self.sensor_config})
        return fn, inspect.iscoroutinefunction(self._fn)

    async def poke(self, *args: Any, **inputs: Any) -> Any:
        """Call the decorated function once (awaited, or run on a worker thread if plain)."""
        fn, is_async = self.poke_function()
        if is_async:
            return await fn(**inputs)

        return await run_sync(fn, **inputs)

    def sensor_location(self) -> tuple[str, str]:
        """The decorated function's module and name, where this sensor object now lives."""
        return module_of(self._fn), self._fn.__qualname__

    def with_config(self, config: Any) -> BaseSensor:
        """The same function with another config (itself when the config is the same)."""
        if config_to_dict(config) == self._config_dict:
            return self
        options = {**self._options, "sensor_config": config}
        return FunctionSensor(self._fn, name=self.name, **options)


@overload
def sensor(fn: Callable[..., Any], /) -> FunctionSensor: ...
@overload
def sensor(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], FunctionSensor]: ...
def sensor(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    **options: Any,
) -> FunctionSensor | Callable[[Callable[..., Any]], FunctionSensor]:
    """Make a sensor task of a poke function; ``options`` are BaseSensor's (``timeout``, ``sensor_config``, ...).

    The function's parameters are the task's inputs, except one named ``sensor_config``,
    which receives the config. It returns ``bool``, or ``T | None`` for a dataclass ``T``
    whose fields are the task's outputs. Define it at module level: the engine imports it
    by module and name.

    Example:
        ```python
        @sensor(timeout=600, poke_interval=10, sensor_config=Api(url="http://svc"))
        async def job_done(job_id: str, sensor_config: Api) -> bool:
            return await job_state(sensor_config.url, job_id) == "done"
        ```
    """

    def wrap(f: Callable[..., Any]) -> FunctionSensor:
        return FunctionSensor(f, name=name, **options)

    return wrap(fn) if fn is not None else wrap
