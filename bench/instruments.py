"""`python -m bench.instruments`: what the metric instruments cost per job, in the scheduler's
own process, for the ways they can be built (issue 17: prometheus_client or the OpenTelemetry
metrics API). No database and no gRPC: only the instrument calls a job causes, timed in a loop,
so the figure is the CPU the instruments add to each job and nothing else.

A job, at saturation, causes on the scheduler: one `jobs_submitted` and one `jobs_finished`
increment, one queue-wait and one run-time observation, and about one store transaction timed
(`db_transaction_seconds`; claims and results are batched, so fewer than one of each per job,
but submits are one each). RPCs are not per job (SubmitJobs and the stream carry many).

    prometheus_client   Counter/Histogram children looked up by label values (the first design)
    otel-sync           OpenTelemetry SDK synchronous instruments: counter.add, histogram.record
    jobsched.metering   what the scheduler uses (jobsched/metering.py): the OpenTelemetry SDK,
                        counters as observable counters over exact in-process tallies (a dict
                        update per event), histograms synchronous (their attribute dicts
                        built once per label set)

Each variant exports through a Prometheus reader in a registry of its own; a scrape at the end
checks that every variant counted the same thing. Compare the figures with the scheduler's CPU
per job (bench/RESULTS.md, throughput: 0.08 to 0.13 ms).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobsched.metering import Metering

QUEUES = ("default", "fast", "reports")
TYPES = ("email.send", "report.build", "noop", "resize")
STATEMENTS = ("JobStore.submit", "Dispatcher.claim", "Dispatcher.record_results")
BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
Job = Callable[[int], None]


def prometheus_client_job(registry: CollectorRegistry) -> Job:
    submitted = Counter("jobsched_jobs_submitted", "", ["queue", "type"], registry=registry)
    finished = Counter(
        "jobsched_jobs_finished", "", ["queue", "type", "outcome"], registry=registry
    )
    wait = Histogram("jobsched_job_queue_wait_seconds", "", ["queue", "type"], registry=registry)
    run = Histogram("jobsched_job_run_seconds", "", ["queue", "type"], registry=registry)
    tx = Histogram("jobsched_db_transaction_seconds", "", ["statement"], registry=registry)

    def job(i: int) -> None:
        queue, type_ = QUEUES[i % 3], TYPES[i % 4]
        submitted.labels(queue, type_).inc()
        wait.labels(queue, type_).observe(0.01)
        run.labels(queue, type_).observe(0.2)
        finished.labels(queue, type_, "succeeded").inc()
        tx.labels(STATEMENTS[i % 3]).observe(0.002)

    return job


def _provider(registry: CollectorRegistry) -> MeterProvider:
    reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    return MeterProvider(metric_readers=[reader])


def otel_sync_job(registry: CollectorRegistry) -> Job:
    meter = _provider(registry).get_meter("bench")
    submitted = meter.create_counter("jobsched_jobs_submitted")
    finished = meter.create_counter("jobsched_jobs_finished")
    wait = meter.create_histogram("jobsched_job_queue_wait_seconds", unit="s")
    run = meter.create_histogram("jobsched_job_run_seconds", unit="s")
    tx = meter.create_histogram("jobsched_db_transaction_seconds", unit="s")

    def job(i: int) -> None:
        labels = {"queue": QUEUES[i % 3], "type": TYPES[i % 4]}
        submitted.add(1, labels)
        wait.record(0.01, labels)
        run.record(0.2, labels)
        finished.add(1, {**labels, "outcome": "succeeded"})
        tx.record(0.002, {"statement": STATEMENTS[i % 3]})

    return job


def metering_job(registry: CollectorRegistry) -> Job:
    """jobsched/metering.py as the scheduler uses it: Tally counters, Timing histograms."""
    metering = Metering("jobsched-bench", prometheus=False, environ={})
    # Its own registry, read like the others: the reader's collector goes into `registry`.
    reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    metering.provider = MeterProvider(metric_readers=[reader])
    metering.meter = metering.provider.get_meter("bench")
    submitted = metering.counter("jobsched_jobs_submitted", "", ("queue", "type"))
    finished = metering.counter("jobsched_jobs_finished", "", ("queue", "type", "outcome"))
    wait = metering.histogram("jobsched_job_queue_wait_seconds", "", ("queue", "type"), BUCKETS)
    run = metering.histogram("jobsched_job_run_seconds", "", ("queue", "type"), BUCKETS)
    tx = metering.histogram("jobsched_db_transaction_seconds", "", ("statement",), BUCKETS)

    def job(i: int) -> None:
        labels = (QUEUES[i % 3], TYPES[i % 4])
        submitted.add(labels)
        wait.record(labels, 0.01)
        run.record(labels, 0.2)
        finished.add((*labels, "succeeded"))
        tx.record((STATEMENTS[i % 3],), 0.002)

    return job


VARIANTS: dict[str, Callable[[CollectorRegistry], Job]] = {
    "prometheus_client": prometheus_client_job,
    "otel-sync": otel_sync_job,
    "jobsched.metering": metering_job,
}


def finished_total(registry: CollectorRegistry) -> float:
    text = generate_latest(registry).decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "jobsched_jobs_finished"
        for s in family.samples
        if s.name == "jobsched_jobs_finished_total"
    )


def time_variant(name: str, jobs: int) -> tuple[float, float]:
    """µs per job over `jobs` jobs, and what a scrape then says was finished."""
    registry = CollectorRegistry(auto_describe=True)
    job = VARIANTS[name](registry)
    for i in range(1000):  # every label set exists before the timed loop
        job(i)
    gc.collect()
    # CPU time of this process, not wall time: on a shared machine the other processes' load
    # must not count as the instruments' cost.
    started = time.process_time()
    for i in range(jobs):
        job(i)
    elapsed = time.process_time() - started
    return elapsed / jobs * 1e6, finished_total(registry)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instruments", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, variants alternated")
    args = parser.parse_args(argv)
    runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:  # alternated, so the machine's drift falls on all alike
            per_job, finished = time_variant(name, args.jobs)
            if finished != args.jobs + 1000:
                raise SystemExit(f"{name}: a scrape counted {finished:g} finished jobs")
            runs[name].append(per_job)
    print(f"instrument CPU per job, µs (median of {args.rounds} rounds of {args.jobs:,} jobs)")
    for name, values in runs.items():
        listed = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:18} {statistics.median(values):6.2f}   ({listed})")


if __name__ == "__main__":
    main()
