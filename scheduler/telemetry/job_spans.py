"""The scheduler's spans in a job's trace (with tracing on; the dispatcher holds None otherwise).

A job's trace is its submit's: `jobs.trace_context` keeps the traceparent of the SubmitJob(s)
server span (or the caller's, scheduler/telemetry/tracing.py), and every span here is a child of
it, as are the executors' attempt spans (the Assignment carries the same context):

    SubmitJob (client) > SubmitJob (server)
                         > jobsched.queue_wait      run_at -> claimed, one per attempt
                         > jobsched.attempt         the executor's, one per attempt
                             > (the handler's own spans)
                         > jobsched.record_result   event "state": RUNNING -> SUCCEEDED, ...

A job without a stored context (a cron fire, a submit with tracing off everywhere) gets none of
these, and with a parent-based sampler (the default) neither does a job whose submit was not
sampled: only the sampled jobs pay for spans (a span object costs tens of microseconds).
"""

from __future__ import annotations

from datetime import datetime

from opentelemetry import trace

from jobsched.tracing import context_of, follows_parent, sampled
from scheduler.domain.jobs import JobRecord
from scheduler.domain.states import JobState


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


class JobSpans:
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.follows_parent = follows_parent(tracer)

    def _traced(self, job: JobRecord) -> bool:
        if job.trace_context is None:
            return False
        return sampled(job.trace_context) or not self.follows_parent

    def queue_wait(self, job: JobRecord, executor: str, claimed_at: datetime) -> None:
        """A span from the attempt's run_at (when it was due) to its claim: the queue wait."""
        if not self._traced(job):
            return
        start = min(job.run_at, claimed_at)
        span = self.tracer.start_span(
            "jobsched.queue_wait",
            context=context_of(job.trace_context),
            start_time=_ns(start),
            attributes={
                "jobsched.job_id": job.id,
                "jobsched.attempt": job.attempt,
                "jobsched.queue": job.queue,
                "jobsched.type": job.type,
                "jobsched.executor": executor,
                "jobsched.queue_wait_seconds": (claimed_at - start).total_seconds(),
            },
        )
        span.end(end_time=_ns(claimed_at))

    def recorded(self, job: JobRecord, state: JobState) -> None:
        """The outcome of an attempt recorded: a span with the state transition as its event."""
        if not self._traced(job):
            return
        attributes: dict[str, str | int] = {
            "jobsched.job_id": job.id,
            "jobsched.attempt": job.attempt,
            "jobsched.queue": job.queue,
            "jobsched.type": job.type,
        }
        span = self.tracer.start_span(
            "jobsched.record_result", context=context_of(job.trace_context), attributes=attributes
        )
        span.add_event(
            "state", {"from": JobState.RUNNING.value, "to": state.value, "attempt": job.attempt}
        )
        span.end()
