"""flyteagents: run Flyte tasks on agents.

Write an agent by subclassing AsyncAgentBase or SyncAgentBase (or decorate an
``async def`` with ``@sync_agent``, a function with ``@sensor``), mix
AsyncAgentExecutorMixin or SyncAgentExecutorMixin into its task class to run it
locally, and serve it to FlytePropeller with ``flyteagents serve``.
"""

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
from ._version import __version__
from .sensor import BaseSensor, sensor

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

# Show flyteagents.Resource, not flyteagents._models.Resource, in reprs and docs.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("flyteagents."):
        _obj.__module__ = "flyteagents"
del _name, _obj
