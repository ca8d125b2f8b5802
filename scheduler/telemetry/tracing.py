"""The scheduler's spans: one SERVER span per RPC (`TracingInterceptor`), the trace context a
submit stores with its jobs (`submit_trace_context`). The spans of a job's trace are in
job_spans.py; background work (claims, the leader's duties) uses jobsched.tracing's
`background_span`, which makes nothing when tracing is off.

Only created with tracing on (ServerSettings.tracing, from the OTEL_* variables and the config
file): with it off the interceptor is not in the chain, `tracer` is None everywhere and no span
object is made. Each SchedulerServer has its own provider (jobsched.tracing.Tracing), never
OpenTelemetry's global one, so that replicas in one test process keep their spans apart.

Why an interceptor of ours and not opentelemetry-instrumentation-grpc: its grpc.aio server
interceptor wraps the handlers with its own wrapper, next to ours (`wrap_handler`, which also
makes undecodable requests INVALID_ARGUMENT), so the span would not be current while the access
log writes its line, and its status code would be read differently from the access log's and
the metrics'; it reads the process-global provider unless given one per interceptor, and it
pulls in a pre-release (0.x) instrumentation framework pinned to one semantic-conventions
release. Ours is one `around` for wrap_handler: the span is current for everything the call
does, including the access-log line (trace_id, span_id), and its code is the access log's.
"""

from __future__ import annotations

import contextlib
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from jobsched.tracing import (
    MAX_TRACESTATE,
    TRACEPARENT,
    TRACESTATE,
    context_of,
    current_traceparent,
    valid_traceparent,
)
from scheduler.api.interceptors import Handler, WrappingInterceptor, call_code, wrap_handler


def incoming_trace_context(
    context: grpc.aio.ServicerContext[Any, Any],
) -> tuple[str | None, str | None]:
    """The traceparent and tracestate a caller sent (None for absent or malformed ones)."""
    parent: str | None = None
    state: str | None = None
    for key, value in context.invocation_metadata() or ():
        if key == TRACEPARENT and isinstance(value, str) and valid_traceparent(value):
            parent = value
        elif key == TRACESTATE and isinstance(value, str) and len(value) <= MAX_TRACESTATE:
            state = value
    return parent, state


def submit_trace_context(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The trace context stored with the jobs of a submit: the SubmitJob span's when this
    scheduler traces, else the caller's traceparent as it came (so that executors that trace
    continue the caller's trace even when the scheduler does not)."""
    current = current_traceparent()
    if current is not None:
        return current
    return incoming_trace_context(context)[0]


class _ServerSpan:
    def __init__(
        self, tracer: trace.Tracer, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self.tracer = tracer
        self.method = method
        self.context = context
        self.span: trace.Span | None = None
        self.token: object = None

    async def __aenter__(self) -> None:
        parent, state = incoming_trace_context(self.context)
        service, _, name = self.method.lstrip("/").partition("/")
        self.span = self.tracer.start_span(
            self.method.lstrip("/"),
            context=context_of(parent, state),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        self.token = otel_context.attach(trace.set_span_in_context(self.span))

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        span = self.span
        if span is not None:
            code = call_code(self.context, exc)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            span.end()
        with contextlib.suppress(ValueError):  # a stream closed from another context
            otel_context.detach(self.token)  # type: ignore[arg-type]
        return False


class TracingInterceptor(WrappingInterceptor):
    """A SERVER span per RPC, continuing the caller's traceparent, current while the call runs
    (the outermost interceptor: the access-log line is written inside it)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def _around(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> _ServerSpan:
        return _ServerSpan(self.tracer, method, context)

    def wrap(self, method: str, handler: Handler) -> Handler:
        return wrap_handler(handler, method, self._around)
