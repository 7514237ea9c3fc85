"""Helpers for testing agents against a real agent service."""

from ._server import AgentServer

__all__ = ["AgentServer"]
