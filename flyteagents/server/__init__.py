"""The agent service: grpc.aio servicers for FlytePropeller's agent protocol, and how to run them."""

from ._app import SERVICE_NAMES, AgentServerHandle, ServeConfig, build_server, serve, server_credentials
from ._errors import ERROR_CODES, status_for
from ._logging import TaskLogFilter, configure_logging
from ._metrics import ServiceMetrics
from ._service import AgentMetadataServicer, AgentService, AsyncAgentServicer, SyncAgentServicer

__all__ = [
    "ERROR_CODES",
    "SERVICE_NAMES",
    "AgentMetadataServicer",
    "AgentServerHandle",
    "AgentService",
    "AsyncAgentServicer",
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
