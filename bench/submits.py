"""2. Submit throughput: SubmitJobs in batches, and SubmitJob one job per call from concurrent
callers (with its latency). No executor is connected: the jobs stay QUEUED and are cleared
before the next measurement."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import grpc

from bench import targets
from bench.console import progress
from bench.dataset import clear_jobs
from bench.scheduler_process import running_scheduler
from bench.settings import Sizes
from bench.stats import Figures, percentile
from bench.workloads import submit_in_batches, submit_one_by_one, warm_up
from jobsched.v1 import job_service_pb2_grpc

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub


async def measure_submits(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> None:
    await clear_jobs(conn)
    batch_name = f"SubmitJobs: {sizes.batch_jobs:,} jobs in batches of {sizes.batch_size:,}"
    single_name = (
        f"SubmitJob: {sizes.single_jobs:,} calls from {sizes.single_callers} concurrent callers"
    )
    async with (
        running_scheduler(database_url) as scheduler,
        grpc.aio.insecure_channel(scheduler.address) as channel,
    ):
        stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
        progress("SubmitJobs / SubmitJob: warming up")
        await warm_up(stub, sizes.single_callers)
        for repetition in range(1, sizes.repetitions + 1):
            progress(f"{batch_name} (run {repetition}/{sizes.repetitions})")
            batches = await submit_in_batches(stub, sizes.batch_jobs, sizes.batch_size)
            figures.add(
                batch_name,
                "throughput",
                "jobs/s",
                batches.items_per_second,
                targets.SUBMIT_BATCH_JOBS_PER_S,
            )
            progress(f"{single_name} (run {repetition}/{sizes.repetitions})")
            single = await submit_one_by_one(stub, sizes.single_jobs, sizes.single_callers)
            figures.add(single_name, "throughput", "jobs/s", single.calls_per_second)
            figures.add(single_name, "latency p50", "ms", percentile(single.samples_ms, 50))
            figures.add(single_name, "latency p99", "ms", percentile(single.samples_ms, 99))
    await clear_jobs(conn)
