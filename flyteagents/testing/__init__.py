"""Helpers for testing agents against real local services: the agent service, moto_server."""

from ._moto import MotoServer
from ._server import AgentServer

__all__ = ["AgentServer", "MotoServer"]
