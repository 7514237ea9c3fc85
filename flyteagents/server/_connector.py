"""Flyte 2's connector protocol (flyteidl2.connector), answered by the agents and code path of Flyte 1's.

flyteidl2's connector messages keep flyteidl's field numbers and types for every field the two
share (``tests/test_connector_wire.py`` checks it against both installed packages): a Flyte 2
``CreateTaskRequest`` reads as flyteidl's ``CreateTaskRequest``, its ``Inputs`` (named literals) as a
``LiteralMap``, its template and execution metadata as flyteidl's, and flyteidl's answers read as
flyteidl2's once the Flyte-1-only ``agent_error`` is dropped. So each Flyte 2 request is read into
flyteidl's message, its ``Connection`` (the one field flyteidl lacks) is read with flyteidl2's, and
the Flyte 1 servicer answers: finding the agent, decoding resource_meta, calling the agent and
mapping failures to status codes is one code path for both protocols.

The Connection's secrets reach agents through :func:`flyteagents.get_secret` (a context variable
set for the length of the call); they are not stored, and are masked in error details and logs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from flyteidl.admin import agent_pb2
from flyteidl2.connector import connector_pb2, service_pb2

from .._agent import AgentBase
from .._exceptions import AgentNotFoundError, UnsupportedOperationError
from .._secrets import current_connection
from ._handlers import UndecodableRequest, add_guarded_servicer, decoder
from ._service import AgentService, AsyncAgentServicer, _Call

__all__ = ["CONNECTOR_SERVICE_NAMES", "AsyncConnectorServicer", "ConnectorMetadataServicer", "add_connector_services"]

_ASYNC_SERVICE = service_pb2.DESCRIPTOR.services_by_name["AsyncConnectorService"].full_name
_METADATA_SERVICE = service_pb2.DESCRIPTOR.services_by_name["ConnectorMetadataService"].full_name
#: The gRPC services of Flyte 2's connector protocol.
CONNECTOR_SERVICE_NAMES: tuple[str, ...] = (_ASYNC_SERVICE, _METADATA_SERVICE)
PROTOCOL = "v2"  # the metrics' protocol label of these calls
_REDACTED = "[redacted]"
# Secret values shorter than this are not looked for in resource_meta: they would match by chance.
_MIN_SECRET = 8

logger = logging.getLogger("flyteagents.server")

Request = tuple[Any, Any]  # (flyteidl's twin of the request, its Connection or None)


def connector_service(service: AgentService) -> AgentService:
    """An AgentService sharing ``service``'s registry and runner, counting calls as v2."""
    twin = AgentService(service.registry, service.runner, service.metrics.for_protocol(PROTOCOL))
    for operation in ("list_connectors", "get_connector"):
        twin.in_flight[operation] = twin.metrics.in_flight_counter(operation)
    return twin


def _reader(v1_type: Any, v2_type: Any) -> Callable[[bytes], Request]:
    """Read a request's bytes as flyteidl's twin message, plus its Connection when it sends one.

    Bytes that are not a valid message read as an UndecodableRequest, which the servicer refuses.
    """
    v1_parse, v2_parse = decoder(v1_type), v2_type.FromString
    name = v2_type.DESCRIPTOR.full_name

    def read(data: bytes) -> Request:
        request = v1_parse(data)
        if request.__class__ is UndecodableRequest:
            return UndecodableRequest(name, request.error), None
        try:
            connection = v2_parse(data).connection
        except Exception as exc:  # valid for flyteidl, not for flyteidl2 (its Connection field is malformed)
            return UndecodableRequest(name, exc), None
        return request, connection if connection.secrets or connection.configs else None

    return read


def _write_resource_response(response: agent_pb2.GetTaskResponse) -> bytes:
    """flyteidl's GetTaskResponse as flyteidl2's: the same bytes without agent_error (the phase says it all)."""
    resource = response.resource
    if resource.HasField("agent_error"):
        resource.ClearField("agent_error")
    return response.SerializeToString()  # type: ignore[no-any-return]


class AsyncConnectorServicer:
    """flyteidl2.connector.AsyncConnectorService: create, poll and delete jobs of async agents (and sensors)."""

    def __init__(self, service: AgentService) -> None:
        self.service = service
        self._v1 = AsyncAgentServicer(service)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve AsyncConnectorService's five methods on ``server``."""
        handlers = {
            "CreateTask": grpc.unary_unary_rpc_method_handler(
                self.CreateTask,
                request_deserializer=_reader(agent_pb2.CreateTaskRequest, connector_pb2.CreateTaskRequest),
                response_serializer=agent_pb2.CreateTaskResponse.SerializeToString,  # the same bytes in both
            ),
            "GetTask": grpc.unary_unary_rpc_method_handler(
                self.GetTask,
                request_deserializer=_reader(agent_pb2.GetTaskRequest, connector_pb2.GetTaskRequest),
                response_serializer=_write_resource_response,
            ),
            "DeleteTask": grpc.unary_unary_rpc_method_handler(
                self.DeleteTask,
                request_deserializer=_reader(agent_pb2.DeleteTaskRequest, connector_pb2.DeleteTaskRequest),
                response_serializer=agent_pb2.DeleteTaskResponse.SerializeToString,
            ),
            "GetTaskMetrics": grpc.unary_unary_rpc_method_handler(
                self._v1.GetTaskMetrics,  # no Connection in this request
                request_deserializer=decoder(agent_pb2.GetTaskMetricsRequest),
                response_serializer=agent_pb2.GetTaskMetricsResponse.SerializeToString,
            ),
            "GetTaskLogs": grpc.unary_stream_rpc_method_handler(
                self._v1.GetTaskLogs,  # no Connection in this request
                request_deserializer=decoder(agent_pb2.GetTaskLogsRequest),
                response_serializer=agent_pb2.GetTaskLogsResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_ASYNC_SERVICE, handlers),))

    async def CreateTask(
        self, request: Request, context: grpc.aio.ServicerContext
    ) -> agent_pb2.CreateTaskResponse | None:
        """Start a job; answers its resource_meta."""
        v1_request, connection = request
        if v1_request.__class__ is UndecodableRequest:
            return await self._v1.CreateTask(v1_request, context)  # refused there, as for Flyte 1
        template = v1_request.template
        agent = self.service._agents.get((template.type, template.task_type_version))
        if agent is not None and agent.is_sync:
            _refuse_sync(self.service, context, agent)
            return None
        if connection is None:
            return await self._v1.CreateTask(v1_request, context)
        answer = await _with_connection(connection, context, self._v1.CreateTask(v1_request, context))
        if answer is not None and _carries_secret(answer.resource_meta, connection.secrets):
            # The agent put a secret of this call into its resource_meta, which the backend stores.
            logger.error("%s create returned a resource_meta holding a Connection secret: refused", template.type)
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details(f"the agent for {template.type!r} put a secret into its resource_meta; not sent")
            return None
        return answer

    async def GetTask(self, request: Request, context: grpc.aio.ServicerContext) -> agent_pb2.GetTaskResponse | None:
        """The job's phase, outputs and links."""
        v1_request, connection = request
        if connection is None:
            return await self._v1.GetTask(v1_request, context)
        return await _with_connection(connection, context, self._v1.GetTask(v1_request, context))

    async def DeleteTask(
        self, request: Request, context: grpc.aio.ServicerContext
    ) -> agent_pb2.DeleteTaskResponse | None:
        """Cancel the job."""
        v1_request, connection = request
        if connection is None:
            return await self._v1.DeleteTask(v1_request, context)
        return await _with_connection(connection, context, self._v1.DeleteTask(v1_request, context))


async def _with_connection(connection: Any, context: grpc.aio.ServicerContext, call: Any) -> Any:
    """Await ``call`` with the request's Connection visible to ``get_secret``; mask its secrets in the error details."""
    token = current_connection.set(connection)
    try:
        return await call
    finally:
        current_connection.reset(token)
        details = context.details()
        if details:
            context.set_details(redact(details, connection.secrets))


def _carries_secret(data: bytes, secrets: Mapping[str, str]) -> bool:
    """Whether ``data`` holds one of the secret values, as is or JSON-escaped."""
    for value in secrets.values():
        if len(value) >= _MIN_SECRET and (value.encode() in data or json.dumps(value)[1:-1].encode() in data):
            return True
    return False


def redact(text: Any, secrets: Mapping[str, str]) -> Any:
    """``text`` with every secret value in it replaced by a marker."""
    if isinstance(text, bytes):
        return redact(text.decode("utf-8", "replace"), secrets).encode()
    for value in secrets.values():
        if value and value in text:
            text = text.replace(value, _REDACTED)
    return text


def _refuse_sync(service: AgentService, context: grpc.aio.ServicerContext, agent: AgentBase) -> None:
    with _Call(service, context, "create") as call:
        call.task_type = agent.task_category.name
        raise UnsupportedOperationError(
            f"agent {agent.name!r} for {agent.task_category} is a sync agent, and Flyte 2's connector protocol "
            "has no sync call: serve it to FlytePropeller 1.x (ExecuteTaskSync)"
        )


class ConnectorMetadataServicer:
    """flyteidl2.connector.ConnectorMetadataService: which task categories this service runs for Flyte 2.

    Sync agents are left out: Flyte 2 has no way to call them.
    """

    def __init__(self, service: AgentService) -> None:
        self.service = service

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve GetConnector and ListConnectors on ``server``."""
        add_guarded_servicer(server, self, service_pb2.DESCRIPTOR.services_by_name["ConnectorMetadataService"])

    def _connectors(self) -> list[connector_pb2.Connector]:
        return [
            connector_pb2.Connector(
                name=agent.name,
                supported_task_categories=[
                    connector_pb2.TaskCategory(name=c.name, version=c.version) for c in agent.supported_task_categories
                ],
            )
            for agent in self.service.registry.list_agents()
            if not agent.is_sync
        ]

    async def ListConnectors(
        self, request: connector_pb2.ListConnectorsRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.ListConnectorsResponse | None:
        with _Call(self.service, context, "list_connectors"):
            return connector_pb2.ListConnectorsResponse(connectors=self._connectors())
        return None

    async def GetConnector(
        self, request: connector_pb2.GetConnectorRequest, context: grpc.aio.ServicerContext
    ) -> connector_pb2.GetConnectorResponse | None:
        with _Call(self.service, context, "get_connector"):
            for connector in self._connectors():
                if connector.name == request.name:
                    return connector_pb2.GetConnectorResponse(connector=connector)
            raise AgentNotFoundError(f"no connector named {request.name!r}")
        return None


def add_connector_services(server: grpc.aio.Server, service: AgentService) -> tuple[str, ...]:
    """Serve Flyte 2's connector protocol on ``server`` from ``service``'s agents; the services' names."""
    twin = connector_service(service)
    AsyncConnectorServicer(twin).add_to_server(server)
    ConnectorMetadataServicer(twin).add_to_server(server)
    return CONNECTOR_SERVICE_NAMES
