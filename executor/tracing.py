"""The executor's spans: one per attempt (`jobsched.attempt`, CONSUMER), continuing the trace
the job was submitted in (Assignment.traceparent), current while its handler runs.

The attempt span is a *child* of the submit's context, not a link: the submit caused the run,
and a child puts every attempt (retries included, each its own span) in the submitter's trace,
where the trace UI shows submit, queue wait and attempts on one timeline. A link would leave
each attempt a trace of its own that the UI opens separately; links fit fan-in (one span
serving many traces), which an attempt never is.

`attempt_context` builds the contextvars context the handler's task runs in: the span is the
current OpenTelemetry span there, and the job's id, attempt and tenant are bound to its log
lines (jobsched.logs); a plain function's thread gets a copy (executor/runs.py). Without a
tracer no span is made: the context only carries the log fields; with a parent-based sampler
(the default) neither is one for a job whose submit was not sampled.
"""

from __future__ import annotations

import contextvars

from opentelemetry import context as otel_context
from opentelemetry import trace

from executor.handlers import JobContext
from jobsched import logs
from jobsched.tracing import (
    context_of,
    follows_parent,
    sampled,
    span_context_of,
    traceparent_of,
    valid_traceparent,
)
from jobsched.v1 import executor_service_pb2 as pb


def attempt_context(
    ctx: JobContext, tracer: trace.Tracer | None, executor: str
) -> contextvars.Context:
    """The context an attempt's handler runs in (see the module's docstring); sets `ctx.span`,
    `ctx.tracer` and `ctx.traceparent`."""
    incoming = ctx.traceparent if valid_traceparent(ctx.traceparent) else ""
    ctx.traceparent = incoming
    run = contextvars.copy_context()
    if tracer is None:
        run.run(_bind, ctx, None)
        return run
    if incoming and not sampled(incoming) and follows_parent(tracer):
        # The submit was not sampled and the sampler follows it: no span would be recorded.
        # The parent's (non-recording) span is current instead, so that the handler's own
        # spans follow the same decision, at no cost.
        parent = span_context_of(incoming)
        assert parent is not None
        unsampled = trace.NonRecordingSpan(parent)
        ctx.span = unsampled
        ctx.tracer = tracer
        run.run(_bind, ctx, unsampled)
        return run
    span = tracer.start_span(
        "jobsched.attempt",
        context=context_of(incoming or None),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "jobsched.job_id": ctx.job_id,
            "jobsched.attempt": ctx.attempt,
            "jobsched.type": ctx.type,
            "jobsched.queue": ctx.queue,
            "jobsched.tenant": ctx.tenant,
            "jobsched.executor": executor,
        },
    )
    ctx.span = span
    ctx.tracer = tracer
    span_context = span.get_span_context()
    if span_context.is_valid:
        ctx.traceparent = traceparent_of(span_context)
    run.run(_bind, ctx, span)
    return run


def _bind(ctx: JobContext, span: trace.Span | None) -> None:
    # Inside the handler's context copy, which is dropped with its task: nothing to detach.
    logs.bind_lazily(ctx.log_fields)
    if span is not None:
        otel_context.attach(trace.set_span_in_context(span))


def end_attempt_span(ctx: JobContext, result: pb.JobResult) -> None:
    """End the attempt's span with its outcome as an event (and an error status on failure)."""
    span = ctx.span
    if not span.is_recording():
        return
    outcome = result.WhichOneof("outcome") or "unknown"
    attributes: dict[str, str | bool] = {"outcome": outcome}
    if outcome == "failure":
        attributes["retryable"] = result.failure.retryable
        attributes["message"] = result.failure.message[:1000]
        span.set_status(trace.Status(trace.StatusCode.ERROR, result.failure.message[:200]))
    span.add_event("result", attributes)
    span.set_attribute("jobsched.outcome", outcome)
    span.end()
