"""Helpers for testing agents against real local services and a real agent service."""

from ._moto import MotoServer
from ._server import AgentServer

__all__ = ["AgentServer", "MotoServer"]
