"""The gRPC servicers: flyteidl's AsyncAgentService, SyncAgentService and AgentMetadataService."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar

import grpc
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, literals_pb2
from flyteidl.service import agent_pb2 as service_pb2
from flyteidl.service import agent_pb2_grpc
from flytekit.models.literals import LiteralMap

from .._agent import AgentBase, AsyncAgentBase, SyncAgentBase
from .._exceptions import (
    InvalidTaskError,
    RetryableTaskFailedError,
    TaskFailedError,
    UnsupportedOperationError,
)
from .._models import Resource, ResourceMeta
from .._registry import AgentRegistry
from .._runner import AgentRunner
from ._errors import UnimplementedError, status_for
from ._handlers import decoder, refuse_undecodable
from ._inputs import check_inputs
from ._lazy import task_arguments, unconverted_proto
from ._logging import LogLimiter, current_task
from ._metrics import ServiceMetrics
from ._outputs import outputs_to_proto
from ._polls import PollCache
from ._resource_meta import decode_meta

__all__ = ["AgentMetadataServicer", "AgentService", "AsyncAgentServicer", "SyncAgentServicer"]

logger = logging.getLogger("flyteagents.server")

_FAILED = execution_pb2.TaskExecution.FAILED
_RETRYABLE_FAILED = execution_pb2.TaskExecution.RETRYABLE_FAILED
_UNKNOWN = "unknown"  # the task_type label of calls whose agent was not found (bounds label cardinality)
_OK = grpc.StatusCode.OK.name
_INTERNAL = grpc.StatusCode.INTERNAL
#: Codes of the caller's (or the deployment's) making: logged in one line, no traceback, rate-limited.
_CLIENT_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_A = TypeVar("_A", bound=AgentBase)
_ASYNC_SERVICE = service_pb2.DESCRIPTOR.services_by_name["AsyncAgentService"].full_name
_SYNC_SERVICE = service_pb2.DESCRIPTOR.services_by_name["SyncAgentService"].full_name
_OPERATIONS = ("create", "get", "delete", "get_metrics", "get_logs", "do", "list_agents", "get_agent")


class AgentService:
    """What the three servicers share: the registry, the runner that calls agents, the metrics.

    Args:
        registry: the agents to serve.
        runner: calls agent methods; plain-function methods run on its thread pool.
        metrics: where calls are counted; a new ServiceMetrics when None.
    """

    def __init__(self, registry: AgentRegistry, runner: AgentRunner, metrics: ServiceMetrics | None = None) -> None:
        self.registry = registry
        self.runner = runner
        self.metrics = metrics if metrics is not None else ServiceMetrics(runner)
        # The registry's live table, read directly on the hot path (no copy, no descriptor call).
        self._agents = registry.agents
        #: operation -> its in-flight counter (a one-item list), resolved once
        self.in_flight = {op: self.metrics.in_flight_counter(op) for op in _OPERATIONS}
        #: GetTask answers remembered between an agent's due ``get`` calls
        self.polls = PollCache()

    def agent(self, task_type: str, version: int) -> AgentBase:
        """The agent for a category; AgentNotFoundError (NOT_FOUND) when none serves it."""
        agent = self._agents.get((task_type, version))
        if agent is not None:
            return agent
        if not task_type:
            raise InvalidTaskError("the request names no task category (task_category or task_type)")
        return self.registry.get_agent(task_type, version)  # loads a discovered plugin, or NOT_FOUND

    def async_agent(self, request: Any, call: _Call) -> tuple[AsyncAgentBase, ResourceMeta]:
        """The async agent a Get/Delete/Metrics/Logs request is for, and its decoded resource_meta."""
        refuse_undecodable(request)
        category = request.task_category
        task_type = category.name
        if task_type:
            agent = self.agent(task_type, category.version)
        else:  # the deprecated task_type field, sent by older propellers
            task_type = request.task_type
            agent = self.agent(task_type, 0)
        if not isinstance(agent, AsyncAgentBase):
            raise _wrong_kind(agent)
        call.task_type = task_type
        resource_meta = request.resource_meta
        current_task.set(resource_meta)
        return agent, decode_meta(agent.metadata_type, resource_meta)

    def task_agent(
        self,
        message: agent_pb2.CreateTaskRequest | agent_pb2.CreateRequestHeader,
        inputs_pb: literals_pb2.LiteralMap | None,
        kind: type[_A],
        call: _Call,
    ) -> tuple[_A, dict[str, Any]]:
        """The agent of ``kind`` (async or sync) a create request is for, and the arguments of its create/do.

        The inputs must be the ones the template's interface declares; the call's log lines name the
        task execution from here on. The arguments are lazy flytekit models, converted on first read.
        """
        meta_pb = None
        if message.HasField("task_execution_metadata"):
            meta_pb = message.task_execution_metadata
            current_task.set(meta_pb)
        template = message.template
        task_type = template.type
        if not task_type and not message.HasField("template"):
            raise InvalidTaskError("the request carries no task template")
        agent = self.agent(task_type, template.task_type_version)
        if not isinstance(agent, kind):
            raise _wrong_kind(agent)
        call.task_type = task_type
        check_inputs(template, inputs_pb)
        return agent, task_arguments(template, message.output_prefix, inputs_pb, meta_pb)

    async def resource_to_proto(
        self,
        resource: Any,
        agent: AgentBase,
        outputs_interface: Mapping[str, Any] | None = None,
        into: agent_pb2.Resource | None = None,
        output_prefix: str | None = None,
    ) -> agent_pb2.Resource:
        """The wire form of an agent's Resource, written ``into`` a message when given.

        Outputs given as Python values are converted with flytekit's TypeEngine; those it
        stores as files go under ``output_prefix``.
        """
        pb = agent_pb2.Resource() if into is None else into
        values = _write_resource(resource, agent, pb)
        if values is not None:
            await _write_outputs(pb, agent, values, outputs_interface, output_prefix)
        return pb


async def _write_outputs(
    pb: agent_pb2.Resource,
    agent: AgentBase,
    values: Mapping[str, Any],
    interface: Mapping[str, Any] | None,
    output_prefix: str | None,
) -> None:
    """Convert Python-valued outputs into ``pb``; a job whose outputs cannot be stored fails readably."""
    try:
        pb.outputs.CopyFrom(await outputs_to_proto(values, interface, output_prefix))
    except TaskFailedError as exc:
        pb.Clear()
        _write_resource(_failed_resource(exc), agent, pb)


def _write_resource(resource: Any, agent: AgentBase, pb: agent_pb2.Resource) -> Mapping[str, Any] | None:
    """Write an agent's Resource into ``pb``; return its outputs when they are Python values still to convert."""
    if not isinstance(resource, Resource):
        raise TypeError(f"agent {agent.name!r} returned {type(resource).__name__}, not a Resource")
    pb.phase = resource.phase
    if resource.message:
        pb.message = resource.message
    if resource.log_links:
        pb.log_links.extend(
            link if isinstance(link, execution_pb2.TaskLog) else link.to_flyte_idl() for link in resource.log_links
        )
    outputs = resource.outputs
    values = None
    if outputs is not None:
        if isinstance(outputs, literals_pb2.LiteralMap):
            pb.outputs.CopyFrom(outputs)
        elif isinstance(outputs, LiteralMap):
            pb.outputs.CopyFrom(unconverted_proto(outputs) or outputs.to_flyte_idl())
        else:
            values = outputs
    if resource.custom_info:
        try:
            pb.custom_info.update(resource.custom_info)
        except (ValueError, TypeError):
            pb.custom_info.update(json.loads(json.dumps(resource.custom_info, default=str)))
    if resource.phase == _FAILED or resource.phase == _RETRYABLE_FAILED:
        _set_agent_error(pb, resource.phase)
    return values


def _set_agent_error(pb: agent_pb2.Resource, phase: int) -> None:
    """Tell propeller whether a failed job may be retried (agent_error.kind)."""
    if phase == _RETRYABLE_FAILED:
        pb.agent_error.code = "AgentJobRetryableFailure"
        pb.agent_error.kind = agent_pb2.AgentError.RECOVERABLE
    else:
        pb.agent_error.code = "AgentJobFailed"
        pb.agent_error.kind = agent_pb2.AgentError.NON_RECOVERABLE
    pb.agent_error.origin = execution_pb2.ExecutionError.USER


def _failed_resource(exc: TaskFailedError) -> Resource:
    """A job or user error raised by an agent, reported as the FAILED (or RETRYABLE_FAILED) phase."""
    phase = _RETRYABLE_FAILED if isinstance(exc, RetryableTaskFailedError) else _FAILED
    return Resource(phase=phase, message=str(exc))


def _wrong_kind(agent: AgentBase) -> UnsupportedOperationError:
    kind, rpc = ("a sync", "ExecuteTaskSync") if isinstance(agent, SyncAgentBase) else ("an async", "CreateTask")
    return UnsupportedOperationError(f"agent {agent.name!r} for {agent.task_category} is {kind} agent: use {rpc}")


def _encode_meta(meta: Any, agent: AgentBase) -> bytes:
    if isinstance(meta, bytes):
        return meta
    raise TypeError(f"agent {agent.name!r} create returned {type(meta).__name__}, not a ResourceMeta")


class _Call:
    """One RPC: in-flight gauge, latency, count by code, and its exception turned into a status.

    Used as ``with _Call(service, context, "get") as call:``; an exception leaving the block
    sets the RPC's code and details from the one table in ``_errors`` and is suppressed, so
    the handler returns nothing and gRPC sends the status. Tracebacks only go to the log.
    """

    __slots__ = ("context", "in_flight", "metrics", "operation", "start", "task_type")

    def __init__(self, service: AgentService, context: grpc.aio.ServicerContext, operation: str) -> None:
        self.metrics = service.metrics
        self.in_flight = in_flight = service.in_flight[operation]
        self.context = context
        self.operation = operation
        self.task_type = _UNKNOWN
        in_flight[0] += 1
        self.start = time.perf_counter()

    def __enter__(self) -> _Call:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        elapsed = time.perf_counter() - self.start
        self.in_flight[0] -= 1
        if exc is None:
            self.metrics.observe(self.task_type, self.operation, _OK, elapsed)
            return False
        if _ended_from_outside(exc, self.operation):
            self.metrics.observe(self.task_type, self.operation, grpc.StatusCode.CANCELLED.name, elapsed)
            return False
        # Anything else an agent raised, SystemExit and KeyboardInterrupt included, fails this call only.
        code, details = status_for(exc)
        if code is _INTERNAL:
            logger.error("%s for %s failed", self.operation, self.task_type, exc_info=exc)
        elif code in _CLIENT_CODES:
            allowed, held_back = _client_errors.allow()
            if allowed:
                logger.warning(
                    "%s for %s: %s %s%s",
                    self.operation,
                    self.task_type,
                    code.name,
                    details,
                    f" ({held_back} more such lines held back)" if held_back else "",
                )
        else:
            logger.warning("%s for %s: %s %s", self.operation, self.task_type, code.name, details, exc_info=exc)
        self.context.set_code(code)
        self.context.set_details(details)
        self.metrics.observe(self.task_type, self.operation, code.name, elapsed)
        return True


#: Operations served by an async generator, into which closing it throws GeneratorExit.
_STREAMING = frozenset({"get_logs"})

#: Client errors logged per 10 s at most, whatever a misbehaving client sends.
_client_errors = LogLimiter(rate=20, period=10.0)


def _ended_from_outside(exc: BaseException, operation: str) -> bool:
    """Whether ``exc`` ends the call from outside (the client cancelling, the server stopping, a stream
    being closed), not from the agent."""
    if isinstance(exc, asyncio.CancelledError):
        return _cancelled()
    return isinstance(exc, GeneratorExit) and operation in _STREAMING


def _cancelled() -> bool:
    """Whether the running task was cancelled (not merely handed a CancelledError an agent raised)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+; before it, trust the exception
    return task is None or cancelling is None or cancelling() > 0


class AsyncAgentServicer(agent_pb2_grpc.AsyncAgentServiceServicer):
    """flyteidl.service.AsyncAgentService: create, poll and delete jobs of async agents.

    Register it with ``add_to_server``, which decodes requests so that a body that is not
    valid protobuf is refused as INVALID_ARGUMENT (see ``_handlers``).
    """

    def __init__(self, service: AgentService) -> None:
        self.service = service

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve AsyncAgentService's five methods on ``server``."""
        handlers = {
            **{
                name: grpc.unary_unary_rpc_method_handler(
                    getattr(self, name),
                    request_deserializer=decoder(getattr(agent_pb2, f"{name}Request")),
                    response_serializer=getattr(agent_pb2, f"{name}Response").SerializeToString,
                )
                for name in ("CreateTask", "GetTask", "DeleteTask", "GetTaskMetrics")
            },
            "GetTaskLogs": grpc.unary_stream_rpc_method_handler(
                self.GetTaskLogs,
                request_deserializer=decoder(agent_pb2.GetTaskLogsRequest),
                response_serializer=agent_pb2.GetTaskLogsResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_ASYNC_SERVICE, handlers),))

    async def CreateTask(
        self, request: agent_pb2.CreateTaskRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.CreateTaskResponse | None:
        service = self.service
        with _Call(service, context, "create") as call:
            refuse_undecodable(request)
            inputs = request.inputs if request.HasField("inputs") else None
            agent, kwargs = service.task_agent(request, inputs, AsyncAgentBase, call)
            meta = await service.runner.call(agent, "create", **kwargs)
            resource_meta = meta.encode() if isinstance(meta, ResourceMeta) else _encode_meta(meta, agent)
            return agent_pb2.CreateTaskResponse(resource_meta=resource_meta)
        return None

    async def GetTask(
        self, request: agent_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetTaskResponse | None:
        service = self.service
        with _Call(service, context, "get") as call:
            agent, meta = service.async_agent(request, call)
            claim = None
            if agent.poll_policy is not None:  # between due calls, answer with the last one (see _polls)
                claim, answer = service.polls.check(agent, meta, request.resource_meta)
                if answer is not None:
                    return answer
            try:
                resource = await service.runner.call(agent, "get", resource_meta=meta)
            except TaskFailedError as exc:
                resource = _failed_resource(exc)
            response = agent_pb2.GetTaskResponse()
            values = _write_resource(resource, agent, response.resource)
            if values is not None:
                await _write_outputs(response.resource, agent, values, None, request.output_prefix)
            return response if claim is None else service.polls.keep(claim, response)
        return None

    async def DeleteTask(
        self, request: agent_pb2.DeleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.DeleteTaskResponse | None:
        service = self.service
        with _Call(service, context, "delete") as call:
            agent, meta = service.async_agent(request, call)
            service.polls.forget(agent, request.resource_meta)
            await service.runner.call(agent, "delete", resource_meta=meta)
            logger.info("deleted %s job", call.task_type)
            return agent_pb2.DeleteTaskResponse()
        return None

    async def GetTaskMetrics(
        self, request: agent_pb2.GetTaskMetricsRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetTaskMetricsResponse | None:
        service = self.service
        with _Call(service, context, "get_metrics") as call:
            agent, meta = service.async_agent(request, call)
            if not agent.implements("get_metrics"):
                raise UnimplementedError(f"agent {agent.name!r} does not report task metrics")
            result = await service.runner.call(
                agent,
                "get_metrics",
                resource_meta=meta,
                queries=list(request.queries),
                start_time=request.start_time,
                end_time=request.end_time,
                step=request.step,
            )
            if not isinstance(result, agent_pb2.GetTaskMetricsResponse):
                raise TypeError(f"agent {agent.name!r} get_metrics returned {type(result).__name__}")
            return result
        return None

    async def GetTaskLogs(
        self, request: agent_pb2.GetTaskLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.GetTaskLogsResponse]:
        service = self.service
        with _Call(service, context, "get_logs") as call:
            agent, meta = service.async_agent(request, call)
            if not agent.implements("get_logs"):
                raise UnimplementedError(f"agent {agent.name!r} does not serve task logs")
            result = await service.runner.call(
                agent, "get_logs", resource_meta=meta, lines=request.lines, token=request.token
            )
            header_sent = False
            async for msg in _log_messages(result, service.runner):
                if not header_sent:
                    header_sent = True
                    if msg.WhichOneof("part") != "header":
                        yield agent_pb2.GetTaskLogsResponse(
                            header=agent_pb2.GetTaskLogsResponseHeader(token=request.token)
                        )
                yield msg
            if not header_sent:
                yield agent_pb2.GetTaskLogsResponse(header=agent_pb2.GetTaskLogsResponseHeader(token=request.token))


async def _log_messages(result: Any, runner: AgentRunner) -> AsyncIterator[agent_pb2.GetTaskLogsResponse]:
    """Whatever an agent's get_logs returned, as GetTaskLogsResponse messages."""
    if result is None:
        return
    if isinstance(result, (str, agent_pb2.GetTaskLogsResponse, agent_pb2.GetTaskLogsResponseBody)):
        yield _log_message(result)
        return
    if isinstance(result, (list, tuple)):
        if result and all(isinstance(item, str) for item in result):
            yield _log_message(list(result))
        else:
            for item in result:
                yield _log_message(item)
        return
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield _log_message(item)
        return
    if inspect.isgenerator(result) or hasattr(result, "__next__"):
        sentinel = object()
        while True:  # a plain generator may block: advance it on the runner's threads
            item = await runner.run(next, result, sentinel)
            if item is sentinel:
                return
            yield _log_message(item)
    raise TypeError(f"get_logs returned {type(result).__name__}: return log lines or GetTaskLogsResponse messages")


def _log_message(item: Any) -> agent_pb2.GetTaskLogsResponse:
    if isinstance(item, agent_pb2.GetTaskLogsResponse):
        return item
    if isinstance(item, agent_pb2.GetTaskLogsResponseBody):
        return agent_pb2.GetTaskLogsResponse(body=item)
    if isinstance(item, str):
        return agent_pb2.GetTaskLogsResponse(body=agent_pb2.GetTaskLogsResponseBody(results=[item]))
    if isinstance(item, Iterable):
        lines = list(item)
        if all(isinstance(line, str) for line in lines):
            return agent_pb2.GetTaskLogsResponse(body=agent_pb2.GetTaskLogsResponseBody(results=lines))
    raise TypeError(f"get_logs produced {type(item).__name__}: yield log lines or GetTaskLogsResponse messages")


class SyncAgentServicer(agent_pb2_grpc.SyncAgentServiceServicer):
    """flyteidl.service.SyncAgentService: ExecuteTaskSync for sync agents.

    Register it with ``add_to_server``: the proto declares ExecuteTaskSync a bidirectional stream,
    but it answers exactly one message, so it is served as stream-unary. The two look the same on
    the wire (HTTP/2 carries no cardinality), and gRPC then sends the answer and the status
    together, in one batch instead of two.
    """

    def __init__(self, service: AgentService) -> None:
        self.service = service

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve ExecuteTaskSync on ``server``."""
        handler = grpc.stream_unary_rpc_method_handler(
            self.ExecuteTaskSync,
            request_deserializer=decoder(agent_pb2.ExecuteTaskSyncRequest),
            response_serializer=agent_pb2.ExecuteTaskSyncResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_SYNC_SERVICE, {"ExecuteTaskSync": handler}),)
        )

    async def ExecuteTaskSync(
        self,
        request_iterator: AsyncIterator[agent_pb2.ExecuteTaskSyncRequest],
        context: grpc.aio.ServicerContext,
    ) -> agent_pb2.ExecuteTaskSyncResponse | None:
        # Propeller sends the header, then the inputs, closes its side and reads exactly one answer.
        # context.read rather than the request iterator: fewer layers per call.
        service = self.service
        with _Call(service, context, "do") as call:
            try:
                header, inputs_pb = await _read_sync_request(context)
            except InvalidTaskError:
                await _drain(context)
                raise
            agent, kwargs = service.task_agent(header, inputs_pb, SyncAgentBase, call)
            try:
                resource = await service.runner.call(agent, "do", **kwargs)
            except TaskFailedError as exc:
                resource = _failed_resource(exc)
            response = agent_pb2.ExecuteTaskSyncResponse()
            outputs_interface = header.template.interface.outputs.variables
            await service.resource_to_proto(
                resource, agent, outputs_interface, into=response.header.resource, output_prefix=header.output_prefix
            )
            return response
        return None


async def _read_sync_request(
    context: grpc.aio.ServicerContext,
) -> tuple[agent_pb2.CreateRequestHeader, literals_pb2.LiteralMap | None]:
    """The header and the inputs (None when the client sent none) of an ExecuteTaskSync call."""
    first = await context.read()
    refuse_undecodable(first)
    if first is grpc.aio.EOF or first.WhichOneof("part") != "header":
        raise InvalidTaskError("the first ExecuteTaskSync message must carry the header")
    second = await context.read()
    inputs_pb = None
    if second is not grpc.aio.EOF:
        refuse_undecodable(second)
        part = second.WhichOneof("part")
        if part == "header":
            raise InvalidTaskError("ExecuteTaskSync got a second header where the inputs belong")
        inputs_pb = second.inputs if part == "inputs" else None
    return first.header, inputs_pb


async def _drain(context: grpc.aio.ServicerContext, messages: int = 4, seconds: float = 1.0) -> None:
    """Read, for a bounded while, what a client is still sending before it is told its call failed.

    Answering while the client still writes makes some clients (grpc's Python one) report their
    own INTERNAL instead of the status the server sent.
    """

    async def read_to_end() -> None:
        for _ in range(messages):
            if await context.read() is grpc.aio.EOF:
                return

    try:
        await asyncio.wait_for(read_to_end(), seconds)
    except Exception:  # best effort: the call fails with its own error whatever happens here
        return


class AgentMetadataServicer(agent_pb2_grpc.AgentMetadataServiceServicer):
    """flyteidl.service.AgentMetadataService: which task categories this service serves."""

    def __init__(self, service: AgentService) -> None:
        self.service = service

    async def ListAgents(
        self, request: agent_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ListAgentsResponse | None:
        with _Call(self.service, context, "list_agents"):
            refuse_undecodable(request)
            return agent_pb2.ListAgentsResponse(agents=self.service.registry.list_agents())
        return None

    async def GetAgent(
        self, request: agent_pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.GetAgentResponse | None:
        with _Call(self.service, context, "get_agent"):
            refuse_undecodable(request)
            return agent_pb2.GetAgentResponse(agent=self.service.registry.get_agent_metadata(request.name))
        return None
