"""AgentClient: talk to a running agent service the way FlytePropeller does."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from flyteidl.admin import agent_pb2
from flyteidl.core import literals_pb2, tasks_pb2
from flyteidl.service import agent_pb2_grpc
from flyteidl2.connector import connector_pb2, service_pb2_grpc
from flyteidl2.core import security_pb2
from flytekit.models.literals import LiteralMap
from google.protobuf import json_format

from ._exceptions import (
    AgentError,
    AgentNotFoundError,
    AgentTimeoutError,
    ExternalServiceError,
    InvalidTaskError,
    UnsupportedOperationError,
)
from ._models import Resource, TaskCategory

__all__ = ["AgentClient", "RemoteBackend", "RemoteJob", "channel_credentials", "error_from_rpc"]

#: Environment variable with a PEM CA file: RemoteBackend then connects over TLS.
TLS_CA_ENV = "FLYTEAGENTS_TLS_CA"
#: Environment variable choosing the protocol RemoteBackend speaks: v1 (FlytePropeller's agent
#: services, the default) or v2 (Flyte 2's connector services).
PROTOCOL_ENV = "FLYTEAGENTS_PROTOCOL"

_ERRORS: dict[grpc.StatusCode, type[AgentError]] = {
    grpc.StatusCode.NOT_FOUND: AgentNotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidTaskError,
    grpc.StatusCode.FAILED_PRECONDITION: UnsupportedOperationError,
    grpc.StatusCode.UNIMPLEMENTED: UnsupportedOperationError,
    grpc.StatusCode.DEADLINE_EXCEEDED: AgentTimeoutError,
}


def error_from_rpc(exc: grpc.aio.AioRpcError, endpoint: str) -> AgentError:
    """The flyteagents exception a service's status code stands for."""
    message = f"agent service {endpoint}: {exc.code().name}: {exc.details()}"
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return ExternalServiceError(message, retryable=True)
    return _ERRORS.get(exc.code(), AgentError)(message)


def channel_credentials(
    ca: bytes | None = None, cert: bytes | None = None, key: bytes | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials trusting ``ca`` (the system roots when None); ``cert``/``key`` for mutual TLS."""
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


class AgentClient:
    """An async client of an agent service, speaking flyteidl's agent protocol as propeller does.

    Example:
        >>> async with AgentClient("127.0.0.1:8000") as client:
        ...     meta = await client.create_task(template, "s3://bucket/out", inputs)
        ...     resource = await client.get_task(TaskCategory(template.type), meta)

    Args:
        endpoint: ``host:port`` of the service.
        credentials: TLS credentials (``channel_credentials``); plaintext when None.
        timeout: deadline of each call, in seconds.
        options: extra grpc channel options.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        if credentials is not None:
            self.channel = grpc.aio.secure_channel(endpoint, credentials, options)
        else:
            self.channel = grpc.aio.insecure_channel(endpoint, options)
        self.async_stub = agent_pb2_grpc.AsyncAgentServiceStub(self.channel)
        self.sync_stub = agent_pb2_grpc.SyncAgentServiceStub(self.channel)
        self.metadata_stub = agent_pb2_grpc.AgentMetadataServiceStub(self.channel)

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def create_task(
        self,
        template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
    ) -> bytes:
        """CreateTask; returns the job's resource_meta."""
        request = agent_pb2.CreateTaskRequest(
            template=template,
            output_prefix=output_prefix,
            inputs=inputs,
            task_execution_metadata=task_execution_metadata,
        )
        response = await self.async_stub.CreateTask(request, timeout=self.timeout)
        return response.resource_meta  # type: ignore[no-any-return]

    async def get_task(self, category: TaskCategory, resource_meta: bytes) -> agent_pb2.Resource:
        """GetTask, naming the agent by task_category and the deprecated task_type, as propeller does."""
        request = agent_pb2.GetTaskRequest(
            task_type=category.name, task_category=_category(category), resource_meta=resource_meta
        )
        response = await self.async_stub.GetTask(request, timeout=self.timeout)
        return response.resource

    async def delete_task(self, category: TaskCategory, resource_meta: bytes) -> None:
        """DeleteTask."""
        request = agent_pb2.DeleteTaskRequest(
            task_type=category.name, task_category=_category(category), resource_meta=resource_meta
        )
        await self.async_stub.DeleteTask(request, timeout=self.timeout)

    async def get_task_metrics(
        self, category: TaskCategory, resource_meta: bytes, queries: list[str] | None = None
    ) -> agent_pb2.GetTaskMetricsResponse:
        """GetTaskMetrics."""
        request = agent_pb2.GetTaskMetricsRequest(
            task_type=category.name,
            task_category=_category(category),
            resource_meta=resource_meta,
            queries=queries or [],
        )
        return await self.async_stub.GetTaskMetrics(request, timeout=self.timeout)

    async def get_task_logs(
        self, category: TaskCategory, resource_meta: bytes, lines: int = 0, token: str = ""
    ) -> AsyncIterator[agent_pb2.GetTaskLogsResponse]:
        """GetTaskLogs: the header message, then the bodies, as the service streams them."""
        request = agent_pb2.GetTaskLogsRequest(
            task_type=category.name,
            task_category=_category(category),
            resource_meta=resource_meta,
            lines=lines,
            token=token,
        )
        async for message in self.async_stub.GetTaskLogs(request, timeout=self.timeout):
            yield message

    async def execute_task_sync(
        self,
        template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        task_execution_metadata: agent_pb2.TaskExecutionMetadata | None = None,
    ) -> agent_pb2.Resource:
        """ExecuteTaskSync as propeller drives it: header, inputs, close, read exactly one answer."""
        call = self.sync_stub.ExecuteTaskSync(timeout=self.timeout)
        header = agent_pb2.CreateRequestHeader(
            template=template, output_prefix=output_prefix, task_execution_metadata=task_execution_metadata
        )
        await call.write(agent_pb2.ExecuteTaskSyncRequest(header=header))
        await call.write(agent_pb2.ExecuteTaskSyncRequest(inputs=inputs or literals_pb2.LiteralMap()))
        await call.done_writing()
        response = await call.read()
        if response is grpc.aio.EOF:
            await call  # raises the call's error status, if any
            raise AgentError(f"agent service {self.endpoint} closed ExecuteTaskSync without an answer")
        return response.header.resource

    async def list_agents(self) -> list[agent_pb2.Agent]:
        """ListAgents."""
        response = await self.metadata_stub.ListAgents(agent_pb2.ListAgentsRequest(), timeout=self.timeout)
        return list(response.agents)

    async def list_connectors(self) -> list[agent_pb2.Agent]:
        """Flyte 2's ListConnectors, each connector as an (async) ``Agent`` message."""
        stub = service_pb2_grpc.ConnectorMetadataServiceStub(self.channel)
        response = await stub.ListConnectors(connector_pb2.ListConnectorsRequest(), timeout=self.timeout)
        return [
            agent_pb2.Agent(
                name=c.name,
                supported_task_categories=[
                    agent_pb2.TaskCategory(name=t.name, version=t.version) for t in c.supported_task_categories
                ],
            )
            for c in response.connectors
        ]

    async def get_agent(self, name: str) -> agent_pb2.Agent:
        """GetAgent."""
        response = await self.metadata_stub.GetAgent(agent_pb2.GetAgentRequest(name=name), timeout=self.timeout)
        return response.agent


def _category(category: TaskCategory) -> agent_pb2.TaskCategory:
    return agent_pb2.TaskCategory(name=category.name, version=category.version)


def resource_from_proto(pb: agent_pb2.Resource) -> Resource:
    """A Resource from its wire form (outputs as a flytekit LiteralMap)."""
    return Resource(
        phase=pb.phase,
        message=pb.message or None,
        log_links=list(pb.log_links) or None,
        outputs=LiteralMap.from_flyte_idl(pb.outputs) if pb.HasField("outputs") else None,
        custom_info=json_format.MessageToDict(pb.custom_info) if pb.HasField("custom_info") else None,
    )


@dataclass(frozen=True)
class RemoteJob:
    """A job created through a service: what is needed to poll and delete it."""

    category: TaskCategory
    resource_meta: bytes
    #: Flyte 2 only: the Connection each Get and Delete carries again (it holds secret values).
    connection: Any = field(default=None, repr=False)


class RemoteBackend:
    """Runs local task executions through a running agent service (``FLYTEAGENTS_ENDPOINT``).

    Each call opens a short-lived channel, so the backend works from any event loop.
    Service errors come back as flyteagents exceptions (NOT_FOUND -> AgentNotFoundError, ...).
    TLS is used when ``FLYTEAGENTS_TLS_CA`` names a PEM CA file.

    With ``protocol="v2"`` (or ``FLYTEAGENTS_PROTOCOL=v2``) it calls the service as Flyte 2's
    backend does: flyteidl2's AsyncConnectorService, with a Connection built from the template's
    ``custom["secrets"]`` (connection key -> name of an environment variable holding the value,
    as flyte-sdk's local runs read them) and ``custom["configs"]``. Sync agents have no Flyte 2 call.
    """

    def __init__(
        self, endpoint: str, *, credentials: grpc.ChannelCredentials | None = None, protocol: str | None = None
    ) -> None:
        self.endpoint = endpoint
        if credentials is None and os.environ.get(TLS_CA_ENV):
            with open(os.environ[TLS_CA_ENV], "rb") as f:
                credentials = channel_credentials(f.read())
        self.credentials = credentials
        self.protocol = (protocol or os.environ.get(PROTOCOL_ENV) or "v1").strip().lower()
        if self.protocol not in ("v1", "v2"):
            raise InvalidTaskError(f"{PROTOCOL_ENV} must be v1 or v2, got {self.protocol!r}")

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[AgentClient]:
        """A client on a fresh channel; the service's errors come out as flyteagents exceptions."""
        async with AgentClient(self.endpoint, credentials=self.credentials) as client:
            try:
                yield client
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc, self.endpoint) from None

    async def create(self, template: Any, output_prefix: str, inputs: Any, meta: Any) -> RemoteJob:
        """CreateTask; returns the job handle."""
        category = TaskCategory(template.type, template.task_type_version)
        if self.protocol == "v2":
            connection = _connection(template)
            request = agent_pb2.CreateTaskRequest(
                template=template.to_flyte_idl(),
                output_prefix=output_prefix,
                inputs=_proto(inputs),
                task_execution_metadata=_proto(meta),
            )
            # flyteidl2's CreateTaskRequest has the same field numbers, plus the Connection
            v2 = connector_pb2.CreateTaskRequest.FromString(request.SerializeToString())
            v2.connection.CopyFrom(connection)
            async with self._client() as client:
                response = await _connector(client).CreateTask(v2, timeout=client.timeout)
            return RemoteJob(category, response.resource_meta, connection)
        async with self._client() as client:
            resource_meta = await client.create_task(
                template.to_flyte_idl(), output_prefix, _proto(inputs), _proto(meta)
            )
        return RemoteJob(category, resource_meta)

    async def get(self, handle: RemoteJob) -> Resource:
        """GetTask."""
        async with self._client() as client:
            if self.protocol == "v2":
                request = connector_pb2.GetTaskRequest(
                    task_category=_category_v2(handle.category),
                    resource_meta=handle.resource_meta,
                    connection=handle.connection,
                )
                response = await _connector(client).GetTask(request, timeout=client.timeout)
                return resource_from_proto(agent_pb2.Resource.FromString(response.resource.SerializeToString()))
            return resource_from_proto(await client.get_task(handle.category, handle.resource_meta))

    async def delete(self, handle: RemoteJob) -> None:
        """DeleteTask."""
        async with self._client() as client:
            if self.protocol == "v2":
                request = connector_pb2.DeleteTaskRequest(
                    task_category=_category_v2(handle.category),
                    resource_meta=handle.resource_meta,
                    connection=handle.connection,
                )
                await _connector(client).DeleteTask(request, timeout=client.timeout)
                return
            await client.delete_task(handle.category, handle.resource_meta)

    async def do(self, template: Any, output_prefix: str, inputs: Any, meta: Any) -> Resource:
        """ExecuteTaskSync."""
        if self.protocol == "v2":
            raise UnsupportedOperationError(
                f"{template.type!r} runs on a sync agent, and Flyte 2's connector protocol has no sync call: "
                f"unset {PROTOCOL_ENV} (or set it to v1) to run it through the service"
            )
        async with self._client() as client:
            pb = await client.execute_task_sync(template.to_flyte_idl(), output_prefix, _proto(inputs), _proto(meta))
        return resource_from_proto(pb)


def _proto(model: Any) -> Any:
    """A flytekit model's proto (protos and None pass through)."""
    return model.to_flyte_idl() if model is not None and hasattr(model, "to_flyte_idl") else model


def _connector(client: AgentClient) -> Any:
    return service_pb2_grpc.AsyncConnectorServiceStub(client.channel)


def _category_v2(category: TaskCategory) -> connector_pb2.TaskCategory:
    return connector_pb2.TaskCategory(name=category.name, version=category.version)


def _connection(template: Any) -> security_pb2.Connection:
    """The Connection Flyte 2's backend would send for ``template``: its custom secrets resolved, and its configs.

    ``custom["secrets"]`` maps a connection key to a secret's name; here the name is an environment
    variable (as in flyte-sdk's local runs), where the backend asks its secret store.
    """
    custom = template.custom or {}
    secrets: dict[str, str] = {}
    for key, name in (custom.get("secrets") or {}).items():
        value = os.environ.get(str(name))
        if not value:
            raise InvalidTaskError(
                f"the task's connection secret {key!r} names {name!r}: set that environment variable for a local run"
            )
        secrets[str(key)] = value
    configs = {str(k): str(v) for k, v in (custom.get("configs") or {}).items()}
    return security_pb2.Connection(task_type=str(custom.get("task_type", "")), secrets=secrets, configs=configs)
