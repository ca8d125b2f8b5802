"""Client spans (jobsched.Client, AsyncClient, the CLI, the executor's stream): four grpc.aio
client interceptors that make a CLIENT span per call and send its context as `traceparent`,
ended with the call's status code. Added to a channel only when there is a tracer
(`client_interceptors(None)` is empty), so a client without tracing pays nothing for them."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from opentelemetry import trace

from jobsched.tracing import with_trace_metadata

# --- client spans ----------------------------------------------------------------------------


def _method_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class _ClientSpans:
    """The body of the four aio client interceptors: a CLIENT span per call, its context sent
    as traceparent, ended (with the call's status code) when the call is done."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._ending: set[asyncio.Future[None]] = set()

    def begin(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[trace.Span, grpc.aio.ClientCallDetails]:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        span = self.tracer.start_span(
            method.lstrip("/"), kind=trace.SpanKind.CLIENT, attributes=_method_attributes(method)
        )
        metadata = with_trace_metadata(
            tuple(details.metadata or ()),  # type: ignore[arg-type]
            span.get_span_context(),
        )
        new = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )
        return span, new

    def end_with(self, span: trace.Span, call: Any) -> None:
        def done(finished: Any) -> None:
            # code() is a coroutine in grpc.aio, answered at once for a finished call.
            task = asyncio.ensure_future(_end_span(span, finished))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

        call.add_done_callback(done)


async def _end_span(span: trace.Span, call: Any) -> None:
    try:
        code = await call.code()
    except Exception:
        code = grpc.StatusCode.UNKNOWN
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    span.set_attribute(
        "rpc.grpc.status_code", code.value[0] if isinstance(code, grpc.StatusCode) else -1
    )
    if code is not grpc.StatusCode.OK:
        span.set_status(trace.Status(trace.StatusCode.ERROR, name))
    span.end()


class TracingUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, spans: _ClientSpans) -> None:
        self.spans = spans

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        span, details = self.spans.begin(details)
        call = await continuation(details, request)
        self.spans.end_with(span, call)
        return call


class TracingUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, spans: _ClientSpans) -> None:
        self.spans = spans

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        span, details = self.spans.begin(details)
        call = await continuation(details, request)
        self.spans.end_with(span, call)
        return call


class TracingStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, spans: _ClientSpans) -> None:
        self.spans = spans

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        span, details = self.spans.begin(details)
        call = await continuation(details, requests)
        self.spans.end_with(span, call)
        return call


class TracingStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, spans: _ClientSpans) -> None:
        self.spans = spans

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        span, details = self.spans.begin(details)
        call = await continuation(details, requests)
        self.spans.end_with(span, call)
        return call


def client_interceptors(tracer: trace.Tracer | None) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors of a traced channel; none without a tracer (no cost when off)."""
    if tracer is None:
        return []
    spans = _ClientSpans(tracer)
    return [
        TracingUnaryUnary(spans),
        TracingUnaryStream(spans),
        TracingStreamUnary(spans),
        TracingStreamStream(spans),
    ]


def tracer_of(provider: trace.TracerProvider | None) -> trace.Tracer | None:
    """A tracer from `provider`, else from OpenTelemetry's global provider when an application
    installed an SDK one; None otherwise (the API's default provider makes no spans worth the
    cost)."""
    if provider is None:
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None
    return provider.get_tracer("jobsched.client")
