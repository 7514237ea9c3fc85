"""Helpers for testing agents against real local services: the agent service, moto_server, any server process."""

from ._connection import flyte_connection
from ._moto import MotoServer
from ._process import ServerProcess
from ._requests import create_task_request, get_task_request
from ._server import AgentServer
from ._templates import execution_metadata, template_of
from ._tls import self_signed_certificate

__all__ = [
    "AgentServer",
    "MotoServer",
    "ServerProcess",
    "create_task_request",
    "execution_metadata",
    "flyte_connection",
    "get_task_request",
    "self_signed_certificate",
    "template_of",
]
