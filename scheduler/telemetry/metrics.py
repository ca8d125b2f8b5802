"""The scheduler's counters and histograms, through the OpenTelemetry metrics API on a
MeterProvider of its own (one per SchedulerServer: replicas in one process never mix), exported
for Prometheus and, when configured, by OTLP (jobsched/metering.py):

    jobsched_jobs_submitted_total{queue,type}              jobs created (SubmitJob(s), cron)
    jobsched_jobs_finished_total{queue,type,outcome}       attempts' outcomes recorded here:
        succeeded, failed (retried later), dead (no attempt left or not retryable), cancelled
    jobsched_job_queue_wait_seconds{queue,type}            due (run_at: submit, its run_at, the
                                                           end of a retry's backoff) to claimed
    jobsched_job_run_seconds{queue,type}                   claimed to outcome recorded, per attempt
    jobsched_db_transaction_seconds{statement}             store transactions and autocommit
        statements that succeeded, by the store function or service method that opened them
    jobsched_grpc_server_handled_total{method,code}        RPCs ended, by full method and code
    jobsched_grpc_server_handling_seconds{method,code}     their duration (histogram)

The gauges (leader, executors, slots, pool, queue depth, waiting reasons) are read when
collected (gauges.py). Until issue 17 these were prometheus_client instruments; the OpenTelemetry
SDK's synchronous counter costs ~7 µs an event where prometheus_client's costs ~1.5, so counters
are exact in-process tallies behind observable counters (bench/instruments.py, RESULTS.md)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime

from jobsched.metering import Metering
from scheduler.domain.jobs import JobRecord
from scheduler.domain.states import JobState
from scheduler.telemetry.labels import DEFAULT_MAX_VALUES, BoundedValues

SUCCEEDED = "succeeded"
FAILED = "failed"  # the attempt failed and the job is retried later
DEAD = "dead"
CANCELLED = "cancelled"
# The outcome label of the state an outcome left the job in.
OUTCOMES = {
    JobState.SUCCEEDED: SUCCEEDED,
    JobState.SCHEDULED: FAILED,
    JobState.QUEUED: FAILED,  # a retry without backoff
    JobState.DEAD: DEAD,
    JobState.CANCELLED: CANCELLED,
}

# RPC durations: from a cached read (~1 ms) to a large batch or a slow store (10 s, the
# statement timeout). Streams (Connect, WatchJob) last as long as they are open: their
# buckets say how long, the +Inf bucket catches the longest.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Queue wait and run time: milliseconds (an idle cluster) to hours (a backlog, a long job).
JOB_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0),
)
# Store transactions: a commit (~0.5 ms) to the statement timeout.
TRANSACTION_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class SchedulerMetrics:
    """The scheduler's instruments. `max_label_values` bounds queue and type labels
    (labels.py); `prometheus`: a /metrics registry (--metrics-listen), else push only."""

    def __init__(
        self,
        *,
        prometheus: bool = True,
        max_label_values: int = DEFAULT_MAX_VALUES,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        kwargs = {} if environ is None else {"environ": environ}
        self.metering = Metering("jobsched-scheduler", prometheus=prometheus, **kwargs)
        self.queue_label = BoundedValues(max_label_values)
        self.type_label = BoundedValues(max_label_values)
        m = self.metering
        self._submitted = m.counter(
            "jobsched_jobs_submitted",
            "Jobs created on this replica (SubmitJob, SubmitJobs, cron fires).",
            ("queue", "type"),
        )
        self._finished = m.counter(
            "jobsched_jobs_finished",
            "Attempt outcomes recorded on this replica: succeeded, failed (retried later), "
            "dead, cancelled.",
            ("queue", "type", "outcome"),
        )
        self._queue_wait = m.histogram(
            "jobsched_job_queue_wait_seconds",
            "From a job's due time (submit, run_at, end of a retry's backoff) to its claim.",
            ("queue", "type"),
            JOB_BUCKETS,
        )
        self._run = m.histogram(
            "jobsched_job_run_seconds",
            "From an attempt's claim to its outcome, recorded on this replica.",
            ("queue", "type"),
            JOB_BUCKETS,
        )
        self._transaction = m.histogram(
            "jobsched_db_transaction_seconds",
            "Store transactions and single statements that succeeded, by the function that "
            "opened them.",
            ("statement",),
            TRANSACTION_BUCKETS,
        )
        self._handled = m.counter(
            "jobsched_grpc_server_handled",
            "RPCs ended, by full method name and status code.",
            ("method", "code"),
        )
        self._handling = m.histogram(
            "jobsched_grpc_server_handling_seconds",
            "Duration of RPCs, by full method name and status code (streams: how long open).",
            ("method", "code"),
            RPC_BUCKETS,
        )

    def _labels(self, job: JobRecord) -> tuple[str, str]:
        return self.queue_label(job.queue), self.type_label(job.type)

    def jobs_submitted(self, jobs: Iterable[JobRecord]) -> None:
        for job in jobs:
            self._submitted.add(self._labels(job))

    def jobs_started(self, jobs: Iterable[JobRecord], now: datetime) -> None:
        """Claimed attempts: how long each waited since it was due."""
        for job in jobs:
            wait = (now - job.run_at).total_seconds()
            self._queue_wait.record(self._labels(job), max(wait, 0.0))

    def job_finished(self, job: JobRecord, state: JobState) -> None:
        """An attempt's outcome was recorded, leaving the job in `state`."""
        outcome = OUTCOMES.get(state)
        if outcome is None:
            return
        labels = self._labels(job)
        self._finished.add((*labels, outcome))
        if job.started_at is not None:
            run = time.time() - job.started_at.timestamp()
            self._run.record(labels, max(run, 0.0))

    def transaction_ended(self, statement: str, seconds: float) -> None:
        self._transaction.record((statement,), seconds)

    def rpc_ended(self, method: str, code: str, seconds: float) -> None:
        labels = (method, code)
        self._handled.add(labels)
        self._handling.record(labels, seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format (what /metrics serves)."""
        return self.metering.exposition()

    def shutdown(self) -> None:
        """Flush OTLP (bounded); blocking."""
        self.metering.shutdown()
