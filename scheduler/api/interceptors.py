"""Server interceptors: one access-log line per RPC, and domain errors -> canonical gRPC status.

The chain (scheduler/server.py), outermost first:

    TracingInterceptor     a SERVER span per RPC, with tracing on (scheduler/telemetry/tracing.py)
    AccessLogInterceptor   request id (x-request-id, or a new one; sent back in the initial
                           metadata), one JSON line per RPC (code, duration, peer, request id)
    ErrorInterceptor       domain errors -> rich status; undecodable requests -> INVALID_ARGUMENT
    AdmissionLimiter       concurrency limits -> RESOURCE_EXHAUSTED (scheduler/api/limits.py)
    AuditInterceptor       mutations and refusals -> the audit log (scheduler/auth/)
    AuthInterceptor        --auth required: credential -> principal -> permission
    (test interceptors)

Servicers raise domain errors (scheduler.domain.errors); `ErrorInterceptor` finds the gRPC code by
walking the exception's class hierarchy (most specific first) and aborts with a rich
google.rpc.Status carrying an ErrorInfo (and a BadRequest for invalid arguments, a RetryInfo
when overloaded). What a client is told never holds SQL or driver text: an unavailable store and
internal errors (anything not ours included) get a short fixed message with the request id, and
the server logs the whole exception under that id. The status is bounded in size, because
gRPC carries it in trailing metadata, which clients limit (8 KiB by default; past it the call
fails as RESOURCE_EXHAUSTED "Stream removed" and the real error is lost).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf import message as protobuf_message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from scheduler.api.request_ids import (
    REQUEST_ID_KEY,
    current_request_id,
    incoming_request_id,
    new_request_id,
)
from scheduler.auth.identity import current_principal
from scheduler.domain import errors
from scheduler.domain.echo import shorten

ERROR_DOMAIN = "jobsched.dev"
log = logging.getLogger("jobsched.rpc")

# The serialized google.rpc.Status (sent base64-encoded, a third larger) and the message (sent
# again as grpc-message, percent-encoded) must together stay well below the clients' 8 KiB.
MAX_STATUS_BYTES = 3500
MAX_MESSAGE_BYTES = 1000

_CODES: dict[type[errors.JobschedError], grpc.StatusCode] = {
    errors.JobschedError: grpc.StatusCode.INTERNAL,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.IdempotencyKeyReused: grpc.StatusCode.ALREADY_EXISTS,
    errors.ScheduleNameTaken: grpc.StatusCode.ALREADY_EXISTS,
    errors.ExecutorNameTaken: grpc.StatusCode.ALREADY_EXISTS,
    errors.ArtifactExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def grpc_code(exc: errors.JobschedError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INTERNAL


def client_message(exc: errors.JobschedError, request_id: str) -> str:
    """What the client is told: the error's own message, except for an unavailable store and
    internal errors, whose messages may quote driver text (and SQL): a fixed one instead."""
    suffix = f" (request id {request_id})" if request_id else ""
    if isinstance(exc, errors.DatabaseUnavailable):
        return f"the job store is unavailable; retry, or use another replica{suffix}"
    if grpc_code(exc) is grpc.StatusCode.INTERNAL:
        return f"internal error{suffix}"
    return exc.message


def to_rich_status(exc: errors.JobschedError, request_id: str = "") -> grpc.Status:
    """The rich status of a domain error, at most MAX_STATUS_BYTES: past that, violations are
    left off (the last one listed says how many) and the message is shortened."""
    code = grpc_code(exc)
    message = _shorten_bytes(client_message(exc, request_id), MAX_MESSAGE_BYTES)
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN)
    if grpc_code(exc) is not grpc.StatusCode.INTERNAL:  # internal errors say nothing more
        info.metadata.update(exc.metadata)
    if request_id:
        info.metadata["request_id"] = request_id
    extra: list[protobuf_message.Message] = []
    if isinstance(exc, errors.Overloaded):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after * 1000))
        extra.append(error_details_pb2.RetryInfo(retry_delay=delay))
    count = len(exc.listed) if isinstance(exc, errors.InvalidArgument) else 0
    while True:
        details: list[protobuf_message.Message] = [info, *extra]
        if isinstance(exc, errors.InvalidArgument):
            details.append(_bad_request(exc.listed_with_summary(count)))
        status = status_pb2.Status(
            code=getattr(code_pb2, code.name), message=message, details=[_pack(d) for d in details]
        )
        if status.ByteSize() <= MAX_STATUS_BYTES or (count == 0 and len(message) <= 200):
            break
        if count > 0:
            count //= 2
        else:  # the message (of many wide characters) is what is left to cut
            message = _shorten_bytes(message, 200)
    rich: grpc.Status = rpc_status.to_status(status)
    return rich


def _bad_request(violations: list[errors.FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )


def _pack(detail: protobuf_message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def _shorten_bytes(text: str, limit: int) -> str:
    """`text` shortened (saying so) to at most `limit` bytes of UTF-8."""
    original, chars = text, len(text)
    while len(text.encode()) > limit and chars > 0:
        chars = chars * 9 // 10
        text = shorten(original, chars)
    return text if len(text.encode()) <= limit else text.encode()[:limit].decode(errors="ignore")


# --- requests that do not decode -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """What the tolerant deserializer returns for bytes that are not the request message (the
    wrapped behaviour answers INVALID_ARGUMENT; grpc's own handling was UNKNOWN)."""

    type_name: str
    problem: str

    def error(self) -> errors.InvalidArgument:
        return errors.InvalidArgument(
            [
                errors.FieldViolation(
                    "request", f"is not a valid {self.type_name} message: {self.problem}"
                )
            ]
        )


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = getattr(descriptor, "full_name", "request")

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # DecodeError, or anything a custom deserializer raises
            problem = str(exc).rsplit(":", 1)[-1].strip() or type(exc).__name__
            return _Undecodable(type_name, shorten(problem, 200))

    return deserialize


async def _checked_requests(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    """The request stream, ending the call INVALID_ARGUMENT at a message that did not decode.
    It aborts through the context rather than raising, since a servicer may read the stream
    from a task of its own (ExecutorService's reader), where a raised error would end only
    that task."""
    async for request in requests:
        if isinstance(request, _Undecodable):
            status = to_rich_status(request.error(), current_request_id())
            await context.abort(status.code, status.details, status.trailing_metadata)
        yield request


# --- wrapping handlers -----------------------------------------------------------------------

Around = Callable[[str, grpc.aio.ServicerContext[Any, Any]], Any]


async def _streamed(
    around: Around,
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


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    method: str,
    around: Around,
    *,
    check_requests: bool = False,
) -> grpc.RpcMethodHandler[Any, Any]:
    """Rebuild `handler` so that each call goes through `around(method, context)`, an async
    context manager factory; streaming responses are iterated inside it. `check_requests`:
    requests that do not decode become INVALID_ARGUMENT inside `around`."""
    deserializer = (
        _tolerant(handler.request_deserializer) if check_requests else handler.request_deserializer
    )
    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary  # an async behaviour under grpc.aio

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with around(method, context):
                if check_requests and isinstance(request, _Undecodable):
                    raise request.error()
                return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if check_requests and isinstance(request, _Undecodable):
                behaviour: Any = _refuse(request)
            else:
                behaviour = inner_us
            async for item in _streamed(around, method, context, behaviour, request):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, deserializer, handler.response_serializer
        )
    if handler.stream_stream is not None:
        inner_ss: Any = handler.stream_stream

        async def stream_stream(
            request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            requests = (
                _checked_requests(request_iterator, context)
                if check_requests
                else (request_iterator)
            )
            async for item in _streamed(around, method, context, inner_ss, requests):
                yield item

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, deserializer, handler.response_serializer
        )
    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary

        async def stream_unary(
            request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            requests = (
                _checked_requests(request_iterator, context)
                if check_requests
                else (request_iterator)
            )
            async with around(method, context):
                return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, deserializer, handler.response_serializer
        )
    return handler


# A method handler (generic in the type stubs only, hence a string).
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that rebuilds each served method's handler once, in `wrap` (which
    returns the handler itself to leave a method alone). grpc.aio hands an interceptor the same
    handler object for a method on every call (the servicers' are built at start, and every
    interceptor below keeps its wrapped ones too), so the wrapped handler is kept per method and
    rebuilt only when the handler changes: no closures or handler objects are made per call.
    Bounded by the methods served (an unknown method has no handler and is not kept)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def wrap(self, method: str, handler: Handler) -> Handler:
        raise NotImplementedError

    def wrapped_methods(self) -> set[str]:
        """The methods whose handlers this interceptor wrapped so far (not those it left)."""
        return {m for m, (handler, wrapped) in self._wrapped.items() if wrapped is not handler}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _refuse(request: _Undecodable) -> Callable[[Any, Any], Awaitable[None]]:
    async def refuse(_request: Any, _context: Any) -> None:
        raise request.error()

    return refuse


# --- error mapping ---------------------------------------------------------------------------


class _ErrorMapping:
    def __init__(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.method = method
        self.context = context

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, grpc.aio.AbortError):
            return False  # cancelled, or already aborted by the servicer: leave it to grpc
        request_id = current_request_id()
        fields = {"method": self.method, "request_id": request_id}
        if not isinstance(exc, errors.JobschedError):
            # A bug, or a driver error that escaped the store: never the client's to read.
            log.error("internal error", exc_info=exc, extra={"fields": fields})
            exc = errors.JobschedError()
        elif isinstance(exc, errors.DatabaseUnavailable):
            cause = exc.__cause__
            fields["error"] = shorten(str(cause) if cause is not None else exc.message, 2000)
            log.warning("job store unavailable", extra={"fields": fields})
        elif grpc_code(exc) is grpc.StatusCode.INTERNAL:
            log.error("internal error", exc_info=exc, extra={"fields": fields})
        status = to_rich_status(exc, request_id)
        await self.context.abort(status.code, status.details, status.trailing_metadata)
        return False


class ErrorInterceptor(WrappingInterceptor):
    """Map errors raised by servicers to canonical codes with ErrorInfo details, and requests
    that do not decode to INVALID_ARGUMENT."""

    def wrap(self, method: str, handler: Handler) -> Handler:
        return wrap_handler(handler, method, _ErrorMapping, check_requests=True)


# --- access log ------------------------------------------------------------------------------


# Told of every RPC as it ends: (full method, code name, seconds); the metrics' hook.
RpcObserver = Callable[[str, str, float], None]


class _AccessLog:
    def __init__(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        observe: RpcObserver | None = None,
    ) -> None:
        self.method = method
        self.context = context
        self.observe = observe
        self.start = 0.0
        self.peer = ""
        self.request_id = ""

    async def __aenter__(self) -> None:
        self.start = time.perf_counter()
        self.request_id = new_request_id(incoming_request_id(self.context))
        # Read now: grpcio (1.85) segfaults in context.peer() once a client has cancelled a
        # stream that still had messages in flight (a stalled watcher going away).
        self.peer = self.context.peer()
        # The caller learns the id of its call (and can quote it) whatever the outcome.
        await self.context.send_initial_metadata(((REQUEST_ID_KEY, self.request_id),))

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        seconds = time.perf_counter() - self.start
        duration_ms = seconds * 1000
        code = call_code(self.context, exc)
        if self.observe is not None:
            self.observe(self.method, code.name, seconds)
        fields = {
            "event": "rpc",
            "method": self.method,
            "code": code.name,
            "duration_ms": round(duration_ms, 3),
            "peer": self.peer,
            "request_id": self.request_id,
        }
        principal = current_principal()  # set further in by the AuthInterceptor, if any
        if principal is not None:
            fields["principal"] = f"{principal.kind}:{principal.id}"
        log.info("rpc", extra={"fields": fields})
        return False


def call_code(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None
) -> grpc.StatusCode:
    """The status code a call ended with (as the access log, the metrics and the spans say)."""
    code = context.code()
    if code is None or isinstance(code, int):
        code = _code_from(code, exc, context)
    return code


def _code_from(
    value: int | None, exc: BaseException | None, context: grpc.aio.ServicerContext[Any, Any]
) -> grpc.StatusCode:
    if isinstance(value, int):
        for code in grpc.StatusCode:
            if code.value[0] == value:
                return code
    if _past_deadline(context):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, asyncio.CancelledError | GeneratorExit) or context.cancelled():
        # grpc.aio cancels the handler when the client cancels (or goes away)
        return grpc.StatusCode.CANCELLED
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, errors.JobschedError):
        return grpc_code(exc)
    return grpc.StatusCode.UNKNOWN


def _past_deadline(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


class AccessLogInterceptor(WrappingInterceptor):
    """Give each RPC a request id and log one structured line for it: method, status code,
    duration, peer and request id; and tell `observe` (the metrics) the same."""

    def __init__(self, observe: RpcObserver | None = None) -> None:
        super().__init__()
        self.observe = observe

    def _around(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> _AccessLog:
        return _AccessLog(method, context, self.observe)

    def wrap(self, method: str, handler: Handler) -> Handler:
        return wrap_handler(handler, method, self._around)
