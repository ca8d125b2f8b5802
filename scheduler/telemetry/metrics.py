"""The scheduler's counters and histograms, in a registry of its own (one per SchedulerServer,
so that replicas in one process never mix), exported in the Prometheus text format.

    jobsched_jobs_submitted_total{queue,type}              jobs created (SubmitJob(s), cron)
    jobsched_jobs_finished_total{queue,type,outcome}       attempts' outcomes recorded here:
        succeeded, failed (retried later), dead (no attempt left or not retryable), cancelled
    jobsched_grpc_server_handled_total{method,code}        RPCs ended, by full method and code
    jobsched_grpc_server_handling_seconds{method,code}     their duration (histogram)

The gauges (leader, executors, slots, pool, queue depth) are read when scraped (gauges.py).

prometheus_client rather than the OpenTelemetry SDK with its Prometheus exporter: the exporter
(opentelemetry-exporter-prometheus) is a pre-release package that registers itself in
prometheus_client's process-global registry (two replicas in one process would report each
other's series), and it is not available from the package index this project installs from.
The hooks are these few methods, so that an OTLP exporter can sit behind them later."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.registry import Collector

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


class SchedulerMetrics:
    """The registry and its instruments. `max_label_values` bounds queue and type labels
    (labels.py)."""

    def __init__(self, max_label_values: int = DEFAULT_MAX_VALUES) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queue_label = BoundedValues(max_label_values)
        self.type_label = BoundedValues(max_label_values)
        self._submitted = Counter(
            "jobsched_jobs_submitted",
            "Jobs created on this replica (SubmitJob, SubmitJobs, cron fires).",
            ["queue", "type"],
            registry=self.registry,
        )
        self._finished = Counter(
            "jobsched_jobs_finished",
            "Attempt outcomes recorded on this replica: succeeded, failed (retried later), "
            "dead, cancelled.",
            ["queue", "type", "outcome"],
            registry=self.registry,
        )
        self._handled = Counter(
            "jobsched_grpc_server_handled",
            "RPCs ended, by full method name and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self._handling = Histogram(
            "jobsched_grpc_server_handling_seconds",
            "Duration of RPCs, by full method name and status code (streams: how long open).",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        # Children by label values: skips prometheus_client's lookup (a lock and a tuple
        # check) on the per-RPC path. Methods are the registered ones, codes a fixed set.
        self._rpc_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def jobs_submitted(self, jobs: Iterable[JobRecord]) -> None:
        for job in jobs:
            self._submitted.labels(self.queue_label(job.queue), self.type_label(job.type)).inc()

    def job_finished(self, job: JobRecord, state: JobState) -> None:
        """An attempt's outcome was recorded, leaving the job in `state`."""
        outcome = OUTCOMES.get(state)
        if outcome is not None:
            self._finished.labels(
                self.queue_label(job.queue), self.type_label(job.type), outcome
            ).inc()

    def rpc_ended(self, method: str, code: str, seconds: float) -> None:
        children = self._rpc_children.get((method, code))
        if children is None:
            children = self._rpc_children[(method, code)] = (
                self._handled.labels(method, code),
                self._handling.labels(method, code),
            )
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (what /metrics serves)."""
        return generate_latest(self.registry)
