"""Flyte 2 (the ``flyte`` SDK) tasks that run on flyteagents' agents and sensors.

Each class here is a ``flyte`` task template wrapping the flytekit-side task of the same
name: its template carries the same task type and ``custom`` (so ``flyteagents serve``
answers it over Flyte 2's connector protocol with the same agent), and a local run
(``flyte.with_runcontext(mode="local")``) goes through the same local executor in this
process: same poke interval, timeout, soft_fail, outputs and Ctrl-C cleanup.

Plugins build their Flyte 2 tasks on ``AgentTask``. Importing this module needs the
``flyte`` SDK (``pip install 'flyteagents[flyte2]'``); nothing else in flyteagents imports it.

Example:
    ```python
    import flyte
    from flyteagents.flyte2 import FileSensor

    wait = FileSensor(name="wait_for_export", timeout=3600, poke_interval=30)
    flyte.TaskEnvironment.from_task("sensors", wait)
    path, paths = flyte.with_runcontext(mode="local").run(wait, path="/data/export.csv").outputs()
    ```
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import datetime
import inspect
import os
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

try:
    from flyte.extend import RuntimeTaskTemplate, TaskTemplate
    from flyte.models import NativeInterface, SerializationContext
except ImportError as exc:  # pragma: no cover - exercised by tests/test_flyte2_imports.py in a subprocess
    raise ImportError("flyteagents.flyte2 needs the flyte SDK (Flyte 2): pip install 'flyteagents[flyte2]'") from exc

from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine

from ._exceptions import AgentNotFoundError
from ._local import (
    _DELETE_TIMEOUT,
    ENDPOINT_ENV,
    SyncAgentExecutorMixin,
    _backend,
    _default_images,
    _local_execution_metadata,
    _LocalRun,
    _max_poll_interval,
    _run_async_job,
)
from ._models import Resource
from ._registry import AgentRegistry
from .sensor import BaseSensor as _CoreBaseSensor
from .sensor import FileSensor as _CoreFileSensor
from .sensor import FunctionSensor as _CoreFunctionSensor
from .sensor import HTTPSensor as _CoreHTTPSensor
from .sensor import TimeSensor as _CoreTimeSensor
from .sensor._base import _Seconds, module_of

__all__ = [
    "AgentTask",
    "BaseSensor",
    "FileSensor",
    "HTTPSensor",
    "SyncAgentTask",
    "TaskResolver",
    "TimeSensor",
    "run_agent_job",
    "sensor",
    "split_options",
]

#: Options of a flyte task template that a Flyte 2 agent task takes and keeps for itself; the
#: others go to the flytekit-side task. ``timeout`` is the flyte template's too, except for a
#: sensor, whose timeout is the engine's (so that soft_fail can end it SUCCEEDED).
_FLYTE_OPTIONS = frozenset(
    f.name for f in dataclasses.fields(TaskTemplate) if f.init and not f.name.startswith("_")
) - {"name", "interface", "task_type", "task_type_version", "image", "short_name"}


def split_options(kwargs: dict[str, Any], sensor: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into the flyte task template's (retries, cache, env_vars, timeout, ...) and the rest.

    For a sensor (``sensor=True``), ``timeout`` stays with the rest: it is the sensor's option.
    """
    own = _FLYTE_OPTIONS - {"timeout"} if sensor else _FLYTE_OPTIONS
    flyte = {k: v for k, v in kwargs.items() if k in own}
    rest = {k: v for k, v in kwargs.items() if k not in own}
    return flyte, rest


def _timedelta(timeout: Any) -> datetime.timedelta | None:
    """A flyte task timeout (seconds, a timedelta, or flyte.Timeout's max_runtime) as a timedelta."""
    timeout = getattr(timeout, "max_runtime", timeout)
    if timeout is None or isinstance(timeout, datetime.timedelta):
        return timeout
    return datetime.timedelta(seconds=float(timeout))


def _settings(sctx: SerializationContext) -> SerializationSettings:
    """flytekit's serialization settings for a flyte serialization context (project, domain, version)."""
    return SerializationSettings(
        image_config=_default_images(),
        project=sctx.project or "",
        domain=sctx.domain or "",
        version=sctx.version or "",
    )


def _ensure_agent(task_type: str, version: int) -> None:
    """Load the installed plugins' agents into the default registry if none serves ``task_type`` yet."""
    if os.environ.get(ENDPOINT_ENV):
        return  # the calls go to an agent service
    registry: Any = AgentRegistry.default()  # Any: mypy cannot type its class-or-instance methods
    try:
        registry.get_agent(task_type, version)
    except AgentNotFoundError:
        registry.discover()


class _Active:
    """A local run in progress on some thread's event loop, which Ctrl-C must be able to cancel."""

    def __init__(self, name: str, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.name, self.task, self.loop = name, task, loop
        self.finished = threading.Event()


_active: set[_Active] = set()
#: Longest the exit hook waits for the interrupted runs: a delete's own timeout, and time to report it.
_EXIT_WAIT = _DELETE_TIMEOUT + 5
_active_lock = threading.Lock()
_exit_hook_installed = False


def _cancel_active_runs() -> None:
    """At exit (after Ctrl-C, say): cancel the local runs still going, so each deletes its job, and wait."""
    with _active_lock:
        runs = list(_active)
    for run in runs:
        print(f"[flyteagents] {run.name}: interrupted, deleting its job", file=sys.stderr, flush=True)
        try:
            run.loop.call_soon_threadsafe(run.task.cancel)
        except RuntimeError:  # its loop has closed: nothing left to cancel
            run.finished.set()
    # The runs delete their jobs at the same time: one deadline for all of them.
    deadline = time.monotonic() + _EXIT_WAIT
    for run in runs:
        run.finished.wait(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def _interruptible(name: str) -> Iterator[None]:
    """Let Ctrl-C cancel this run, and so delete its job, wherever flyte runs it.

    flyte runs a local task on an event loop in a daemon thread; Ctrl-C raises
    KeyboardInterrupt in the main thread and the process exits without cancelling the
    task. A hook run at exit cancels the runs still in progress and waits for their cleanup.
    """
    global _exit_hook_installed
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - execute always runs in a task
        yield
        return
    run = _Active(name, task, asyncio.get_running_loop())
    with _active_lock:
        if not _exit_hook_installed:
            # Before concurrent.futures stops its pools at exit (threading runs these hooks newest
            # first): an agent's plain-def delete runs on one. atexit would run too late.
            register = getattr(threading, "_register_atexit", atexit.register)
            register(_cancel_active_runs)
            _exit_hook_installed = True
        _active.add(run)
    try:
        yield
    finally:
        with _active_lock:
            _active.discard(run)
        run.finished.set()


class AgentTask(TaskTemplate):  # type: ignore[misc]
    """A Flyte 2 task that runs a flytekit-side agent task: its template, its agent, its local run.

    Plugins subclass it to give a Flyte 2 user their task under the flytekit name
    (``flyteagents_bigquery.flyte2.BigQueryTask`` wraps ``flyteagents_bigquery.BigQueryTask``).
    The template's type, version, ``custom``, ``sql`` and ``config`` are the wrapped task's,
    and so are its inputs and outputs. Run locally, it calls the agent in this process (or
    the service at ``FLYTEAGENTS_ENDPOINT``) exactly as the flytekit task does, on flyte's
    event loop, and returns the outputs as Python values: None, one value, or a tuple in
    declared order.

    Args:
        task: the flytekit-side task, whose class mixes in AsyncAgentExecutorMixin or
            SyncAgentExecutorMixin (BaseSensor does).
        options: flyte task template options (``retries``, ``cache``, ``env_vars``,
            ``secrets``, ...). ``timeout`` goes into the template and bounds a local run too.

    Example:
        ```python
        class BigQueryTask(AgentTask):
            def __init__(self, name: str, query_template: str, task_config: BigQueryConfig, **kwargs):
                options, rest = split_options(kwargs)
                super().__init__(flytekit_side.BigQueryTask(name, query_template, task_config, **rest), **options)
        ```
    """

    def __init__(self, task: PythonTask, **options: Any) -> None:
        if not callable(getattr(task, "_local_job", None)):
            raise TypeError(
                f"{type(task).__name__} cannot run as a Flyte 2 agent task: its class must mix in "
                "flyteagents' AsyncAgentExecutorMixin or SyncAgentExecutorMixin"
            )
        if isinstance(task, SyncAgentExecutorMixin) and not isinstance(self, SyncAgentTask):
            raise TypeError(
                f"{type(task).__name__} runs on a sync agent, which Flyte 2 cannot call as a connector: "
                "wrap it in SyncAgentTask, which runs the agent in the task's own pod"
            )
        self.agent_task = task
        runtime = {k: options.pop(k) for k in ("task_type", "image") if k in options}
        if options.get("timeout") is not None:
            # The local executor bounds the run by the flytekit template's timeout, as for flytekit.
            task.metadata.timeout = _timedelta(options["timeout"])
            if isinstance(options["timeout"], float):
                options["timeout"] = task.metadata.timeout  # flyte takes int seconds or a timedelta
        interface = task.python_interface
        inputs: dict[str, tuple[type, Any]] = {}
        for name, tp in interface.inputs.items():
            default = interface.default_inputs_as_kwargs.get(name, inspect.Parameter.empty)
            inputs[name] = (tp, inspect.Parameter.empty if default is inspect.Parameter.empty else default)
        super().__init__(
            name=task.name,
            interface=NativeInterface(inputs=inputs, outputs=dict(interface.outputs)),
            task_type=runtime.get("task_type", task.task_type),
            task_type_version=task.task_type_version,
            image=runtime.get("image"),
            **options,
        )

    # The template: what the flytekit task puts in its own.
    def custom_config(self, sctx: SerializationContext) -> dict[str, Any]:
        """The wrapped task's ``custom`` (what its agent reads)."""
        return self.agent_task.get_custom(_settings(sctx)) or {}

    def config(self, sctx: SerializationContext) -> dict[str, str]:
        """The wrapped task's template ``config``."""
        return self.agent_task.get_config(_settings(sctx)) or {}

    def sql(self, sctx: SerializationContext) -> Any:
        """The wrapped task's SQL statement as flyteidl2's ``Sql``, or None."""
        sql = self.agent_task.get_sql(_settings(sctx))
        if sql is None:
            return None
        from flyteidl2.core import tasks_pb2

        return tasks_pb2.Sql(statement=sql.statement, dialect=int(sql.dialect))

    async def execute(self, **kwargs: Any) -> Any:
        """Run the task through its agent in this process and return its outputs as Python values."""
        task = self.agent_task
        _ensure_agent(task.task_type, task.task_type_version)
        run = _LocalRun(task, kwargs)
        with _interruptible(task.name):
            resource = await task._local_job(run)
        literals = run.outputs(resource)
        names = list(task.python_interface.outputs)
        if not names:
            return None
        values = await TypeEngine._literal_map_to_kwargs(
            FlyteContextManager.current_context(), literals, dict(task.python_interface.outputs)
        )
        if len(names) == 1:
            return values[names[0]]
        return tuple(values[n] for n in names)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Called outside a flyte run: run the task locally."""
        return self.execute(**kwargs)


async def run_agent_job(
    template: Any,
    output_prefix: str,
    inputs: Any = None,
    name: str | None = None,
    timeout: datetime.timedelta | None = None,
) -> Resource:
    """Run ``template``'s job through its async agent as a local run does, and return the final Resource.

    For a Flyte 2 task that builds its own template (a function task whose job an agent
    submits, as a plugin's): the agent registered for the template's type (else the
    installed plugins') is called in this process, or the service at ``FLYTEAGENTS_ENDPOINT``;
    ``get`` is polled at growing intervals, ``timeout`` (else the template's) bounds the run,
    and on timeout, error or Ctrl-C the job is deleted.

    Args:
        template: the task template: flytekit's model, or a flyteidl or flyteidl2 ``TaskTemplate``
            message (flyteidl2's reads as flyteidl's: they share field numbers).
        output_prefix: where the job writes its outputs (``{output_prefix}/outputs.pb``).
        inputs: the inputs as a flytekit ``LiteralMap``, if the agent reads any.
        name: the name progress lines use; the template's task name by default.
        timeout: longest the job may take.
    """
    from flytekit.models.literals import LiteralMap
    from flytekit.models.task import TaskTemplate as TemplateModel

    if not isinstance(template, TemplateModel):
        from flyteidl.core import tasks_pb2

        template = TemplateModel.from_flyte_idl(tasks_pb2.TaskTemplate.FromString(template.SerializeToString()))
    label = name or template.id.name or template.type
    _ensure_agent(template.type, template.task_type_version)
    with _interruptible(label):
        return await _run_async_job(
            _backend(template),
            label,
            template,
            output_prefix,
            inputs if inputs is not None else LiteralMap(literals={}),
            _local_execution_metadata(label),
            timeout or template.metadata.timeout or None,
            _max_poll_interval(None),
        )


# ---- sync agents --------------------------------------------------------------------------------


def _defining_module() -> str:
    """The module creating a task: the first caller outside flyteagents and its plugins."""
    frame = inspect.currentframe()
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.split(".")[0] not in ("flyteagents",) and not name.startswith("flyteagents_"):
            return str(name)
        frame = frame.f_back
    return "__main__"


class TaskResolver:
    """Finds a Flyte 2 agent task in its pod: by module and attribute name (flyte's resolver protocol).

    flyte's own default resolver only finds function tasks; this one finds any task object
    assigned to a module-level name.
    """

    @property
    def import_path(self) -> str:
        """Where flyte's entrypoint imports this resolver from."""
        return "flyteagents.flyte2.TaskResolver"

    def load_task(self, loader_args: list[str]) -> TaskTemplate:
        """The task named by ``loader_args`` (``mod <module> instance <name>``)."""
        import importlib

        _, module, _, name, *_ = loader_args
        return getattr(importlib.import_module(module), name)

    def loader_args(self, task: TaskTemplate, root_dir: Any = None) -> list[str]:
        """``mod <module> instance <name>`` for a task assigned to a module-level name.

        Raises:
            ValueError: no module-level name holds the task.
        """
        module = getattr(task, "_defined_in", "__main__")
        namespace = vars(sys.modules[module]) if module in sys.modules else {}
        name = next((k for k, v in namespace.items() if v is task), None)
        if name is None:
            raise ValueError(f"task {task.name!r} must be assigned to a module-level name in {module} to run remotely")
        if module == "__main__":
            module = module_of(task)  # the script's file name: how the pod imports it
        return ["mod", module, "instance", name]


class SyncAgentTask(AgentTask, RuntimeTaskTemplate):  # type: ignore[misc]
    """A Flyte 2 task answered by a sync agent (``do``), run in the task's own pod.

    Flyte 2 has no sync connector service, so this task is an ordinary Python task
    (task type ``python``): locally and in its pod alike, it calls the agent's ``do`` in
    its process through the same local executor, or, with ``FLYTEAGENTS_ENDPOINT`` set
    (``env_vars={"FLYTEAGENTS_ENDPOINT": "flyteagents:8000"}``), through the agent service's
    sync call (flyteidl's ``ExecuteTaskSync``). The pod's image needs the agent's plugin;
    flyte's entrypoint finds the task through ``TaskResolver``, so assign it to a
    module-level name.

    Args:
        task: the flytekit-side task, whose class mixes in SyncAgentExecutorMixin.
        image: the pod's image, as for any flyte task ("auto" by default).
        options: flyte task template options (``retries``, ``env_vars``, ``secrets``, ...).
    """

    def __init__(self, task: PythonTask, image: Any = "auto", **options: Any) -> None:
        self._defined_in = _defining_module()
        super().__init__(task, task_type="python", image=image, task_resolver=TaskResolver(), **options)


# ---- sensors ----------------------------------------------------------------------------------


def _uses_zero_arg_super(fn: Any) -> bool:
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return code is not None and "__class__" in code.co_freevars


class BaseSensor(AgentTask):
    """A Flyte 2 sensor: subclass it and write ``poke`` exactly as for flytekit's BaseSensor.

    The options (``timeout``, ``sensor_config``, ``poke_interval``, ``soft_fail``,
    ``backoff``, ``max_poke_interval``, ``jitter``, ``max_consecutive_errors``) and the
    ``poke``/``start`` contract are those of ``flyteagents.sensor.BaseSensor``; flyte task
    options (``retries``, ``env_vars``, ...) are taken too. The sensor engine runs the
    subclass's methods on a flytekit-side twin class, ``<Class>._engine_sensor``, which
    it imports by that path: define the class at module level, and do not call
    ``super()`` without arguments in its methods (name the base instead).

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
        env = flyte.TaskEnvironment.from_task("sensors", wait)
        ```
    """

    #: The flytekit-side sensor class the engine builds and pokes for this class.
    _engine_sensor: ClassVar[type[_CoreBaseSensor]] = _CoreBaseSensor

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_engine_sensor" in cls.__dict__:
            return  # a wrapper of a ready-made sensor class (FileSensor, SQSSensor, ...)
        base = next(
            (b for b in cls.__mro__[1:] if isinstance(b, type) and issubclass(b, BaseSensor)),
            BaseSensor,
        )
        namespace: dict[str, Any] = {}
        for key, value in cls.__dict__.items():
            if key in ("__dict__", "__weakref__", "__init__", "__module__", "__qualname__", "__doc__"):
                continue
            if key.startswith("__dataclass") or key in ("__init_subclass__", "__orig_bases__", "__parameters__"):
                continue
            if _uses_zero_arg_super(value):
                raise TypeError(
                    f"{cls.__qualname__}.{key}: the sensor engine runs this method on "
                    f"{cls.__qualname__}._engine_sensor, where super() without arguments fails; "
                    "call the base class by name"
                )
            namespace[key] = value
        namespace["__module__"] = cls.__module__
        namespace["__qualname__"] = f"{cls.__qualname__}._engine_sensor"
        namespace["__doc__"] = cls.__doc__
        cls._engine_sensor = type(cls.__name__, (base._engine_sensor,), namespace)

    def __init__(self, name: str, **kwargs: Any) -> None:
        options, sensor_options = split_options(kwargs, sensor=True)
        super().__init__(self._engine_sensor(name=name, **sensor_options), **options)

    @property
    def sensor(self) -> _CoreBaseSensor:
        """The flytekit-side sensor this task runs (its options, its config)."""
        return typing.cast(_CoreBaseSensor, self.agent_task)


class FileSensor(BaseSensor):
    """Flyte 2's FileSensor: waits for a file (local path, fsspec URL or glob); outputs ``path`` and ``paths``.

    Takes the options of ``flyteagents.sensor.FileSensor`` (``min_size``, ``stable``,
    ``storage_options``, ``sensor_config`` and BaseSensor's) and flyte task options.
    """

    _engine_sensor = _CoreFileSensor


class HTTPSensor(BaseSensor):
    """Flyte 2's HTTPSensor: waits for a URL's answer; the options of ``flyteagents.sensor.HTTPSensor``."""

    _engine_sensor = _CoreHTTPSensor


class TimeSensor(BaseSensor):
    """Flyte 2's TimeSensor: waits for a moment; the options of ``flyteagents.sensor.TimeSensor``."""

    _engine_sensor = _CoreTimeSensor


class _FunctionSensor(_CoreFunctionSensor):
    """A @sensor function's flytekit side, found by the engine under the Flyte 2 task it is wrapped in."""

    def sensor_location(self) -> tuple[str, str]:
        """``<function name>.agent_task``: the module attribute is the Flyte 2 task, this is its ``agent_task``."""
        return module_of(self._fn), f"{self._fn.__qualname__}.agent_task"


class _FunctionSensorTask(BaseSensor):
    _engine_sensor = _FunctionSensor

    def __init__(self, fn: Callable[..., Any], name: str | None = None, **kwargs: Any) -> None:
        options, sensor_options = split_options(kwargs, sensor=True)
        AgentTask.__init__(self, _FunctionSensor(fn, name=name, **sensor_options), **options)
        self.__wrapped__ = fn


@typing.overload
def sensor(fn: Callable[..., Any], /) -> BaseSensor: ...
@typing.overload
def sensor(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    timeout: _Seconds | None = None,
    sensor_config: Any = None,
    poke_interval: _Seconds | None = None,
    soft_fail: bool = False,
    **kwargs: Any,
) -> Callable[[Callable[..., Any]], BaseSensor]: ...
def sensor(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: _Seconds | None = None,
    sensor_config: Any = None,
    poke_interval: _Seconds | None = None,
    soft_fail: bool = False,
    **kwargs: Any,
) -> BaseSensor | Callable[[Callable[..., Any]], BaseSensor]:
    """Make a Flyte 2 sensor task of a poke function; the options are ``flyteagents.sensor.sensor``'s.

    Define the function at module level: the engine imports it by module and name.

    Example:
        ```python
        @sensor(timeout=600, poke_interval=10)
        async def job_done(job_id: str) -> bool:
            return await job_state(job_id) == "done"

        env = flyte.TaskEnvironment.from_task("sensors", job_done)
        ```
    """

    def wrap(f: Callable[..., Any]) -> BaseSensor:
        return _FunctionSensorTask(
            f,
            name=name,
            timeout=timeout,
            sensor_config=sensor_config,
            poke_interval=poke_interval,
            soft_fail=soft_fail,
            **kwargs,
        )

    return wrap(fn) if fn is not None else wrap
