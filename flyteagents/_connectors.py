"""flyte-sdk's connector API (``flyte.connectors``) on flyteagents: AsyncConnector and ConnectorRegistry.

A connector written for Flyte 2 expects flyteidl2 messages (its template and execution
metadata), its inputs as Python values, and the request's Connection secrets and configs as
keyword arguments; it answers Resources whose log links may be flyteidl2 messages. AsyncConnector
turns the agent calls flyteagents makes (flytekit models, a LiteralMap, ``get_secret``) into those,
so such a connector runs here, over either protocol and locally, with only its imports changed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Generic, TypeVar

from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2
from flyteidl2.connector import connector_pb2
from flyteidl2.core import tasks_pb2
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine

from ._agent import AsyncAgentBase
from ._models import Resource, ResourceMeta
from ._registry import AgentRegistry
from ._secrets import current_connection

__all__ = ["AsyncConnector", "ConnectorRegistry"]

M = TypeVar("M", bound=ResourceMeta)

_ADAPTED = ("create", "get", "delete", "get_metrics", "get_logs")


def _twin(message_type: Any, message: Any) -> Any:
    """``message`` as ``message_type``, its twin in the other flyteidl package (same field numbers)."""
    return message_type.FromString(message.SerializeToString())


def _proto_of(model: Any) -> Any:
    """The flyteidl proto of a flytekit model (or the proto itself)."""
    return model.to_flyte_idl() if hasattr(model, "to_flyte_idl") else model


def _connection_arguments() -> dict[str, str]:
    """The request's Connection as flyte-sdk hands it to connectors: secrets and configs as keyword arguments."""
    connection = current_connection.get()
    if connection is None:
        return {}
    return {**connection.configs, **connection.secrets}


async def _python_inputs(task_template: Any, inputs: Any) -> dict[str, Any] | None:
    """The inputs as Python values, typed by the template's interface (as flyte-sdk's service converts them)."""
    if inputs is None:
        return None
    declared = task_template.interface.inputs if task_template.interface is not None else {}
    if not inputs.literals:
        return {}
    # flytekit's coroutine behind literal_map_to_kwargs, which would run it to completion on the loop
    return await TypeEngine._literal_map_to_kwargs(  # type: ignore[no-any-return,misc]
        FlyteContextManager.current_context(), inputs, literal_types=declared
    )


def _flyteidl_resource(resource: Any) -> Any:
    """A connector's Resource with flyteidl2 log links turned into flyteidl's."""
    if not isinstance(resource, Resource) or not resource.log_links:
        return resource
    links = [
        _twin(execution_pb2.TaskLog, link) if type(link).__module__.startswith("flyteidl2.") else link
        for link in resource.log_links
    ]
    return dataclasses.replace(resource, log_links=links)


def _flyteidl_logs(message: Any) -> Any:
    if type(message).__module__.startswith("flyteidl2."):
        return _twin(agent_pb2.GetTaskLogsResponse, message)
    return message


def _adapt(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a connector's own ``name`` method so flyteagents calls it the way flyte-sdk does."""
    if name == "get_logs":

        @functools.wraps(method)
        async def get_logs(self: Any, resource_meta: Any, token: str = "", **kwargs: Any) -> Any:
            result = method(self, resource_meta=resource_meta, token=token)
            if inspect.isawaitable(result):
                return _flyteidl_logs(await result)
            return _stream(result)

        return get_logs
    if not inspect.iscoroutinefunction(method):
        raise TypeError(f"{method.__qualname__} must be an async def, as flyte.connectors.AsyncConnector requires")
    if name == "create":

        @functools.wraps(method)
        async def create(
            self: Any,
            task_template: Any,
            output_prefix: str = "",
            inputs: Any = None,
            task_execution_metadata: Any = None,
            **kwargs: Any,
        ) -> Any:
            meta = task_execution_metadata
            if meta is not None:
                meta = _twin(connector_pb2.TaskExecutionMetadata, _proto_of(meta))
            return await method(
                self,
                task_template=_twin(tasks_pb2.TaskTemplate, _proto_of(task_template)),
                output_prefix=output_prefix,
                inputs=await _python_inputs(task_template, inputs),
                task_execution_metadata=meta,
                **_connection_arguments(),
            )

        return create
    if name == "get":

        @functools.wraps(method)
        async def get(self: Any, resource_meta: Any, **kwargs: Any) -> Any:
            return _flyteidl_resource(await method(self, resource_meta=resource_meta, **_connection_arguments()))

        return get
    if name == "delete":

        @functools.wraps(method)
        async def delete(self: Any, resource_meta: Any, **kwargs: Any) -> Any:
            return await method(self, resource_meta=resource_meta, **_connection_arguments())

        return delete

    @functools.wraps(method)
    async def get_metrics(self: Any, resource_meta: Any, **kwargs: Any) -> Any:
        result = await method(self, resource_meta=resource_meta, **kwargs)
        if isinstance(result, connector_pb2.GetTaskMetricsResponse):
            return _twin(agent_pb2.GetTaskMetricsResponse, result)
        return result

    return get_metrics


async def _stream(messages: Any) -> AsyncIterator[Any]:
    async for message in messages:
        yield _flyteidl_logs(message)


class AsyncConnector(AsyncAgentBase, Generic[M]):
    """flyte-sdk's ``flyte.connectors.AsyncConnector``: an async agent configured by class attributes.

    Its methods receive what flyte-sdk's connector service hands them: ``create`` gets the
    template and execution metadata as flyteidl2 messages and the inputs as Python values, and
    ``create``/``get``/``delete`` get the request's Connection secrets and configs as keyword
    arguments (secret id -> value; Flyte 2 calls only). flyteagents' own agents read the same
    secrets with :func:`flyteagents.get_secret`.

    Example:
        ```python
        class BatchJobConnector(AsyncConnector[JobMeta]):
            name = "Batch Job Connector"
            task_type_name = "batch_job"
            metadata_type = JobMeta
            async def create(self, task_template, output_prefix="", inputs=None, **kwargs) -> JobMeta:
                return JobMeta(job_id=await submit(inputs, api_key=kwargs.get("api_key")))
            async def get(self, resource_meta: JobMeta, **kwargs) -> Resource: ...
            async def delete(self, resource_meta: JobMeta, **kwargs) -> None: ...
        ConnectorRegistry.register(BatchJobConnector())
        ```
    """

    name: ClassVar[str] = "Async Connector"
    #: The task type this connector runs.
    task_type_name: ClassVar[str]
    #: The task type's version.
    task_type_version: ClassVar[int] = 0
    #: The ResourceMeta subclass ``create`` returns.
    metadata_type: type[M]  # type: ignore[assignment]  # a class attribute, where agents have a property

    def __init_subclass__(cls, **kwargs: Any) -> None:
        for name in _ADAPTED:
            own = cls.__dict__.get(name)
            if own is not None and not getattr(own, "_flyteagents_adapted", False):
                adapted = _adapt(name, own)
                adapted._flyteagents_adapted = True  # type: ignore[attr-defined]
                setattr(cls, name, adapted)
        super().__init_subclass__(**kwargs)

    def __init__(self) -> None:
        cls = type(self)
        if not isinstance(getattr(cls, "task_type_name", None), str):
            raise TypeError(f"{cls.__name__} must set the class attribute task_type_name")
        super().__init__(
            task_type_name=cls.task_type_name,
            task_type_version=cls.task_type_version,
            metadata_type=getattr(cls, "metadata_type", ResourceMeta),
        )


class ConnectorRegistry:
    """flyte-sdk's ``flyte.connectors.ConnectorRegistry``: the same calls, on flyteagents' default registry."""

    @staticmethod
    def register(connector: AsyncConnector[Any], override: bool = False) -> None:
        """Serve ``connector`` (``AgentRegistry.register``); DuplicateAgentError for a taken category."""
        AgentRegistry.register(connector, override=override)

    @staticmethod
    def get_connector(task_type_name: str, task_type_version: int = 0) -> AsyncConnector[Any]:
        """The connector for a task category; AgentNotFoundError when none serves it."""
        agent = AgentRegistry.get_agent(task_type_name, task_type_version)
        if not isinstance(agent, AsyncConnector):
            raise TypeError(f"the agent for {task_type_name!r} is {type(agent).__name__}, not an AsyncConnector")
        return agent
