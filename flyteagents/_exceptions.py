"""The exceptions flyteagents raises, rooted at AgentError.

AgentError
├── AgentNotFoundError          no agent serves a task category    -> NOT_FOUND
├── InvalidTaskError            undecodable template / inputs      -> INVALID_ARGUMENT
│   └── InvalidResourceMetaError  undecodable resource_meta        -> INVALID_ARGUMENT
├── DuplicateAgentError         a category registered twice
├── UnsupportedOperationError   sync call to an async agent, ...   -> FAILED_PRECONDITION
├── AgentTimeoutError           a task ran past its timeout        -> DEADLINE_EXCEEDED
├── ExternalServiceError        the external system failed         -> UNAVAILABLE (retryable)
│   └── SecretNotFoundError       a named secret is missing (also an InvalidTaskError) -> FAILED_PRECONDITION
└── TaskFailedError             the job ended FAILED or ABORTED (local runs)
    └── RetryableTaskFailedError  the job ended RETRYABLE_FAILED (local runs)
"""

from __future__ import annotations

import ssl

from flytekit.exceptions.user import FlyteRecoverableException, FlyteUserException

__all__ = [
    "AgentError",
    "AgentNotFoundError",
    "AgentTimeoutError",
    "DuplicateAgentError",
    "ExternalServiceError",
    "InvalidResourceMetaError",
    "InvalidTaskError",
    "RetryableTaskFailedError",
    "SecretNotFoundError",
    "TaskFailedError",
    "UnsupportedOperationError",
    "untrusted_certificate",
]


class AgentError(Exception):
    """Base class of every error flyteagents raises."""


class AgentNotFoundError(AgentError, LookupError):
    """No agent is registered for a task category or an agent name."""


class DuplicateAgentError(AgentError, ValueError):
    """A second agent was registered for a task category without ``override=True``."""


class InvalidTaskError(AgentError, ValueError):
    """A task template, its inputs or its custom field cannot be used."""


class InvalidResourceMetaError(InvalidTaskError):
    """``resource_meta`` bytes do not decode to the agent's metadata type."""


class UnsupportedOperationError(AgentError):
    """The agent does not support the requested operation (a sync call to an async agent, ...)."""


class AgentTimeoutError(AgentError, TimeoutError):
    """A task ran past its timeout; its job was deleted."""


class ExternalServiceError(AgentError):
    """The external system failed or could not be reached.

    Args:
        message: what failed, without secrets.
        retryable: True when asking again later may succeed (network errors, rate limits, 5xx).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SecretNotFoundError(ExternalServiceError, InvalidTaskError):
    """A secret named by a task or the operator is not available to the agent.

    Never retryable: asking again will not make it appear. It is both kinds of error
    because it is either's fault: the task may name a wrong secret, or the deployment may
    lack it; callers catching either keep working, and the service answers
    FAILED_PRECONDITION. The message names the secret, never a value.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class TaskFailedError(AgentError, FlyteUserException):
    """A job ended in the FAILED or ABORTED phase; carries the agent's message."""

    def __init__(self, message: str, *, phase: str = "FAILED") -> None:
        super().__init__(message)
        self.phase = phase

    def __str__(self) -> str:
        # the agent's message as it wrote it, not flytekit's "USER:Unknown: error=..." framing
        return str(self.args[0]) if self.args else type(self).__name__


class RetryableTaskFailedError(TaskFailedError, FlyteRecoverableException):
    """A job ended in the RETRYABLE_FAILED phase: running the task again may succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, phase="RETRYABLE_FAILED")


def untrusted_certificate(exc: BaseException) -> bool:
    """Whether a TLS certificate verification failure (an unknown CA, a hostname mismatch) caused ``exc``.

    Such a failure is a configuration error, the same on every attempt: an agent should fail the
    task saying how to trust the CA rather than report the service as unreachable. Looks through
    ``exc``'s causes and contexts, and the ``cause`` attribute retry wrappers (google-api-core's
    RetryError) keep the last attempt's error in.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        seen.add(id(current))
        last = getattr(current, "cause", None)
        current = current.__cause__ or current.__context__ or (last if isinstance(last, BaseException) else None)
    return False
