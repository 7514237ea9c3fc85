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

__all__ = ["ERROR_CODES", "MAX_DETAILS", "UnimplementedError", "clip_details", "status_for"]


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

#: The most bytes of UTF-8 error message sent to a client (gRPC carries it in a header, whose
#: soft limit a longer one would break); the full message is in the server log.
MAX_DETAILS = 1000


def clip_details(text: str, limit: int = MAX_DETAILS) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, never inside a character."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


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
        return code, clip_details(str(exc) or type(exc).__name__)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the agent service log"
