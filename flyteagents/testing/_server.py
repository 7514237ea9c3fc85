"""AgentServer: a real agent service on a free loopback port, for tests."""

from __future__ import annotations

from types import TracebackType

import grpc
from flyteidl.service import agent_pb2_grpc
from flyteidl2.connector import service_pb2_grpc
from grpc_health.v1 import health_pb2_grpc

from .._registry import AgentRegistry
from .._runner import AgentRunner
from ..server._app import PROTOCOLS, AgentServerHandle, build_server
from ..server._metrics import ServiceMetrics

__all__ = ["AgentServer"]


class AgentServer:
    """Serve a registry's agents over gRPC on ``127.0.0.1`` for the length of an ``async with``.

    Example:
        >>> registry = AgentRegistry()
        >>> registry.register(MyAgent())
        >>> async with AgentServer(registry) as server:
        ...     meta = await server.async_stub.CreateTask(request)

    Args:
        registry: the agents to serve; the process-wide default registry when None.
        sync_workers: size of the thread pool plain-function agent methods run on.
        server_credentials: serve TLS with these (``flyteagents.server.server_credentials``).
        channel_credentials: how the ready-made channel connects when serving TLS.
        channel_options: extra options of the ready-made channel (say, a TLS target name override).
        protocols: which protocols to serve: "v1" (stubs ``async_stub``, ``sync_stub``,
            ``metadata_stub``), "v2" (Flyte 2's ``connector_stub``, ``connector_metadata_stub``), or both.
    """

    def __init__(
        self,
        registry: AgentRegistry | None = None,
        *,
        sync_workers: int | None = None,
        server_credentials: grpc.ServerCredentials | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        channel_options: list[tuple[str, str]] | None = None,
        protocols: tuple[str, ...] = PROTOCOLS,
    ) -> None:
        self.registry = registry if registry is not None else AgentRegistry.default()
        self.runner = AgentRunner(sync_workers)
        self.metrics = ServiceMetrics(self.runner)
        self._server_credentials = server_credentials
        self._channel_credentials = channel_credentials
        self._channel_options = channel_options or []
        self.protocols = protocols
        self._handle: AgentServerHandle | None = None
        self._channel: grpc.aio.Channel | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of the running server."""
        return f"127.0.0.1:{self.port}"

    @property
    def server(self) -> grpc.aio.Server:
        """The running grpc.aio server."""
        if self._handle is None:
            raise RuntimeError("the AgentServer is not running; use it with `async with`")
        return self._handle.server

    @property
    def channel(self) -> grpc.aio.Channel:
        """A channel to the server, closed when the server stops."""
        if self._channel is None:
            raise RuntimeError("the AgentServer is not running; use it with `async with`")
        return self._channel

    async def __aenter__(self) -> AgentServer:
        self._handle = build_server(self.registry, runner=self.runner, metrics=self.metrics, protocols=self.protocols)
        if self._server_credentials is not None:
            self.port = self._handle.server.add_secure_port("127.0.0.1:0", self._server_credentials)
        else:
            self.port = self._handle.server.add_insecure_port("127.0.0.1:0")
        await self._handle.set_serving(True)
        await self._handle.server.start()
        if self._channel_credentials is not None:
            self._channel = grpc.aio.secure_channel(self.address, self._channel_credentials, self._channel_options)
        else:
            self._channel = grpc.aio.insecure_channel(self.address, self._channel_options)
        self.async_stub = agent_pb2_grpc.AsyncAgentServiceStub(self._channel)
        self.sync_stub = agent_pb2_grpc.SyncAgentServiceStub(self._channel)
        self.metadata_stub = agent_pb2_grpc.AgentMetadataServiceStub(self._channel)
        self.connector_stub = service_pb2_grpc.AsyncConnectorServiceStub(self._channel)
        self.connector_metadata_stub = service_pb2_grpc.ConnectorMetadataServiceStub(self._channel)
        self.health_stub = health_pb2_grpc.HealthStub(self._channel)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self, grace: float | None = None) -> None:
        """Close the channel and stop the server (idempotent)."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._handle is not None:
            await self._handle.server.stop(grace)
            self._handle = None
        self.runner.shutdown(wait=False)
