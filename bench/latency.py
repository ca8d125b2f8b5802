"""3. Enqueue-to-start latency at a steady rate: SubmitJob calls issued open-loop (on a fixed
schedule, whatever the responses do) at `Sizes.start_rate`, and for each job the time from
SubmitJob's response to its handler starting in an in-process executor (capacity 100).

The claim time (the job row's started_at, set by the scheduler's claim) splits it in two:
response to claim (dispatcher wake-up and the claim transaction) and claim to handler start
(the assignment on the stream, the executor's ack and task start). All on this machine's wall
clock (time.time()).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import asyncpg
import grpc

from bench import targets
from bench.console import progress
from bench.dataset import clear_jobs
from bench.in_process import REJECTED, START_TYPE, StartRecorder, running_executor
from bench.scheduler_process import running_scheduler
from bench.settings import Sizes
from bench.stats import Figures, percentile
from executor.handlers import HandlerRegistry
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

WARM_UP_JOBS = 100
START_TIMEOUT = 60.0


async def steady_submits(
    stub: JobServiceAsyncStub, rate: float, count: int
) -> tuple[dict[str, float], float, list[float]]:
    """`count` SubmitJob calls, the k-th issued at k / rate seconds. Returns each job's response
    time (time.time()) by id, the rate achieved in issuing them, and the call latencies (ms)."""
    request = job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type=START_TYPE, payload=b"{}"))
    responses: dict[str, float] = {}
    call_ms: list[float] = []

    async def submit() -> None:
        sent = time.time()
        response = await stub.SubmitJob(request)
        received = time.time()
        responses[response.job.id] = received
        call_ms.append((received - sent) * 1000)

    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.TaskGroup() as group:
        for k in range(count):
            delay = start + k / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(submit())
        issued = loop.time() - start
    return responses, (count - 1) / issued if issued > 0 else float("inf"), call_ms


async def measure_start_latency(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> None:
    count = round(sizes.start_rate * sizes.start_seconds)
    name = (
        f"Enqueue-to-start: SubmitJob at {sizes.start_rate:.0f} jobs/s for "
        f"{sizes.start_seconds:.0f} s, in-process executor (capacity {sizes.executor_capacity})"
    )
    await clear_jobs(conn)
    recorder = StartRecorder()
    registry = HandlerRegistry({START_TYPE: recorder.handler})
    async with (
        running_scheduler(database_url) as scheduler,
        grpc.aio.insecure_channel(scheduler.address) as channel,
        running_executor(
            scheduler.address, registry, name="bench-latency", capacity=sizes.executor_capacity
        ) as events,
    ):
        stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
        warm, _, _ = await steady_submits(stub, sizes.start_rate, WARM_UP_JOBS)
        async with asyncio.timeout(START_TIMEOUT):
            await recorder.wait_for(set(warm))
        for repetition in range(1, sizes.repetitions + 1):
            progress(f"{name} (run {repetition}/{sizes.repetitions})")
            restarts, rejected = recorder.restarts, events.counts[REJECTED]
            responses, achieved, call_ms = await steady_submits(stub, sizes.start_rate, count)
            async with asyncio.timeout(START_TIMEOUT):
                await recorder.wait_for(set(responses))
            claimed = {
                str(r["id"]): r["claimed"]
                for r in await conn.fetch(
                    "SELECT id::text AS id, EXTRACT(EPOCH FROM started_at)::float8 AS claimed "
                    "FROM jobs WHERE id = ANY($1::uuid[])",
                    list(responses),
                )
            }
            total = [(recorder.started[j] - t) * 1000 for j, t in responses.items()]
            to_claim = [(claimed[j] - t) * 1000 for j, t in responses.items()]
            to_handler = [(recorder.started[j] - claimed[j]) * 1000 for j in responses]
            figures.add(name, "offered rate achieved", "jobs/s", achieved)
            figures.add(
                name, "start latency p50", "ms", percentile(total, 50), targets.START_P50_MS
            )
            figures.add(name, "start latency p95", "ms", percentile(total, 95))
            figures.add(
                name, "start latency p99", "ms", percentile(total, 99), targets.START_P99_MS
            )
            figures.add(name, "of which response to claim, p50", "ms", percentile(to_claim, 50))
            figures.add(
                name, "of which claim to handler start, p50", "ms", percentile(to_handler, 50)
            )
            figures.add(name, "SubmitJob call latency p50", "ms", percentile(call_ms, 50))
            # An assignment whose ack the scheduler did not process within its ack timeout is
            # reverted and run again; the first run's result is then refused as stale.
            figures.add(name, "jobs started twice", "jobs", recorder.restarts - restarts)
            figures.add(
                name, "results refused as stale", "results", events.counts[REJECTED] - rejected
            )
    await clear_jobs(conn)
