"""Making sure a local run finds this package's agents."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from flyteagents import AgentBase, AgentNotFoundError, AgentRegistry

__all__ = ["ensure_agent"]

_lock = threading.Lock()


def ensure_agent(task_type: str, factory: Callable[[], AgentBase]) -> None:
    """Register ``factory()`` in the default registry unless an agent already serves ``task_type``.

    A local run looks its agent up in the default registry; an agent registered before
    (by a test or an application, with its own settings) is kept. A run that goes through
    a service (``FLYTEAGENTS_ENDPOINT``) needs no agent in this process.
    """
    if os.environ.get("FLYTEAGENTS_ENDPOINT"):
        return
    with _lock:
        try:
            AgentRegistry.default().get_agent(task_type)
        except AgentNotFoundError:
            AgentRegistry.default().register(factory())
