"""Registering servicers so that a request body that is not valid protobuf is a client error.

gRPC's own registration decodes each request with the message's ``FromString``; when that
raises, grpc.aio answers UNKNOWN and logs a traceback for every bad body. Here the decoder
returns an ``UndecodableRequest`` instead, which our servicers refuse as INVALID_ARGUMENT
(and, for servicers we did not write, a guard refuses before they see it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from .._exceptions import InvalidTaskError
from ._errors import clip_details

__all__ = ["UndecodableRequest", "add_guarded_servicer", "decoder", "refuse_undecodable"]


class UndecodableRequest:
    """What a request body decodes to when it is not a valid message of the method's type."""

    __slots__ = ("error", "message_type")

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type = message_type
        self.error = error

    def to_error(self) -> InvalidTaskError:
        """The INVALID_ARGUMENT error a servicer answers this request with."""
        return InvalidTaskError(f"the request is not a valid {self.message_type}: {self.error}")


def decoder(message_class: Any) -> Callable[[bytes], Any]:
    """A request deserializer for ``message_class`` that returns an UndecodableRequest instead of raising."""
    parse = message_class.FromString
    name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or RecursionError for hostile nesting
            return UndecodableRequest(name, exc)

    return decode


def refuse_undecodable(request: Any) -> None:
    """Raise the INVALID_ARGUMENT error for an undecodable request (call first in a handler)."""
    if request.__class__ is UndecodableRequest:
        raise request.to_error()


async def _abort(context: grpc.aio.ServicerContext, request: UndecodableRequest) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, clip_details(str(request.to_error())))


def _guard(behavior: Callable[..., Any], client_streaming: bool, server_streaming: bool) -> Callable[..., Any]:
    """``behavior`` behind a check that refuses undecodable requests before it sees them."""
    if client_streaming:

        async def checked_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for request in requests:
                if request.__class__ is UndecodableRequest:
                    await _abort(context, request)
                yield request

        if server_streaming:

            async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                async for response in behavior(checked_stream(requests, context), context):
                    yield response

            return stream_stream

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await behavior(checked_stream(requests, context), context)

        return stream_unary
    if server_streaming:

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request.__class__ is UndecodableRequest:
                await _abort(context, request)
            async for response in behavior(request, context):
                yield response

        return unary_stream

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.__class__ is UndecodableRequest:
            await _abort(context, request)
        return await behavior(request, context)

    return unary_unary


def add_guarded_servicer(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor) -> None:
    """Serve every method of ``service`` from ``servicer`` (a servicer we did not write: health, reflection).

    Undecodable request bodies are answered INVALID_ARGUMENT before the servicer sees them.
    """
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        streams = (method.client_streaming, method.server_streaming)
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[streams]
        handlers[method.name] = make(
            _guard(getattr(servicer, method.name), *streams),
            request_deserializer=decoder(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
