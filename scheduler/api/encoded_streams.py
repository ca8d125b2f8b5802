"""Registering a service whose streams may send messages encoded once for many calls.

A message sent to a thousand watchers of a job is the same bytes for each of them; encoding it
once and sending those bytes saves building and serializing it a thousand times. gRPC hands
every item a handler yields to the method's response serializer: for the methods named here,
that serializer passes `bytes` (an already encoded message) through unchanged and serializes
anything else as before, so a handler may yield either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import grpc


class Registry(Protocol):
    """What a generated `add_..._to_server` registers its handlers with (a grpc.aio.Server)."""

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None: ...

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None: ...


def passing_encoded(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serializer(message: Any) -> bytes:
        return message if isinstance(message, bytes) else serialize(message)

    return serializer


class _Captured:
    """Stands in for the server while a generated `add_..._to_server` registers its handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        pass  # made again below from the registered handlers, with the serializers changed

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.service, self.handlers = service, dict(handlers)


def _with_serializer(
    handler: grpc.RpcMethodHandler[Any, Any], serializer: Callable[[Any], bytes]
) -> grpc.RpcMethodHandler[Any, Any]:
    deserializer = handler.request_deserializer
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(handler.unary_stream, deserializer, serializer)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            handler.stream_stream, deserializer, serializer
        )
    raise ValueError("only streaming responses send pre-encoded messages")


def add_with_encoded_streams(
    add_to_server: Callable[[Any, Any], None],
    servicer: object,
    server: Registry,
    methods: Iterable[str],
) -> None:
    """`add_to_server(servicer, server)` (a generated registration), with `methods` (streaming
    responses) accepting pre-encoded messages (module docstring)."""
    captured = _Captured()
    add_to_server(servicer, captured)
    for method in methods:
        handler = captured.handlers[method]
        assert handler.response_serializer is not None
        captured.handlers[method] = _with_serializer(
            handler, passing_encoded(handler.response_serializer)
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(captured.service, captured.handlers),)
    )
    server.add_registered_method_handlers(captured.service, captured.handlers)
