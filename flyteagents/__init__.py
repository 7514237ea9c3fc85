"""flyteagents: run Flyte tasks on agents.

Write an agent by subclassing AsyncAgentBase or SyncAgentBase (or decorate an
``async def`` with ``@sync_agent``, a function with ``@sensor``), mix
AsyncAgentExecutorMixin or SyncAgentExecutorMixin into its task class to run it
locally, and serve it to FlytePropeller with ``flyteagents serve``.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._agent import AgentBase, AsyncAgentBase, SyncAgentBase
    from ._exceptions import (
        AgentError,
        AgentNotFoundError,
        AgentTimeoutError,
        DuplicateAgentError,
        ExternalServiceError,
        InvalidResourceMetaError,
        InvalidTaskError,
        RetryableTaskFailedError,
        SecretNotFoundError,
        TaskFailedError,
        UnsupportedOperationError,
        untrusted_certificate,
    )
    from ._function_agent import sync_agent
    from ._local import AsyncAgentExecutorMixin, SyncAgentExecutorMixin
    from ._models import Resource, ResourceMeta, TaskCategory
    from ._phase import is_terminal_phase, to_phase
    from ._polling import PollPolicy, PollSchedule
    from ._registry import AgentRegistry
    from ._runner import AgentRunner
    from ._secrets import get_secret
    from .sensor import BaseSensor, sensor

# The public names load on first use: most of them need flytekit, whose import
# takes seconds, and `flyteagents --help` or a plugin's entry point need none.
_SOURCES = {
    "AgentBase": "._agent",
    "AsyncAgentBase": "._agent",
    "SyncAgentBase": "._agent",
    "AgentError": "._exceptions",
    "AgentNotFoundError": "._exceptions",
    "AgentTimeoutError": "._exceptions",
    "DuplicateAgentError": "._exceptions",
    "ExternalServiceError": "._exceptions",
    "InvalidResourceMetaError": "._exceptions",
    "InvalidTaskError": "._exceptions",
    "RetryableTaskFailedError": "._exceptions",
    "SecretNotFoundError": "._exceptions",
    "TaskFailedError": "._exceptions",
    "UnsupportedOperationError": "._exceptions",
    "untrusted_certificate": "._exceptions",
    "sync_agent": "._function_agent",
    "AsyncAgentExecutorMixin": "._local",
    "SyncAgentExecutorMixin": "._local",
    "Resource": "._models",
    "ResourceMeta": "._models",
    "TaskCategory": "._models",
    "is_terminal_phase": "._phase",
    "to_phase": "._phase",
    "PollPolicy": "._polling",
    "PollSchedule": "._polling",
    "AgentRegistry": "._registry",
    "AgentRunner": "._runner",
    "get_secret": "._secrets",
    "BaseSensor": ".sensor",
    "sensor": ".sensor",
}

__all__ = [
    "AgentBase",
    "AgentError",
    "AgentNotFoundError",
    "AgentRegistry",
    "AgentRunner",
    "AgentTimeoutError",
    "AsyncAgentBase",
    "AsyncAgentExecutorMixin",
    "BaseSensor",
    "DuplicateAgentError",
    "ExternalServiceError",
    "InvalidResourceMetaError",
    "InvalidTaskError",
    "PollPolicy",
    "PollSchedule",
    "Resource",
    "ResourceMeta",
    "RetryableTaskFailedError",
    "SecretNotFoundError",
    "SyncAgentBase",
    "SyncAgentExecutorMixin",
    "TaskCategory",
    "TaskFailedError",
    "UnsupportedOperationError",
    "__version__",
    "get_secret",
    "is_terminal_phase",
    "sensor",
    "sync_agent",
    "to_phase",
    "untrusted_certificate",
]


#: First uses from several threads take turns: flytekit's modules import each other in a cycle, and
#: two threads importing two of them at once end in a deadlock error or a partially initialized
#: module. Re-entrant: a module being loaded may itself use a public name.
_load_lock = threading.RLock()


def _load(name: str) -> Any:
    with _load_lock:
        value = getattr(importlib.import_module(_SOURCES[name], __name__), name)
        # Show flyteagents.Resource, not flyteagents._models.Resource, in reprs and docs.
        if getattr(value, "__module__", "").startswith("flyteagents."):
            value.__module__ = __name__
    return value


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = _load(name)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """This package's module type.

    Importing the ``flyteagents.sensor`` subpackage binds it to the parent's
    ``sensor`` attribute; the public name ``flyteagents.sensor`` is the decorator.
    """

    @property
    def sensor(self) -> Any:
        return _load("sensor")

    @sensor.setter
    def sensor(self, subpackage: types.ModuleType) -> None:
        pass  # the subpackage stays reachable as sys.modules["flyteagents.sensor"]


sys.modules[__name__].__class__ = _Package
