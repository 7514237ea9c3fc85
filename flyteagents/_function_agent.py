"""The @sync_agent decorator: an ``async def`` becomes a sync agent and the task that runs on it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, overload

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.core.base_task import PythonTask, TaskMetadata
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.interface import Interface, transform_function_to_interface
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskTemplate

from ._agent import SyncAgentBase
from ._exceptions import AgentError, AgentNotFoundError, InvalidTaskError
from ._local import SyncAgentExecutorMixin
from ._models import Resource
from ._registry import AgentRegistry, module_of

__all__ = ["FunctionAgent", "SyncAgentTask", "sync_agent"]

_AsyncFn = Callable[..., Coroutine[Any, Any, Any]]


def _location(fn: Callable[..., Any]) -> str:
    return f"{module_of(fn)}.{fn.__qualname__}"


class FunctionAgent(SyncAgentBase):
    """A sync agent whose ``do`` is a decorated ``async def``; made by ``@sync_agent``.

    ``do`` turns the task's input literals into the function's Python arguments, awaits the
    function, and turns what it returns into the task's outputs, as flytekit does for ``@task``.
    """

    name = "Function Agent"

    def __init__(self, fn: _AsyncFn, task_type: str, interface: Interface) -> None:
        super().__init__(task_type_name=task_type)
        self.fn = fn
        self.interface = interface
        self.name = f"{_location(fn)} (sync agent)"  # type: ignore[misc]  # per function in ListAgents

    async def do(  # type: ignore[override]  # the base allows do to be a coroutine (see AgentBase)
        self,
        task_template: TaskTemplate,
        output_prefix: str,
        inputs: LiteralMap | None = None,
        **kwargs: Any,
    ) -> Resource:
        """Await the function with the task's inputs; its return value becomes the task's outputs."""
        ctx = FlyteContextManager.current_context()
        try:
            values = await TypeEngine._literal_map_to_kwargs(
                ctx, inputs or LiteralMap(literals={}), dict(self.interface.inputs)
            )
        except Exception as exc:
            raise InvalidTaskError(f"inputs of {self.name} do not match its function: {exc}") from None
        try:
            result = await self.fn(**values)
        except AgentError:  # the function's own say (retryable, timeout, ...): the service maps it
            raise
        except Exception as exc:  # a user error fails the task, readably, instead of the call
            return Resource(phase=TaskExecution.FAILED, message=f"{self.name} raised {type(exc).__name__}: {exc}")
        names = list(self.interface.outputs)
        try:
            if len(names) > 1:  # a NamedTuple, as with flytekit's @task
                outputs = dict(zip(names, result, strict=True))
            else:
                outputs = {names[0]: result} if names else {}
            literals = await TypeEngine._dict_to_literal_map(ctx, outputs, dict(self.interface.outputs))
        except Exception as exc:
            return Resource(
                phase=TaskExecution.FAILED,
                message=f"{self.name} returned {result!r:.80}, which does not fit its declared outputs: {exc}",
            )
        return Resource(phase=TaskExecution.SUCCEEDED, outputs=literals)


class SyncAgentTask(SyncAgentExecutorMixin, PythonTask):  # type: ignore[misc]
    """The flytekit task of a ``@sync_agent`` function: run by its agent, locally or by the service."""

    def __init__(self, agent: FunctionAgent, name: str, **kwargs: Any) -> None:
        super().__init__(task_type=agent.task_category.name, name=name, interface=agent.interface, **kwargs)
        self.agent = agent


def _register(agent: FunctionAgent) -> None:
    """Register the agent; the same function imported again (as ``__main__`` and by name) replaces itself."""
    try:
        current: Any = AgentRegistry.get_agent(agent.task_category.name)
    except AgentNotFoundError:
        current = None
    same = isinstance(current, FunctionAgent) and _location(current.fn) == _location(agent.fn)
    AgentRegistry.register(agent, override=same)


@overload
def sync_agent(fn: _AsyncFn, /) -> SyncAgentTask: ...
@overload
def sync_agent(
    fn: None = None, /, *, task_type: str | None = None, name: str | None = None, metadata: TaskMetadata | None = None
) -> Callable[[_AsyncFn], SyncAgentTask]: ...
def sync_agent(
    fn: _AsyncFn | None = None,
    /,
    *,
    task_type: str | None = None,
    name: str | None = None,
    metadata: TaskMetadata | None = None,
) -> SyncAgentTask | Callable[[_AsyncFn], SyncAgentTask]:
    """Make a sync agent, and the task that runs on it, of one ``async def``.

    The function's typed parameters are the task's inputs and its return annotation its
    outputs, as with flytekit's ``@task`` (a ``NamedTuple`` for several). The agent is
    registered under ``task_type`` (default: the function's module and name) when the module
    is imported, so ``flyteagents serve --modules <module>`` serves it; in a workflow the
    task runs on the agent in-process, or through the service named by ``FLYTEAGENTS_ENDPOINT``.

    Args:
        fn: the ``async def`` to decorate.
        task_type: the task type FlytePropeller routes to the agent service.
        name: the task's name; default: the function's module and name.
        metadata: flytekit TaskMetadata (``timeout``, ``retries``, ...).

    Raises:
        TypeError: ``fn`` is not an ``async def``.

    Example:
        ```python
        @sync_agent(task_type="shout")
        async def shout(text: str, times: int = 1) -> str:
            return " ".join([text.upper()] * times)

        @workflow
        def wf(text: str) -> str:
            return shout(text=text, times=2)
        ```
    """

    def wrap(f: _AsyncFn) -> SyncAgentTask:
        if not inspect.iscoroutinefunction(f):
            raise TypeError(f"@sync_agent needs an async def; {f.__qualname__} is a plain function")
        location = _location(f)
        agent = FunctionAgent(f, task_type or location, transform_function_to_interface(f))
        _register(agent)
        return SyncAgentTask(agent, name or location, metadata=metadata)

    return wrap(fn) if fn is not None else wrap
