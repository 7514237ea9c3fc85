"""The ``flyteagents`` command: ``serve`` runs the agent service, ``agents`` lists what one serves."""

from ._main import main

__all__ = ["main"]
