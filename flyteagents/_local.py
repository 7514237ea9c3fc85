"""Running agent tasks locally: the executor mixins a flytekit task class inherits."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from flyteidl.core import literals_pb2
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.core import utils as flyte_utils
from flytekit.core.base_task import PythonTask
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.python_function_task import PythonFunctionTask
from flytekit.core.type_engine import TypeEngine
from flytekit.models.core import identifier as id_models
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

from ._agent import AgentBase, AsyncAgentBase, SyncAgentBase
from ._exceptions import (
    AgentNotFoundError,
    AgentTimeoutError,
    RetryableTaskFailedError,
    TaskFailedError,
    UnsupportedOperationError,
)
from ._models import Resource
from ._phase import is_terminal_phase
from ._registry import AgentRegistry
from ._runner import shared_runner

__all__ = ["AsyncAgentExecutorMixin", "SyncAgentExecutorMixin", "announce_service", "run_coroutine"]

logger = logging.getLogger("flyteagents")

_T = TypeVar("_T")

#: Environment variable naming a running agent service to run local tasks through.
ENDPOINT_ENV = "FLYTEAGENTS_ENDPOINT"
#: Environment variable capping the interval between two ``get`` calls, in seconds.
MAX_POLL_INTERVAL_ENV = "FLYTEAGENTS_MAX_POLL_INTERVAL"
_FIRST_POLL_INTERVAL = 0.02
_POLL_GROWTH = 1.5
_DEFAULT_MAX_POLL_INTERVAL = 5.0
_DELETE_TIMEOUT = 30.0


class _Backend(Protocol):
    """Where a local task's agent calls go: this process, or a running agent service."""

    async def create(
        self, template: TaskTemplate, output_prefix: str, inputs: LiteralMap, meta: TaskExecutionMetadata
    ) -> Any: ...
    async def get(self, handle: Any) -> Resource: ...
    async def delete(self, handle: Any) -> None: ...
    async def do(
        self, template: TaskTemplate, output_prefix: str, inputs: LiteralMap, meta: TaskExecutionMetadata
    ) -> Resource: ...


class _InProcess:
    """Calls the given agent, or else the registered one, in this process."""

    def __init__(self, template: TaskTemplate, agent: AgentBase | None = None) -> None:
        self.agent = agent or _installed_agent(template.type, template.task_type_version)
        self.runner = shared_runner()

    async def create(
        self, template: TaskTemplate, output_prefix: str, inputs: LiteralMap, meta: TaskExecutionMetadata
    ) -> Any:
        if not isinstance(self.agent, AsyncAgentBase):
            raise UnsupportedOperationError(f"agent {self.agent.name!r} for {template.type!r} is not async")
        return await self.runner.call(
            self.agent,
            "create",
            task_template=template,
            output_prefix=output_prefix,
            inputs=inputs,
            task_execution_metadata=meta,
        )

    async def get(self, handle: Any) -> Resource:
        return await self.runner.call(self.agent, "get", resource_meta=handle)  # type: ignore[no-any-return]

    async def delete(self, handle: Any) -> None:
        await self.runner.call(self.agent, "delete", resource_meta=handle)

    async def do(
        self, template: TaskTemplate, output_prefix: str, inputs: LiteralMap, meta: TaskExecutionMetadata
    ) -> Resource:
        if not isinstance(self.agent, SyncAgentBase):
            raise UnsupportedOperationError(f"agent {self.agent.name!r} for {template.type!r} is not sync")
        return await self.runner.call(  # type: ignore[no-any-return]
            self.agent,
            "do",
            task_template=template,
            output_prefix=output_prefix,
            inputs=inputs,
            task_execution_metadata=meta,
        )


def _installed_agent(task_type: str, version: int) -> AgentBase:
    """The default registry's agent for a task type, discovering installed plugins when it has none yet."""
    registry = AgentRegistry.default()
    try:
        return registry.get_agent(task_type, version)
    except AgentNotFoundError:
        registry.discover()
        return registry.get_agent(task_type, version)


def _backend(template: TaskTemplate, agent: AgentBase | None = None) -> _Backend:
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        from .client import RemoteBackend

        return RemoteBackend(endpoint)
    return _InProcess(template, agent)


#: Set on the KeyboardInterrupt a local run raises after Ctrl-C, once the job was cleaned up.
_CLEANED_UP = "_flyteagents_cleaned_up"


def _report_interrupt_in_one_line() -> None:
    """Make an uncaught KeyboardInterrupt from a local run print one line, not a traceback.

    The agent has already logged what it cancelled; the traceback (rich's, once flytekit is
    imported) through flytekit's frames would only bury that line. The exception stays a plain
    KeyboardInterrupt, so the process still ends as one interrupted by SIGINT does. Other
    exceptions go to the previous hook unchanged.
    """
    previous = sys.excepthook
    if getattr(previous, _CLEANED_UP, False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        if getattr(exc, _CLEANED_UP, False):
            print(f"[flyteagents] {exc}", file=sys.stderr, flush=True)
            return
        previous(exc_type, exc, tb)

    setattr(hook, _CLEANED_UP, True)
    sys.excepthook = hook


def run_coroutine(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion from synchronous code and return its result.

    In the main thread, Ctrl-C (SIGINT) cancels the coroutine, so its ``finally``
    blocks run (a started job is deleted), then raises KeyboardInterrupt. The previous
    SIGINT handler is restored afterwards. Called from inside a running event loop, the
    coroutine runs on a fresh loop in a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="flyteagents-local") as pool:
            return pool.submit(run_coroutine, coro).result()  # type: ignore[arg-type]

    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            print("[flyteagents] still cleaning up the job, please wait", file=sys.stderr, flush=True)
            return
        interrupted.set()
        loop.call_soon_threadsafe(task.cancel)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if interrupted.is_set():
            _report_interrupt_in_one_line()
            interrupt = KeyboardInterrupt("stopped by Ctrl-C; the job it had started was cancelled (see above)")
            setattr(interrupt, _CLEANED_UP, True)
            raise interrupt from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


#: Environment variable: seconds between two progress lines when nothing changes and output is not
#: a terminal (a log file, CI); 30 by default.
PROGRESS_PERIOD_ENV = "FLYTEAGENTS_PROGRESS_PERIOD"
_DEFAULT_PROGRESS_PERIOD = 30.0


def _seconds(value: float) -> str:
    """12.3s, 4m05s, 1h02m: short enough for a progress line."""
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _progress_period() -> float:
    value = os.environ.get(PROGRESS_PERIOD_ENV)
    if not value:
        return _DEFAULT_PROGRESS_PERIOD
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{PROGRESS_PERIOD_ENV} must be a number of seconds, not {value!r}") from None


def _via(backend: Any) -> str | None:
    """``HOST:PORT`` of the agent service a backend sends calls to; None when they run in this process."""
    endpoint = getattr(backend, "endpoint", None)
    return endpoint if isinstance(endpoint, str) else None


def announce_service(task_name: str, backend: Any) -> None:
    """Say, once, that a local run's calls go to an agent service rather than run in this process."""
    via = _via(backend)
    if via:
        print(f"[flyteagents] {task_name}: via agent service {via}", file=sys.stderr, flush=True)


class _Reporter:
    """Shows a local task's progress: the phase, its message and log links, the time since it started,
    and for a sensor its pokes and when the next one comes.

    On a terminal one live line is redrawn in place; otherwise (piped, a log file) a line is printed
    to stderr when the phase, message or links change, and every ``FLYTEAGENTS_PROGRESS_PERIOD``
    seconds (30) while nothing does, so a long run never looks stuck.
    """

    def __init__(
        self,
        task_name: str,
        pokes: bool = False,
        period: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task_name = task_name
        self.pokes = pokes
        self.polls = 0
        self.clock = clock
        self.started = clock()
        self.period = period if period is not None else _progress_period()
        self.last: tuple[str, str, str, str] | None = None
        self.printed_at = 0.0
        self.live: Any = None
        if sys.stdout.isatty():
            from rich.console import Console
            from rich.status import Status

            self.live = Status(f"{task_name}: starting", console=Console(), spinner="dots")
            self.live.start()

    def _line(self, state: tuple[str, str, str, str], elapsed: float, next_in: float | None, final: bool) -> str:
        phase, message, links, last_error = state
        text = f"{self.task_name}: {phase}" + (f" - {message}" if message else "")
        if links:
            text += f" [{links}]"
        count = f"{self.polls} poke{'s' if self.polls != 1 else ''}"
        error = f", last error: {last_error}" if last_error else ""
        if final:
            return text + f" after {_seconds(elapsed)}" + (f", {count}{error}" if self.pokes else "")
        detail = _seconds(elapsed)
        if self.pokes:
            detail += f", {count}" + (f", next in {_seconds(next_in)}" if next_in is not None else "") + error
        return f"{text} ({detail})"

    def update(self, resource: Resource, next_in: float | None = None) -> None:
        """Show a ``get`` answer; ``next_in`` is the wait before the next one."""
        self.polls += 1
        now = self.clock()
        links = ", ".join(f"{link.name}: {link.uri}" for link in resource.log_links or [])
        state = (resource.phase_name, resource.message or "", links, _last_error(resource))
        final = is_terminal_phase(resource.phase)
        line = self._line(state, now - self.started, next_in, final)
        changed, self.last = state != self.last, state
        if self.live is not None:
            self.live.update(line)
            if final:
                self.live.stop()
                self.live = None
                print(line, flush=True)
        elif changed or final or now - self.printed_at >= self.period:
            self.printed_at = now
            print(f"[flyteagents] {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _last_error(resource: Resource) -> str:
    """A sensor's last poke error from its custom_info, unless its message already says it."""
    error = str((resource.custom_info or {}).get("last_error") or "")
    return "" if error in (resource.message or "") else error


def _max_poll_interval(task: Any) -> float:
    value = getattr(task, "max_poll_interval", None) or os.environ.get(MAX_POLL_INTERVAL_ENV)
    return float(value) if value else _DEFAULT_MAX_POLL_INTERVAL


def poll_intervals(max_interval: float, first_interval: float = _FIRST_POLL_INTERVAL) -> Iterator[float]:
    """The waits between two ``get`` calls: short at first so fast jobs finish fast, growing to a cap."""
    interval = first_interval
    while True:
        yield min(interval, max_interval)
        interval *= _POLL_GROWTH


async def _run_async_job(
    backend: _Backend,
    task_name: str,
    template: TaskTemplate,
    output_prefix: str,
    inputs: LiteralMap,
    meta: TaskExecutionMetadata,
    timeout: timedelta | None,
    max_interval: float,
    first_interval: float = _FIRST_POLL_INTERVAL,
    next_wait: Callable[[Any], float | None] | None = None,
    pokes: bool = False,
) -> Resource:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout.total_seconds() if timeout else None
    announce_service(task_name, backend)
    handle = await _bounded(backend.create(template, output_prefix, inputs, meta), deadline, task_name, timeout)
    reporter = _Reporter(task_name, pokes=pokes)
    finished = False
    try:
        for interval in poll_intervals(max_interval, first_interval):
            resource = await _bounded(backend.get(handle), deadline, task_name, timeout)
            wait = next_wait(handle) if next_wait is not None else None  # the sensor's own schedule
            if wait is not None:
                interval = wait
            reporter.update(resource, interval)
            if is_terminal_phase(resource.phase):
                finished = True
                return resource
            await _bounded(asyncio.sleep(interval), deadline, task_name, timeout)
        raise AssertionError("unreachable: poll_intervals is endless")
    finally:
        reporter.close()
        if not finished:
            await _delete_quietly(backend, handle, task_name)


async def _bounded(
    aw: Coroutine[Any, Any, _T], deadline: float | None, task_name: str, timeout: timedelta | None
) -> _T:
    if deadline is None:
        return await aw
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(aw, max(deadline - loop.time(), 0))
    except asyncio.TimeoutError:
        if loop.time() < deadline:
            raise  # the agent's own timeout, not the task's
        raise AgentTimeoutError(f"task {task_name} timed out after {timeout}") from None


async def _delete_quietly(backend: _Backend, handle: Any, task_name: str) -> None:
    try:
        await asyncio.wait_for(backend.delete(handle), _DELETE_TIMEOUT)
        logger.info("deleted the job of task %s", task_name)
    except Exception as exc:
        print(f"[flyteagents] could not delete the job of task {task_name}: {exc}", file=sys.stderr, flush=True)


def _local_execution_metadata(task_name: str) -> TaskExecutionMetadata:
    run = f"local-{uuid.uuid4().hex[:12]}"
    return TaskExecutionMetadata(
        task_execution_id=id_models.TaskExecutionIdentifier(
            task_id=id_models.Identifier(id_models.ResourceType.TASK, "local", "development", task_name, "local"),
            node_execution_id=id_models.NodeExecutionIdentifier(
                "n0", id_models.WorkflowExecutionIdentifier("local", "development", run)
            ),
            retry_attempt=0,
        ),
        namespace="local",
        labels={},
        annotations={},
        k8s_service_account="",
        environment_variables={},
        identity=None,
    )


def _default_images() -> ImageConfig:
    try:
        return ImageConfig.auto_default_image()
    except ValueError:  # flytekit has no default image for this Python version (3.13 on flytekit 1.16)
        return ImageConfig.auto(img_name="cr.flyte.org/flyteorg/flytekit:py3.12-latest")


class _LocalRun:
    """One local execution of an agent task: its template, inputs and outputs."""

    def __init__(self, task: PythonTask, inputs: dict[str, Any]) -> None:
        from flytekit.tools.translator import get_serializable

        self.task = task
        self.ctx = FlyteContextManager.current_context()
        settings = self.ctx.serialization_settings or SerializationSettings(_default_images())
        self.template: TaskTemplate = get_serializable(OrderedDict(), settings, task).template
        self.output_prefix = self.ctx.file_access.get_random_remote_directory()
        self.inputs = TypeEngine.dict_to_literal_map(self.ctx, inputs, task.get_input_types())
        self.meta = _local_execution_metadata(task.name)
        if isinstance(task, PythonFunctionTask):
            self._stage_container_inputs()

    def _stage_container_inputs(self) -> None:
        """A container task reads inputs.pb and writes outputs.pb under the output prefix."""
        local = self.ctx.file_access.get_random_local_path()
        flyte_utils.write_proto_to_file(self.inputs.to_flyte_idl(), local)
        self.ctx.file_access.put_data(local, f"{self.output_prefix}/inputs.pb")
        container = self.template.container
        if container is not None:
            replacements = {
                "{{.input}}": f"{self.output_prefix}/inputs.pb",
                "{{.outputPrefix}}": self.output_prefix,
                "{{.rawOutputDataPrefix}}": f"{self.output_prefix}/raw_output",
                "{{.checkpointOutputPrefix}}": f"{self.output_prefix}/checkpoint_output",
                "{{.prevCheckpointPrefix}}": "",
            }
            for i, arg in enumerate(container.args):
                for key, value in replacements.items():
                    arg = arg.replace(key, value)
                container.args[i] = arg

    def outputs(self, resource: Resource) -> LiteralMap:
        """The task's outputs from a final Resource; raises on any phase but SUCCEEDED."""
        name = self.task.name
        if resource.phase == TaskExecution.RETRYABLE_FAILED:
            raise RetryableTaskFailedError(f"task {name} failed and may be retried: {resource.message or ''}")
        if resource.phase != TaskExecution.SUCCEEDED:
            raise TaskFailedError(
                f"task {name} ended {resource.phase_name}: {resource.message or 'no message'}",
                phase=resource.phase_name,
            )
        outputs = resource.outputs
        if isinstance(outputs, LiteralMap):
            return outputs
        if isinstance(outputs, literals_pb2.LiteralMap):
            return LiteralMap.from_flyte_idl(outputs)
        if outputs is not None:
            return TypeEngine.dict_to_literal_map(self.ctx, outputs, self.task.python_interface.outputs)
        if not self.template.interface.outputs:
            return LiteralMap(literals={})
        return self._read_outputs_file()

    def _read_outputs_file(self) -> LiteralMap:
        remote = f"{self.output_prefix}/outputs.pb"
        if not self.ctx.file_access.exists(remote):
            raise TaskFailedError(f"task {self.task.name} succeeded but neither returned outputs nor wrote {remote}")
        local = self.ctx.file_access.get_random_local_path()
        self.ctx.file_access.get_data(remote, local)
        return LiteralMap.from_flyte_idl(flyte_utils.load_proto_from_file(literals_pb2.LiteralMap, local))


class AsyncAgentExecutorMixin:
    """Mix into a flytekit task class to run it locally through its async agent.

    Running the task (``python wf.py``, ``pyflyte run``) calls the agent's ``create``,
    then ``get`` at once and again at growing intervals capped by ``max_poll_interval``
    seconds (or ``FLYTEAGENTS_MAX_POLL_INTERVAL``), until the job ends. The task's
    ``timeout`` is honoured; on timeout, Ctrl-C or any error the job is deleted once.
    With ``FLYTEAGENTS_ENDPOINT=host:port`` set, the calls go to that agent service.
    """

    #: Longest wait between two ``get`` calls, in seconds; None uses the default of 5.
    max_poll_interval: float | None = None

    def execute(self, **kwargs: Any) -> LiteralMap:
        """Run the task's job through its agent and return its outputs."""
        run = _LocalRun(self, kwargs)  # type: ignore[arg-type]
        return run.outputs(run_coroutine(self._local_job(run)))

    def _local_job(self, run: _LocalRun) -> Coroutine[Any, Any, Resource]:
        """The local run's job, to await on any loop (``execute`` here, a Flyte 2 task's loop)."""
        return _run_async_job(
            _backend(run.template),
            run.task.name,
            run.template,
            run.output_prefix,
            run.inputs,
            run.meta,
            run.template.metadata.timeout or None,
            _max_poll_interval(self),
        )


class SyncAgentExecutorMixin:
    """Mix into a flytekit task class to run it locally through its sync agent's ``do``."""

    def execute(self, **kwargs: Any) -> LiteralMap:
        """Run the task through its agent and return its outputs."""
        run = _LocalRun(self, kwargs)  # type: ignore[arg-type]
        return run.outputs(run_coroutine(self._local_job(run)))

    def _local_job(self, run: _LocalRun) -> Coroutine[Any, Any, Resource]:
        """The local run's ``do`` call, to await on any loop (``execute`` here, a Flyte 2 task's loop)."""
        # A task that carries its agent (@sync_agent's) runs on it; others on the registered one.
        own = getattr(self, "agent", None)
        backend = _backend(run.template, own if isinstance(own, SyncAgentBase) else None)
        announce_service(run.task.name, backend)
        timeout = run.template.metadata.timeout or None

        async def do() -> Resource:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout.total_seconds() if timeout else None
            call = backend.do(run.template, run.output_prefix, run.inputs, run.meta)
            resource = await _bounded(call, deadline, run.task.name, timeout)
            return resource

        return do()
