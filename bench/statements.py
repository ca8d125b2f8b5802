"""6b. Statements sent to PostgreSQL, counted by a wire-protocol proxy between one scheduler
replica and the server (bench/statement_proxy.py): per second while the replica idles (alone,
so it is the leader and runs the leader-only loops too), then per SubmitJobs call and per job
run, then per second while long jobs run (their heartbeats; and the lease renewals, each a row
update, seen by reading the leases every LEASE_POLL seconds). The proxy sits in the benchmark
process, so nothing here is timed: these are counts.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import grpc

from bench import targets
from bench.console import progress
from bench.dataset import clear_jobs
from bench.in_process import HOLD_TYPE, START_TYPE, Holder, StartRecorder, running_executor
from bench.scheduler_process import running_scheduler
from bench.settings import Sizes
from bench.statement_proxy import StatementCounts, StatementProxy
from bench.stats import Figures
from executor.handlers import HandlerRegistry
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

# After the replica listens: leader election, the first presence report and the first rounds of
# every loop are start-up, not idling.
SETTLE_SECONDS = 3.0
RUN_TIMEOUT = 120.0
BREAKDOWN_LINES = 8
STATEMENT_CHARS = 150


def breakdown(counts: StatementCounts, per: float, unit: str) -> str:
    return "; ".join(
        f"{n / per:.2f}{unit} `{text[:STATEMENT_CHARS]}`" for text, n in counts.top(BREAKDOWN_LINES)
    )


async def _wait_until_finished(conn: asyncpg.Connection, jobs: int) -> None:
    async with asyncio.timeout(RUN_TIMEOUT):
        while True:
            if await conn.fetchval("SELECT count(finished_at) FROM jobs") >= jobs:
                return
            await asyncio.sleep(0.1)


LEASE_POLL = 0.5  # seconds; a lease is renewed at most once per heartbeat (3 s)
_LEASES = "SELECT id, lease_expires_at FROM jobs WHERE state = 'running'"


async def _count_renewals(conn: asyncpg.Connection, seconds: float) -> int:
    """Lease renewals of the RUNNING jobs over `seconds`: changes of lease_expires_at between
    reads LEASE_POLL apart."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    seen = {row[0]: row[1] for row in await conn.fetch(_LEASES)}
    renewals = 0
    while loop.time() < end:
        await asyncio.sleep(min(LEASE_POLL, max(0.0, end - loop.time())))
        for job_id, lease in await conn.fetch(_LEASES):
            if job_id in seen and seen[job_id] != lease:
                renewals += 1
            seen[job_id] = lease
    return renewals


async def measure_statements(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    """Returns notes: the most frequent statements of each case."""
    jobs = sizes.statement_jobs  # one SubmitJobs call, then run by an in-process executor
    idle = f"Idle scheduler replica (alone, so leader), {sizes.idle_seconds:.0f} s"
    cost = f"Statements per job through the proxy ({jobs:,} no-op jobs, untimed)"
    await clear_jobs(conn)
    progress(idle)
    proxy = StatementProxy(database_url)
    counts = proxy.counts
    recorder = StartRecorder()
    registry = HandlerRegistry({START_TYPE: recorder.handler})
    async with proxy.serving() as proxied_url, running_scheduler(proxied_url) as scheduler:
        await asyncio.sleep(SETTLE_SECONDS)
        counts.reset()
        cpu_before = scheduler.cpu_seconds()
        await asyncio.sleep(sizes.idle_seconds)
        seconds = sizes.idle_seconds
        cpu = scheduler.cpu_seconds() - cpu_before
        figures.add(
            idle,
            "statements sent",
            "statements/s",
            counts.statements / seconds,
            targets.IDLE_STATEMENTS_PER_S,
        )
        figures.add(
            idle,
            "transactions (BEGIN blocks + autocommit)",
            "transactions/s",
            counts.transactions / seconds,
        )
        figures.add(idle, "scheduler CPU", "% of a core", 100 * cpu / seconds)
        notes = [
            "Idle replica, statements per second (each simple Query and each Execute, BEGIN and "
            f"COMMIT included), most frequent first: {breakdown(counts, seconds, '/s')}"
        ]

        progress(cost)
        async with grpc.aio.insecure_channel(scheduler.address) as channel:
            stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
            counts.reset()
            await stub.SubmitJobs(
                job_service_pb2.SubmitJobsRequest(
                    jobs=[job_pb2.JobSpec(type=START_TYPE) for _ in range(jobs)]
                )
            )
            figures.add(cost, "statements per SubmitJobs call", "statements", counts.statements)
            figures.add(
                cost, "transactions per SubmitJobs call", "transactions", counts.transactions
            )
            counts.reset()
            async with running_executor(
                scheduler.address, registry, name="bench-cost", capacity=sizes.executor_capacity
            ):
                await _wait_until_finished(conn, jobs)
            figures.add(cost, "statements per job run", "statements/job", counts.statements / jobs)
            figures.add(
                cost,
                "transactions per job run",
                "transactions/job",
                counts.transactions / jobs,
            )
            notes.append(
                "Running no-op jobs (an in-process executor of capacity "
                f"{sizes.executor_capacity}), statements per job, most frequent first: "
                f"{breakdown(counts, jobs, '')}"
            )
            notes.append(await _held(conn, stub, scheduler.address, counts, sizes, figures))
    await clear_jobs(conn)
    return notes


async def _held(
    conn: asyncpg.Connection,
    stub: JobServiceAsyncStub,
    address: str,
    counts: StatementCounts,
    sizes: Sizes,
    figures: Figures,
) -> str:
    """Long jobs running (default heartbeat and lease): what keeping them costs the store."""
    name = f"{sizes.held_jobs} long jobs running, {sizes.held_seconds:.0f} s (untimed)"
    progress(name)
    holder = Holder()
    registry = HandlerRegistry({HOLD_TYPE: holder.handler})
    async with running_executor(address, registry, name="bench-held", capacity=sizes.held_jobs):
        await stub.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(
                jobs=[job_pb2.JobSpec(type=HOLD_TYPE) for _ in range(sizes.held_jobs)]
            )
        )
        async with asyncio.timeout(RUN_TIMEOUT):
            await holder.wait_running(sizes.held_jobs)
        counts.reset()
        seconds = sizes.held_seconds
        renewals = await _count_renewals(conn, seconds)
        figures.add(name, "statements sent", "statements/s", counts.statements / seconds)
        figures.add(name, "lease renewals (row updates)", "rows/s", renewals / seconds)
        note = (
            f"{name}, statements per second, most frequent first: "
            f"{breakdown(counts, seconds, '/s')}"
        )
        holder.release.set()
    return note
