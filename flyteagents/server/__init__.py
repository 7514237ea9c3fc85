"""The agent service: grpc.aio servicers for FlytePropeller's agent protocol and Flyte 2's connector
protocol, and how to run them."""

from ._app import PROTOCOLS, SERVICE_NAMES, AgentServerHandle, ServeConfig, build_server, serve, server_credentials
from ._connector import CONNECTOR_SERVICE_NAMES, AsyncConnectorServicer, ConnectorMetadataServicer
from ._errors import ERROR_CODES, status_for
from ._logging import TaskLogFilter, configure_logging
from ._metrics import ServiceMetrics
from ._service import AgentMetadataServicer, AgentService, AsyncAgentServicer, SyncAgentServicer

__all__ = [
    "CONNECTOR_SERVICE_NAMES",
    "ERROR_CODES",
    "PROTOCOLS",
    "SERVICE_NAMES",
    "AgentMetadataServicer",
    "AgentServerHandle",
    "AgentService",
    "AsyncAgentServicer",
    "AsyncConnectorServicer",
    "ConnectorMetadataServicer",
    "ServeConfig",
    "ServiceMetrics",
    "SyncAgentServicer",
    "TaskLogFilter",
    "build_server",
    "configure_logging",
    "serve",
    "server_credentials",
    "status_for",
]
