"""`python -m bench [--quick]`: measure the client API of a scheduler running in a subprocess.

1. SubmitJobs throughput (batches), 2. SubmitJob throughput and latency (concurrent callers),
3. GetJobStatus latency, 4. ListActiveJobs latency on the first and a deep page, 5. database
commits per submitted job, 6. the scheduler's memory. Every measurement is repeated and the
median reported; the table is printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc

from bench import report
from bench.commits import CommitCounter, autovacuum_paused
from bench.postgres import BenchDatabase, asyncpg_dsn, provisioned_database
from bench.scheduler_process import LOG_LEVEL, SchedulerProcess, running_scheduler
from bench.settings import FULL, QUICK, Sizes
from bench.stats import Figures, percentile
from bench.workloads import (
    batch_count,
    get_statuses,
    list_page,
    submit_in_batches,
    submit_one_by_one,
    token_for_page,
    warm_up,
)
from jobsched.v1 import job_service_pb2_grpc

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

SEED = 20_240_601


@dataclass(frozen=True, slots=True)
class Outcome:
    figures: Figures
    postgres_version: str
    jobs_stored: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, one repetition (a smoke run)"
    )
    parser.add_argument(
        "--repetitions", type=int, help="override how often each measurement is repeated"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=report.RESULTS_PATH,
        help="the markdown file the results are appended to (default bench/RESULTS.md)",
    )
    parser.add_argument(
        "--no-record", action="store_true", help="print the figures only, append nothing"
    )
    return parser.parse_args(argv)


def chosen_sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    if args.repetitions is not None:
        sizes = dataclasses.replace(sizes, repetitions=max(1, args.repetitions))
    return sizes


def progress(message: str) -> None:
    print(f"bench: {message}", flush=True)


async def measure_batch_submits(
    stub: JobServiceAsyncStub, counter: CommitCounter, sizes: Sizes, figures: Figures
) -> list[str]:
    """1. SubmitJobs throughput, and 5. the database commits it costs per job."""
    name = f"SubmitJobs: {sizes.batch_jobs:,} jobs in batches of {sizes.batch_size:,}"
    progress(f"{name} (waiting for PostgreSQL's statistics to settle around each run)")
    job_ids: list[str] = []
    async with autovacuum_paused(counter.conn):
        await counter.calibrate()
        for _ in range(sizes.repetitions):
            before = await counter.read()
            result = await submit_in_batches(stub, sizes.batch_jobs, sizes.batch_size)
            commits = await counter.since(before)
            job_ids += result.job_ids
            figures.add(name, "throughput", "jobs/s", result.items_per_second)
            figures.add(name, "DB commits per job", "commits/job", commits / len(result.job_ids))
            calls = batch_count(sizes.batch_jobs, sizes.batch_size)
            figures.add(name, "DB commits per SubmitJobs call", "commits/call", commits / calls)
    return job_ids


async def measure_single_submits(stub: JobServiceAsyncStub, sizes: Sizes, figures: Figures) -> None:
    """2. SubmitJob one job per call from concurrent callers."""
    name = f"SubmitJob: {sizes.single_jobs:,} calls from {sizes.single_callers} concurrent callers"
    progress(name)
    for _ in range(sizes.repetitions):
        run = await submit_one_by_one(stub, sizes.single_jobs, sizes.single_callers)
        figures.add(name, "throughput", "jobs/s", run.calls_per_second)
        figures.add(name, "latency p50", "ms", percentile(run.samples_ms, 50))
        figures.add(name, "latency p99", "ms", percentile(run.samples_ms, 99))


async def measure_status_reads(
    stub: JobServiceAsyncStub, job_ids: list[str], sizes: Sizes, figures: Figures
) -> None:
    """3. GetJobStatus latency, one caller, random existing ids."""
    name = f"GetJobStatus: {sizes.status_calls:,} sequential calls on random ids"
    progress(name)
    rng = random.Random(SEED)
    for _ in range(sizes.repetitions):
        run = await get_statuses(stub, job_ids, sizes.status_calls, rng)
        figures.add(name, "latency p50", "ms", percentile(run.samples_ms, 50))
        figures.add(name, "latency p99", "ms", percentile(run.samples_ms, 99))


async def measure_active_lists(stub: JobServiceAsyncStub, sizes: Sizes, figures: Figures) -> None:
    """4. ListActiveJobs latency on the first page and on a deep page (reached by its token)."""
    size, deep = sizes.list_page_size, sizes.deep_page
    first_name = f"ListActiveJobs: page 1 (page_size {size}), {sizes.list_calls} calls"
    deep_name = f"ListActiveJobs: page {deep} (page_size {size}), {sizes.list_calls} calls"
    progress(f"ListActiveJobs: pages 1 and {deep}")
    deep_token = await token_for_page(stub, deep, size)
    for _ in range(sizes.repetitions):
        for name, token in ((first_name, ""), (deep_name, deep_token)):
            run = await list_page(stub, size, token, sizes.list_calls)
            figures.add(name, "latency p50", "ms", percentile(run.samples_ms, 50))
            figures.add(name, "latency p95", "ms", percentile(run.samples_ms, 95))


def record_memory(scheduler: SchedulerProcess, figures: Figures) -> None:
    """6. The scheduler's resident memory after the runs, and its peak."""
    name = "Scheduler process after the runs"
    figures.add(name, "RSS (VmRSS)", "MiB", scheduler.memory_kib("VmRSS") / 1024)
    figures.add(name, "peak RSS (VmHWM)", "MiB", scheduler.memory_kib("VmHWM") / 1024)


async def run_measurements(
    database: BenchDatabase, scheduler: SchedulerProcess, sizes: Sizes
) -> Outcome:
    figures = Figures()
    stats = await asyncpg.connect(asyncpg_dsn(database.url))
    try:
        async with grpc.aio.insecure_channel(scheduler.address) as channel:
            stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
            progress("warming up")
            job_ids = await warm_up(stub, sizes.single_callers)
            job_ids += await measure_batch_submits(stub, CommitCounter(stats), sizes, figures)
            await measure_single_submits(stub, sizes, figures)
            await measure_status_reads(stub, job_ids, sizes, figures)
            await measure_active_lists(stub, sizes, figures)
        record_memory(scheduler, figures)
        version = str(await stats.fetchval("SELECT version()"))
        jobs_stored = int(await stats.fetchval("SELECT count(*) FROM jobs"))
    finally:
        await stats.close()
    return Outcome(figures, version, jobs_stored)


def run_notes(sizes: Sizes, outcome: Outcome, wall_seconds: float) -> list[str]:
    return [
        f"Repetitions: {sizes.repetitions} per measurement; wall time {wall_seconds:.0f} s "
        "(setup, statistics waits and teardown included)",
        f"Scheduler: `python -m scheduler` subprocess, --log-level {LOG_LEVEL} "
        "(one access-log line per RPC, written to a file); client: one grpc.aio channel "
        "in the benchmark process",
        f"Jobs stored at the end: {outcome.jobs_stored:,} (all QUEUED: no executors yet)",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = chosen_sizes(args)
    started, clock = datetime.now(UTC), time.monotonic()
    progress(f"{sizes.mode} mode; starting PostgreSQL and the scheduler")
    with provisioned_database() as database, running_scheduler(database.url) as scheduler:
        outcome = asyncio.run(run_measurements(database, scheduler, sizes))
    context = report.RunContext(
        started=started,
        mode=sizes.mode,
        commit=report.git_commit(),
        command=report.invoked_command(),
        machine=report.machine_description(),
        postgres=outcome.postgres_version,
        database=database.origin,
        notes=run_notes(sizes, outcome, time.monotonic() - clock),
    )
    figures = list(outcome.figures)
    print()
    print(report.terminal_table(figures))
    if not args.no_record:
        report.append_results(report.results_section(context, figures), args.results)
        print(f"\nappended to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
