"""The base classes agents are written against: AgentBase, AsyncAgentBase, SyncAgentBase."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

from flyteidl.admin.agent_pb2 import GetTaskMetricsResponse
from flytekit.models.literals import LiteralMap
from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

from ._models import Resource, ResourceMeta, TaskCategory
from ._polling import PollPolicy, PollSchedule

__all__ = ["AgentBase", "AsyncAgentBase", "SyncAgentBase"]

_AGENT_METHODS = ("create", "get", "delete", "do", "get_metrics", "get_logs")


class AgentBase:
    """An agent serves one task category (task type and version).

    Subclass AsyncAgentBase or SyncAgentBase rather than this class. Every agent
    method may be ``async def`` (awaited on the event loop) or a plain ``def``
    (run on a bounded thread pool the framework owns, never on the loop).
    """

    #: The name operators see in ``ListAgents``; agents with the same name are grouped.
    name: ClassVar[str] = "Base Agent"
    #: For each agent method the class defines, whether it is a coroutine function.
    async_methods: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.async_methods = frozenset(m for m in _AGENT_METHODS if inspect.iscoroutinefunction(getattr(cls, m, None)))

    def __init__(self, task_type_name: str, task_type_version: int = 0, **kwargs: Any) -> None:
        self._task_category = TaskCategory(name=task_type_name, version=task_type_version)

    @property
    def task_category(self) -> TaskCategory:
        """The task category this agent serves."""
        return self._task_category

    @property
    def is_sync(self) -> bool:
        """True for agents that answer in one call (``do``)."""
        return isinstance(self, SyncAgentBase)

    def implements(self, method: str) -> bool:
        """True when the agent's class overrides the optional ``method`` of its base."""
        base = SyncAgentBase if self.is_sync else AsyncAgentBase
        return getattr(type(self), method, None) is not getattr(base, method, None)


class AsyncAgentBase(AgentBase):
    """An agent that drives a long job on an external system through create, get and delete.

    All three must be idempotent: FlytePropeller repeats ``create`` after any error or
    timeout, so derive external job ids from ``task_execution_metadata.task_execution_id``.

    Example:
        ```python
        @dataclass
        class JobMeta(ResourceMeta):
            job_id: str
        class MyAgent(AsyncAgentBase):
            def __init__(self) -> None:
                super().__init__(task_type_name="my_job", metadata_type=JobMeta)
            async def create(self, task_template, output_prefix, inputs=None, **kw) -> JobMeta:
                return JobMeta(job_id=await submit(task_template, inputs))
            async def get(self, resource_meta: JobMeta, **kw) -> Resource:
                return Resource(phase=to_phase(await job_state(resource_meta.job_id)))
            async def delete(self, resource_meta: JobMeta, **kw) -> None:
                await cancel(resource_meta.job_id)
        ```
    """

    name: ClassVar[str] = "Base Async Agent"
    #: The least time between two ``get`` calls of one job in the service, and how it grows.
    #: Between calls the service answers GetTask with the last ``get``'s answer. None (the
    #: default): every GetTask calls ``get``. A task overrides the interval when its
    #: ResourceMeta has a ``poll_interval`` field (seconds, set by ``create``); backoff needs
    #: the job's start, read from a ``started_at`` field (epoch seconds).
    poll_policy: PollPolicy | None = None

    def __init__(self, metadata_type: type[ResourceMeta] = ResourceMeta, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metadata_type = metadata_type

    @property
    def metadata_type(self) -> type[ResourceMeta]:
        """The ResourceMeta subclass ``create`` returns, used to decode resource_meta bytes."""
        return self._metadata_type

    def create(
        self,
        task_template: TaskTemplate,
        output_prefix: str,
        inputs: LiteralMap | None = None,
        task_execution_metadata: TaskExecutionMetadata | None = None,
        **kwargs: Any,
    ) -> ResourceMeta:
        """Start the job (or find the one already started for this attempt) and identify it."""
        raise NotImplementedError

    def get(self, resource_meta: ResourceMeta, **kwargs: Any) -> Resource:
        """Report the job's phase and, once it succeeded, its outputs."""
        raise NotImplementedError

    def delete(self, resource_meta: ResourceMeta, **kwargs: Any) -> None:
        """Cancel the job; deleting a job that is gone or finished is not an error."""
        raise NotImplementedError

    def poll_schedule(self, resource_meta: ResourceMeta, job: bytes = b"") -> PollSchedule | None:
        """When the service may call ``get`` for this job; None: on every GetTask.

        The default applies ``poll_policy``, with the job's own ``poll_interval`` and
        ``started_at`` where its ResourceMeta has them. It must depend only on the
        ResourceMeta (so every replica agrees) and be cheap: it runs on every GetTask.

        Args:
            resource_meta: the job's decoded ResourceMeta.
            job: the job's resource_meta bytes, a stable identity for the schedule's jitter.
        """
        policy = self.poll_policy
        if policy is None:
            return None
        interval = getattr(resource_meta, "poll_interval", None)
        if interval is not None and interval != policy.interval:
            cap = policy.max_interval
            policy = dataclasses.replace(
                policy, interval=float(interval), max_interval=None if cap is None else max(cap, interval)
            )
        start = getattr(resource_meta, "started_at", None)
        return policy.schedule(job.hex(), start if isinstance(start, (int, float)) else None)

    def get_metrics(self, resource_meta: ResourceMeta, **kwargs: Any) -> GetTaskMetricsResponse:
        """Optional: the job's metrics (``GetTaskMetrics``)."""
        raise NotImplementedError

    def get_logs(self, resource_meta: ResourceMeta, **kwargs: Any) -> Any:
        """Optional: the job's logs (``GetTaskLogs``).

        Return a GetTaskLogsResponse, a list of log lines, or an (async) iterator of
        either; the service streams them to the caller after a header.
        """
        raise NotImplementedError


class SyncAgentBase(AgentBase):
    """An agent that answers a task in one call, such as an API request.

    Example:
        ```python
        class EchoAgent(SyncAgentBase):
            def __init__(self) -> None:
                super().__init__(task_type_name="echo")
            async def do(self, task_template, output_prefix, inputs=None, **kw) -> Resource:
                return Resource(phase=TaskExecution.SUCCEEDED, outputs={"o0": "hi"})
        ```
    """

    name: ClassVar[str] = "Base Sync Agent"

    def do(
        self,
        task_template: TaskTemplate,
        output_prefix: str,
        inputs: LiteralMap | None = None,
        **kwargs: Any,
    ) -> Resource:
        """Run the task and return its final Resource."""
        raise NotImplementedError
