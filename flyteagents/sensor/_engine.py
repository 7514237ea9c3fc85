"""The sensor engine: the async agent for task type ``sensor`` that pokes sensors."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import inspect
import json
import logging
import sys
import threading
import time
import typing
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

from .._agent import AsyncAgentBase
from .._exceptions import AgentError, ExternalServiceError, InvalidTaskError
from .._literals import literal_map_model, primitive_literal_map
from .._models import Resource, ResourceMeta, task_execution_id, whole_numbers_as_int
from .._phase import is_terminal_phase
from .._polling import PollPolicy, PollSchedule
from .._registry import import_object
from .._runner import run_sync
from ._base import BaseSensor, config_from_dict, is_retryable
from ._context import PokeContext, _current
from ._meta import DEFAULT_MAX_CONSECUTIVE_ERRORS, DEFAULT_POKE_INTERVAL, SensorMetadata, sensor_schedule

__all__ = ["SensorEngine"]

logger = logging.getLogger("flyteagents.sensor")

#: Longest a single poke may take before it counts as a (retryable) timeout, in seconds: under
#: propeller's GetTask deadline (10 s by default), so the answer arrives before propeller gives up.
DEFAULT_POKE_TIMEOUT = 8.0
_MAX_CACHED_SENSORS = 256
_MAX_TRACKED_SENSORS = 10_000


def _json_safe(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return all(_json_safe(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    return False


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return str(datetime.timedelta(seconds=seconds)) if seconds >= 60 else f"{seconds:g}s"


def _build_flytekit_sensor(cls: type, config: dict[str, Any] | None) -> Any:
    """Build a flytekit BaseSensor subclass, handing it its config (flytekit's own engine drops it)."""
    config_obj: Any = config
    if config is not None:
        try:
            hint = typing.get_type_hints(cls.__init__).get("sensor_config")  # type: ignore[misc]
        except Exception:
            hint = None
        from_dict = getattr(hint, "from_dict", None) if isinstance(hint, type) else None
        if callable(from_dict):
            config_obj = from_dict(config)
    try:
        return cls(name="sensor", sensor_config=config_obj)
    except TypeError:
        return cls("sensor", config=config)


def _is_flytekit_sensor(obj: Any) -> bool:
    try:
        from flytekit.sensor.base_sensor import BaseSensor as FlytekitSensor
    except ImportError:  # pragma: no cover - flytekit always ships it
        return False
    return isinstance(obj, type) and issubclass(obj, FlytekitSensor)


class SensorEngine(AsyncAgentBase):
    """Serves task type ``sensor``: ``create`` records the sensor, each ``get`` pokes it once.

    Serves sensors made with flyteagents' BaseSensor/@sensor and templates made by
    flytekit's own BaseSensor subclasses alike. Sensors are built once per (class,
    config) and reused. A poke that raises a retryable error (network, timeout,
    ``ExternalServiceError(retryable=True)``) keeps the sensor RUNNING; after the
    sensor's ``max_consecutive_errors`` in a row it fails. Error counts live in this
    process: a replica that has not seen the earlier errors starts counting afresh.

    Args:
        poke_timeout: longest one poke may take, in seconds; a slower poke counts as a
            retryable timeout.
    """

    name = "Sensor"

    def __init__(self, poke_timeout: float = DEFAULT_POKE_TIMEOUT) -> None:
        super().__init__(task_type_name="sensor", metadata_type=SensorMetadata)
        self.poke_timeout = poke_timeout
        self._sensors: OrderedDict[tuple[str, str, str, str], Any] = OrderedDict()
        self._history: OrderedDict[str, _History] = OrderedDict()
        self._lock = threading.Lock()

    #: Enables the service's poll memory; each sensor's own schedule comes from ``poll_schedule``.
    poll_policy = PollPolicy(interval=DEFAULT_POKE_INTERVAL)

    def poll_schedule(self, resource_meta: ResourceMeta, job: bytes = b"") -> PollSchedule | None:
        """The sensor's pokes: every ``poke_interval``, backing off as configured, from its start."""
        return sensor_schedule(resource_meta, job)  # type: ignore[arg-type]

    async def create(  # type: ignore[override]
        self,
        task_template: TaskTemplate,
        output_prefix: str,
        inputs: LiteralMap | None = None,
        task_execution_metadata: TaskExecutionMetadata | None = None,
        **kwargs: Any,
    ) -> SensorMetadata:
        """Check the sensor can be built and its inputs carried; start its deadline."""
        custom = task_template.custom or {}
        if not custom.get("sensor_module") or not custom.get("sensor_name"):
            raise InvalidTaskError("sensor task template lacks custom.sensor_module / custom.sensor_name")
        timeout = custom.get("timeout")
        if timeout is None and "poke_interval" not in custom and task_template.metadata.timeout:
            # A flytekit sensor keeps its timeout in the task metadata.
            timeout = task_template.metadata.timeout.total_seconds()
        config = custom.get("sensor_config")
        if config is not None and not isinstance(config, dict):
            raise InvalidTaskError(f"custom.sensor_config must be an object, got {type(config).__name__}")
        # The template's custom field travels as a protobuf Struct, where every number is a float.
        config = whole_numbers_as_int(config)
        now = time.time()
        meta = SensorMetadata(
            sensor_module=str(custom["sensor_module"]),
            sensor_name=str(custom["sensor_name"]),
            sensor_config=config,
            sensor_config_type=custom.get("sensor_config_type"),
            sensor_id=task_execution_id(task_execution_metadata) or uuid.uuid4().hex,
            deadline=now + float(timeout) if timeout else None,
            timeout=float(timeout) if timeout else None,
            soft_fail=bool(custom.get("soft_fail", False)),
            max_consecutive_errors=int(custom.get("max_consecutive_errors", DEFAULT_MAX_CONSECUTIVE_ERRORS)),
            poke_interval=custom.get("poke_interval"),
            started_at=now,
            backoff=custom.get("backoff"),
            max_poke_interval=custom.get("max_poke_interval"),
            jitter=custom.get("jitter"),
        )
        try:
            sensor_schedule(meta)
        except (ValueError, TypeError) as exc:
            raise InvalidTaskError(f"sensor poke schedule: {exc}") from None
        sensor = self._sensor(meta)
        meta.inputs = await self._carry_inputs(sensor, inputs)
        meta.output_prefix = output_prefix
        meta.state = await self._start(meta, sensor)
        try:
            meta.encode()
        except ValueError as exc:
            raise InvalidTaskError(f"sensor inputs are too large for resource_meta: {exc}") from None
        logger.info(
            "sensor %s.%s (%s) started; poke interval %s, timeout %s",
            meta.sensor_module,
            meta.sensor_name,
            meta.sensor_id,
            _format_seconds(meta.poke_interval),
            _format_seconds(meta.timeout) if meta.timeout else "none",
        )
        return meta

    async def _carry_inputs(self, sensor: Any, inputs: LiteralMap | None) -> dict[str, Any] | None:
        if inputs is None or not inputs.literals:
            return None
        ctx = FlyteContextManager.current_context()
        types = dict(sensor.python_interface.inputs)
        try:
            values = await TypeEngine._literal_map_to_kwargs(ctx, inputs, types)
        except Exception as exc:
            raise InvalidTaskError(f"sensor inputs do not match the sensor's poke: {exc}") from None
        for name, value in values.items():
            if isinstance(value, tuple):
                value = values[name] = list(value)
            if not _json_safe(value):
                raise InvalidTaskError(
                    f"sensor input {name!r} ({type(value).__name__}) cannot be carried in resource_meta: "
                    "sensor inputs must be JSON values (str, int, float, bool, None, lists, str-keyed dicts)"
                )
        return values

    async def _start(self, meta: SensorMetadata, sensor: Any) -> dict[str, Any] | None:
        """Call the sensor's ``start`` (if it has one) and return its JSON state for resource_meta."""
        if not isinstance(sensor, BaseSensor) or type(sensor).start is BaseSensor.start:
            return None
        token = _current.set(PokeContext(meta.sensor_id, meta.output_prefix))
        try:
            fn = sensor.start
            inputs = meta.inputs or {}
            call = fn(**inputs) if inspect.iscoroutinefunction(fn) else run_sync(fn, **inputs)
            state = await asyncio.wait_for(call, self.poke_timeout)
        except InvalidTaskError:
            raise
        except Exception as exc:
            if is_retryable(sensor, exc):
                # Propeller calls CreateTask again after an UNAVAILABLE answer.
                raise ExternalServiceError(f"sensor {meta.sensor_name} could not start: {exc}") from None
            raise
        finally:
            _current.reset(token)
        if state is not None and not (isinstance(state, dict) and _json_safe(state)):
            raise InvalidTaskError(f"sensor {meta.sensor_name}: start() must return a JSON dict or None")
        return state

    def _sensor(self, meta: SensorMetadata) -> Any:
        """The sensor object for the meta's (class, config), built on first use and cached."""
        config = meta.sensor_config
        key = (
            meta.sensor_module,
            meta.sensor_name,
            "" if config is None else json.dumps(config, sort_keys=True),
            meta.sensor_config_type or "",
        )
        with self._lock:
            sensor = self._sensors.get(key)
            if sensor is not None:
                self._sensors.move_to_end(key)
                return sensor
        sensor = self._build(meta)
        with self._lock:
            sensor = self._sensors.setdefault(key, sensor)
            while len(self._sensors) > _MAX_CACHED_SENSORS:
                self._sensors.popitem(last=False)
        return sensor

    def _build(self, meta: SensorMetadata) -> Any:
        where = f"{meta.sensor_module}:{meta.sensor_name}"
        obj = import_object(where, "sensor")
        try:
            if isinstance(obj, BaseSensor):
                return obj.with_config(config_from_dict(meta.sensor_config, meta.sensor_config_type))
            if isinstance(obj, type) and issubclass(obj, BaseSensor):
                config = config_from_dict(meta.sensor_config, meta.sensor_config_type)
                return obj.for_engine(meta.sensor_name, config)
            if _is_flytekit_sensor(obj):
                return _build_flytekit_sensor(obj, meta.sensor_config)
        except InvalidTaskError:
            raise
        except Exception as exc:
            raise InvalidTaskError(f"cannot build sensor {where}: {type(exc).__name__}: {exc}") from None
        raise InvalidTaskError(f"{where} is not a sensor (a BaseSensor subclass or @sensor function)")

    async def get(self, resource_meta: SensorMetadata, **kwargs: Any) -> Resource:  # type: ignore[override]
        """Poke the sensor once and report RUNNING, SUCCEEDED (with outputs) or FAILED."""
        meta = resource_meta
        if not meta.sensor_id:
            # resource_meta written by flytekit's engine has no id: the sensor and its inputs stand in.
            meta.sensor_id = json.dumps([meta.sensor_module, meta.sensor_name, meta.inputs], sort_keys=True)
        label = f"{meta.sensor_module}.{meta.sensor_name}"
        now = time.time()
        if meta.deadline is not None and now >= meta.deadline:
            return self._with_history(meta, await self._timed_out(meta, label), now)
        sensor = self._sensor(meta)
        context = PokeContext(meta.sensor_id, meta.output_prefix, meta.state)
        try:
            result = await self._poke_with_context(context, meta, sensor)
        except Exception as exc:
            resource = self._poke_failed(meta, sensor, label, exc, now)
        else:
            self._record(meta.sensor_id, now, None)
            resource = await self._outcome(meta, sensor, label, result, context.waiting_reason)
        return self._with_history(meta, resource, now)

    def _with_history(self, meta: SensorMetadata, resource: Resource, now: float) -> Resource:
        """The poke history (count, last poke, last error, next due poke) in the answer's custom_info."""
        with self._lock:
            history = self._history.get(meta.sensor_id)
            if is_terminal_phase(resource.phase):
                self._history.pop(meta.sensor_id, None)
        info: dict[str, Any] = {"poke_interval": meta.poke_interval}
        if history is not None:
            info["pokes"] = history.pokes
            info["last_poke_at"] = _iso(history.last_poke)
            if history.last_error is not None:
                info["last_error"] = history.last_error
            if history.consecutive_errors:
                info["consecutive_errors"] = history.consecutive_errors
        if not is_terminal_phase(resource.phase):
            schedule = sensor_schedule(meta)
            next_due = schedule.next_due(now) if schedule is not None else None
            if next_due is not None:
                info["next_poke_at"] = _iso(next_due)
        resource.custom_info = {**info, **(resource.custom_info or {})}
        return resource

    async def _poke(self, sensor: Any, inputs: dict[str, Any]) -> Any:
        if isinstance(sensor, BaseSensor):
            fn, is_async = sensor.poke_function()
        else:
            fn, is_async = sensor.poke, inspect.iscoroutinefunction(sensor.poke)
        call = fn(**inputs) if is_async else run_sync(fn, **inputs)
        if sys.version_info >= (3, 11):
            # Unlike wait_for on 3.11, no extra task per poke.
            async with asyncio.timeout(self.poke_timeout):
                return await call
        return await asyncio.wait_for(call, self.poke_timeout)

    async def _poke_with_context(self, context: PokeContext, meta: SensorMetadata, sensor: Any) -> Any:
        token = _current.set(context)
        try:
            return await self._poke(sensor, meta.inputs or {})
        finally:
            _current.reset(token)

    def _poke_failed(self, meta: SensorMetadata, sensor: Any, label: str, exc: Exception, now: float) -> Resource:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, asyncio.TimeoutError) and not str(exc):
            error = f"poke took longer than {_format_seconds(self.poke_timeout)}"
        if not is_retryable(sensor, exc):
            self._record(meta.sensor_id, now, error)
            # A classified error (a missing queue, a bad config) is one line; a traceback only
            # helps for an exception the sensor did not expect.
            trace = None if isinstance(exc, AgentError) else exc
            logger.warning("sensor %s (%s) failed: %s", label, meta.sensor_id, error, exc_info=trace)
            return Resource(phase=TaskExecution.FAILED, message=f"sensor {label} failed: {error}")
        count = self._record(meta.sensor_id, now, error)
        limit = meta.max_consecutive_errors
        logger.warning("sensor %s (%s) poke error %d/%d: %s", label, meta.sensor_id, count, limit, error)
        if count >= limit:
            return Resource(
                phase=TaskExecution.FAILED,
                message=f"sensor {label} failed after {count} consecutive poke errors; last: {error}",
            )
        return Resource(phase=TaskExecution.RUNNING, message=f"poke error {count}/{limit}: {error}")

    async def _outcome(
        self, meta: SensorMetadata, sensor: Any, label: str, result: Any, reason: str | None = None
    ) -> Resource:
        outputs_type = getattr(sensor, "outputs_type", None)
        if result is None or result is False:
            return Resource(phase=TaskExecution.RUNNING, message=f"waiting: {reason}" if reason else "waiting")
        if outputs_type is None and result is True:
            return Resource(phase=TaskExecution.SUCCEEDED, outputs=LiteralMap(literals={}))
        if outputs_type is not None and isinstance(result, outputs_type):
            values = {f.name: getattr(result, f.name) for f in dataclasses.fields(outputs_type)}
            try:
                outputs = await self._literals(sensor, label, values)
            except InvalidTaskError as exc:  # the sensor's own bug: fail the task, not the RPC
                return Resource(phase=TaskExecution.FAILED, message=str(exc))
            return Resource(phase=TaskExecution.SUCCEEDED, outputs=outputs)
        expected = f"{outputs_type.__name__} or None" if outputs_type is not None else "a bool"
        return Resource(
            phase=TaskExecution.FAILED,
            message=f"sensor {label}: poke returned {type(result).__name__} {result!r:.80}, expected {expected}",
        )

    async def _literals(self, sensor: Any, label: str, values: dict[str, Any]) -> LiteralMap:
        declared = sensor.python_interface.outputs
        fast = primitive_literal_map(values, declared)  # str, int, float and bool fields need no TypeEngine
        if fast is not None:
            return literal_map_model(fast)
        ctx = FlyteContextManager.current_context()
        try:
            return await TypeEngine._dict_to_literal_map(ctx, values, dict(declared))
        except Exception as exc:
            raise InvalidTaskError(f"sensor {label}: outputs do not fit their declared types: {exc}") from None

    async def _timed_out(self, meta: SensorMetadata, label: str) -> Resource:
        reason = f"timed out after {_format_seconds(meta.timeout)}"
        if not meta.soft_fail:
            return Resource(phase=TaskExecution.FAILED, message=f"sensor {label} {reason}")
        sensor = self._sensor(meta)
        outputs_type = getattr(sensor, "outputs_type", None)
        outputs = LiteralMap(literals={})
        if outputs_type is not None:
            default = outputs_type()
            values = {f.name: getattr(default, f.name) for f in dataclasses.fields(outputs_type)}
            outputs = await self._literals(sensor, label, values)
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            message=f"skipped: sensor {label} {reason} (soft_fail)",
            outputs=outputs,
            custom_info={"skipped": True, "reason": reason},
        )

    async def delete(self, resource_meta: SensorMetadata, **kwargs: Any) -> None:  # type: ignore[override]
        """Forget the sensor's error count; there is no external job to cancel."""
        self._forget(resource_meta.sensor_id)

    def _record(self, sensor_id: str, now: float, error: str | None) -> int:
        """Count a poke (and its error, if any); returns the errors in a row so far."""
        with self._lock:
            history = self._history.pop(sensor_id, None) or _History()
            self._history[sensor_id] = history
            while len(self._history) > _MAX_TRACKED_SENSORS:
                self._history.popitem(last=False)
            history.pokes += 1
            history.last_poke = now
            if error is None:
                history.consecutive_errors = 0
            else:
                history.last_error = error
                history.consecutive_errors += 1
            return history.consecutive_errors

    def _forget(self, sensor_id: str) -> None:
        with self._lock:
            self._history.pop(sensor_id, None)

    def consecutive_errors(self, sensor_id: str) -> int:
        """How many retryable poke errors in a row this process has seen for a sensor."""
        history = self._history.get(sensor_id)
        return history.consecutive_errors if history is not None else 0

    def pokes(self, sensor_id: str) -> int:
        """How many times this process has poked a sensor that is still waiting."""
        history = self._history.get(sensor_id)
        return history.pokes if history is not None else 0


@dataclass
class _History:
    """What one process saw of a waiting sensor's pokes."""

    pokes: int = 0
    last_poke: float = 0.0
    last_error: str | None = None
    consecutive_errors: int = 0


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="milliseconds")
