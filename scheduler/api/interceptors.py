"""Server interceptors: domain errors -> canonical gRPC status, and one access-log line per RPC.

Servicers raise domain errors (scheduler.domain.errors); `ErrorInterceptor` finds the gRPC code by
walking the exception's class hierarchy (most specific first) and aborts with a rich
google.rpc.Status carrying an ErrorInfo (and a BadRequest for invalid arguments).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from scheduler.domain import errors

ERROR_DOMAIN = "jobsched.dev"
log = logging.getLogger("jobsched.rpc")

_CODES: dict[type[errors.JobschedError], grpc.StatusCode] = {
    errors.JobschedError: grpc.StatusCode.INTERNAL,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.IdempotencyKeyReused: grpc.StatusCode.ALREADY_EXISTS,
    errors.ScheduleNameTaken: grpc.StatusCode.ALREADY_EXISTS,
    errors.ExecutorNameTaken: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def grpc_code(exc: errors.JobschedError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INTERNAL


def to_rich_status(exc: errors.JobschedError) -> grpc.Status:
    code = grpc_code(exc)
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN)
    details = [info]
    if isinstance(exc, errors.InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name), message=exc.message, details=packed
    )
    rich: grpc.Status = rpc_status.to_status(status)
    return rich


async def _streamed(
    around: Any,
    method: str,
    context: grpc.aio.ServicerContext[Any, Any],
    behaviour: Any,
    request: Any,
) -> AsyncIterator[Any]:
    """Run a server-streaming behaviour inside `around`, whichever style it is written in: an
    async generator, or a coroutine that writes through the context."""
    async with around(method, context):
        result = behaviour(request, context)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        else:
            await result


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], method: str, around: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    """Rebuild `handler` so that each call goes through `around(method, call, context)`.

    `around` is an async context manager factory; streaming responses are iterated inside it."""
    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary  # an async behaviour under grpc.aio

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with around(method, context):
                return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async for item in _streamed(around, method, context, inner_us, request):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_stream is not None:
        inner_ss: Any = handler.stream_stream

        async def stream_stream(
            request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async for item in _streamed(around, method, context, inner_ss, request_iterator):
                yield item

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, handler.request_deserializer, handler.response_serializer
        )
    return handler  # client streaming: not used by jobsched


class _ErrorMapping:
    def __init__(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.context = context

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, errors.JobschedError):
            if grpc_code(exc) is grpc.StatusCode.INTERNAL:
                log.exception("internal error", exc_info=exc)
            status = to_rich_status(exc)
            await self.context.abort(status.code, status.details, status.trailing_metadata)
        return False


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Map domain errors raised by servicers to canonical codes with ErrorInfo details."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return _wrap(handler, handler_call_details.method, _ErrorMapping)


class _AccessLog:
    def __init__(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.method = method
        self.context = context
        self.start = 0.0
        self.peer = ""

    async def __aenter__(self) -> None:
        self.start = time.perf_counter()
        # Read now: grpcio (1.85) segfaults in context.peer() once a client has cancelled a
        # stream that still had messages in flight (a stalled watcher going away).
        self.peer = self.context.peer()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        duration_ms = (time.perf_counter() - self.start) * 1000
        code = self.context.code()
        if code is None or isinstance(code, int):
            code = _code_from(code, exc)
        log.info(
            "rpc",
            extra={
                "fields": {
                    "event": "rpc",
                    "method": self.method,
                    "code": code.name,
                    "duration_ms": round(duration_ms, 3),
                    "peer": self.peer,
                }
            },
        )
        return False


def _code_from(value: int | None, exc: BaseException | None) -> grpc.StatusCode:
    if isinstance(value, int):
        for code in grpc.StatusCode:
            if code.value[0] == value:
                return code
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, errors.JobschedError):
        return grpc_code(exc)
    return grpc.StatusCode.UNKNOWN


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """Log one structured line per RPC: method, status code, duration and peer."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return _wrap(handler, handler_call_details.method, _AccessLog)
