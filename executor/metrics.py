"""The executor's metrics, through the OpenTelemetry metrics API (jobsched/metering.py), served
on --metrics-listen (/metrics, /healthz) and pushed by OTLP when OTEL_METRICS_EXPORTER says:

    jobsched_executor_running_jobs                       handlers running now
    jobsched_executor_capacity                           slots (--capacity)
    jobsched_executor_connected                          1 while a stream is registered
    jobsched_executor_assignments_total{type}            assignments taken to run
    jobsched_executor_handler_seconds{type,outcome}      handler duration, assignment taken to
        outcome reported: succeeded, failed, failed_permanently (not retryable), cancelled,
        released (handed back unfinished at shutdown)
    jobsched_executor_registrations_total                streams registered (the first one too)
    jobsched_executor_reconnects_total                   registrations after the first

Slot use is running_jobs / capacity. The type label is bounded by the handlers this executor
registered (an assignment of another type is refused before it is counted). The hooks are
called on the stream thread (assignments, registrations) and the handler loop (outcomes):
each is a dict update or a histogram record, both safe across threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from jobsched.metering import Metering
from jobsched.v1 import executor_service_pb2 as pb

if TYPE_CHECKING:
    from executor.runs import Attempt

# Handlers: a no-op (~1 ms) to hours.
HANDLER_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0),
)
AttemptKey = tuple[str, int]


def outcome_of(result: pb.JobResult) -> str:
    kind = result.WhichOneof("outcome")
    if kind == "result":
        return "succeeded"
    if kind == "failure":
        return "failed" if result.failure.retryable else "failed_permanently"
    return kind or "unknown"  # cancelled, released


class ExecutorMetrics:
    def __init__(self, *, prometheus: bool, capacity: int) -> None:
        self.metering = m = Metering("jobsched-executor", prometheus=prometheus)
        self.capacity = capacity
        self._assignments = m.counter(
            "jobsched_executor_assignments",
            "Assignments this executor took to run, by job type.",
            ("type",),
        )
        self._registrations = m.counter(
            "jobsched_executor_registrations", "Connect streams registered with a scheduler."
        )
        self._reconnects = m.counter(
            "jobsched_executor_reconnects",
            "Connect streams registered after the first (a lost stream, a scheduler restart).",
        )
        self._handler = m.histogram(
            "jobsched_executor_handler_seconds",
            "Handler duration, assignment taken to outcome reported, by job type and outcome.",
            ("type", "outcome"),
            HANDLER_BUCKETS,
        )
        self._started: dict[AttemptKey, float] = {}
        self._connected = False
        self.running: Callable[[], int] = lambda: 0

    def register_gauges(self, running: Callable[[], int]) -> None:
        self.running = running
        gauge = self.metering.gauge
        gauge(
            "jobsched_executor_running_jobs",
            "Handlers running on this executor.",
            lambda: [(self.running(), {})],
        )
        gauge(
            "jobsched_executor_capacity",
            "Slots of this executor (jobs run at once).",
            lambda: [(self.capacity, {})],
        )
        gauge(
            "jobsched_executor_connected",
            "1 while a Connect stream is registered with a scheduler.",
            lambda: [(1 if self._connected else 0, {})],
        )

    def attempts_started(self, attempts: Iterable[Attempt]) -> None:
        now = time.monotonic()
        for attempt in attempts:
            self._assignments.add((attempt.ctx.type,))
            self._started[attempt.key] = now

    def attempts_finished(self, outcomes: Iterable[tuple[Attempt, pb.JobResult]]) -> None:
        now = time.monotonic()
        for attempt, result in outcomes:
            started = self._started.pop(attempt.key, None)
            if started is not None:
                self._handler.record((attempt.ctx.type, outcome_of(result)), now - started)

    def registration_changed(self, registered: bool) -> None:
        self._connected = registered
        if registered:
            if self._registrations.value(()):
                self._reconnects.add(())
            self._registrations.add(())

    def exposition(self) -> bytes:
        return self.metering.exposition()

    def shutdown(self) -> None:
        self.metering.shutdown()
