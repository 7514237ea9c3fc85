"""One table from flyteagents exceptions to gRPC status codes, applied at the RPC boundary."""

from __future__ import annotations

import asyncio

import grpc

from .._exceptions import (
    AgentError,
    AgentNotFoundError,
    AgentTimeoutError,
    ExternalServiceError,
    InvalidTaskError,
    UnsupportedOperationError,
)

__all__ = ["ERROR_CODES", "UnimplementedError", "status_for"]


class UnimplementedError(UnsupportedOperationError):
    """The agent does not implement an optional method (get_metrics, get_logs)."""


#: Exception class -> gRPC code. The most specific class in an exception's MRO wins.
ERROR_CODES: dict[type[BaseException], grpc.StatusCode] = {
    AgentNotFoundError: grpc.StatusCode.NOT_FOUND,
    InvalidTaskError: grpc.StatusCode.INVALID_ARGUMENT,  # includes InvalidResourceMetaError
    UnimplementedError: grpc.StatusCode.UNIMPLEMENTED,
    UnsupportedOperationError: grpc.StatusCode.FAILED_PRECONDITION,
    AgentTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    asyncio.TimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    ExternalServiceError: grpc.StatusCode.UNAVAILABLE,
    AgentError: grpc.StatusCode.FAILED_PRECONDITION,
}

#: The longest error message sent to a client; the full one is in the server log.
MAX_DETAILS = 1000


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and client-facing details for ``exc``.

    Known errors keep their message (flyteagents messages carry no secrets or
    tracebacks); anything else is INTERNAL with a short message naming only its type.
    """
    for cls in type(exc).__mro__:
        code = ERROR_CODES.get(cls)
        if code is None:
            continue
        if isinstance(exc, ExternalServiceError) and not exc.retryable:
            code = grpc.StatusCode.FAILED_PRECONDITION
        return code, (str(exc) or type(exc).__name__)[:MAX_DETAILS]
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the agent service log"
