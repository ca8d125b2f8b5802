"""1. End-to-end throughput: no-op jobs submitted in batches while no executor is connected, then
run by `python -m executor` processes; jobs per second from the first claim (min started_at) to
the last result (max finished_at), from the job rows. 6a. The database commits it costs per job.

A run ends when every job has finished or after `Sizes.throughput_cap_seconds`, whichever comes
first (at the issue's 10,000 jobs/s, 20,000 jobs take 2 s; today they would take minutes): the
queue stays deep either way, and the rate counts the jobs finished by then. A capped run
SIGKILLs its executors, so that no hand-back of their running jobs is counted as work.

Every run starts from an empty jobs table with fresh scheduler processes, and reads
pg_stat_database.xact_commit before they start and after they (and the executors) have stopped,
so the count is complete at once (bench/commits.py). It therefore also holds the 20 SubmitJobs
transactions and the schedulers' start and stop, a few dozen commits over 20,000 jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc

from bench import profiling, targets
from bench.commits import CommitCounter, autovacuum_paused
from bench.console import progress
from bench.cpu import CpuWindow, postmaster_pid
from bench.dataset import clear_jobs
from bench.postgres import BenchDatabase, asyncpg_dsn
from bench.scheduler_process import running_executors, running_schedulers
from bench.settings import Sizes
from bench.stats import Figures
from bench.workloads import submit_in_batches
from jobsched.v1 import job_service_pb2_grpc

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

SUBMIT_BATCH = 1_000
POLL_SECONDS = 0.25
START_TIMEOUT = 60.0

_FINISHED = "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL"
_CLAIMED = "SELECT EXISTS (SELECT FROM jobs WHERE started_at IS NOT NULL)"
_OUTCOME = """
SELECT count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       count(finished_at) AS finished,
       EXTRACT(EPOCH FROM max(finished_at) - min(started_at)) AS seconds
FROM jobs
"""


@dataclass(frozen=True, slots=True)
class Topology:
    replicas: int
    executors: int

    def describe(self, jobs: int, capacity: int) -> str:
        replicas = "1 scheduler" if self.replicas == 1 else f"{self.replicas} scheduler replicas"
        executors = "1 executor" if self.executors == 1 else f"{self.executors} executors"
        spread = " (spread evenly)" if self.replicas > 1 else ""
        return f"Throughput: {jobs:,} no-op jobs, {replicas}, {executors}{spread} of capacity {capacity}"


TOPOLOGIES = (Topology(1, 1), Topology(1, 4), Topology(2, 4))


@dataclass(frozen=True, slots=True)
class Run:
    finished: int
    jobs_per_second: float
    commits_per_job: float
    # CPU time per job finished from the first claim to the end of the run, in ms
    scheduler_ms: float  # all replicas together
    executor_ms: float  # all executors together
    postgres_ms: float | None  # None when the server's processes are not visible here
    machine_cpu: float  # whole machine, % of one core (200 = both cores of this machine)
    profiles: list[str]


async def _wait_until_finished(
    conn: asyncpg.Connection, jobs: int, cap: float
) -> tuple[int, int, bool]:
    """Polls until every job has finished or `cap` seconds have passed. Returns how many
    statements that took, how many jobs had finished and whether the cap ended it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cap
    polls = 0
    while True:
        finished = int(await conn.fetchval(_FINISHED))
        polls += 1
        if finished >= jobs:
            return polls, finished, False
        if loop.time() > deadline:
            return polls, finished, True
        await asyncio.sleep(POLL_SECONDS)


async def _wait_for_first_claim(conn: asyncpg.Connection) -> int:
    """Polls until an executor has been given a job (they take a second to start); returns how
    many statements that took."""
    async with asyncio.timeout(START_TIMEOUT):
        polls = 1
        while not await conn.fetchval(_CLAIMED):
            await asyncio.sleep(0.02)
            polls += 1
        return polls


@dataclass(frozen=True, slots=True)
class Setup:
    """How the processes of a run are started (bench/telemetry_overhead.py varies it)."""

    scheduler_args: Sequence[str] = ()
    executor_args: Sequence[str] = ()
    env: Mapping[str, str] | None = None  # more environment variables for both
    submit_batch: int = SUBMIT_BATCH


async def run_once(
    database: BenchDatabase,
    counter: CommitCounter,
    topology: Topology,
    sizes: Sizes,
    profile_dir: Path | None = None,
    setup: Setup = Setup(),
) -> Run:
    """One run; with `profile_dir`, py-spy records the (first) scheduler and executor."""
    jobs = sizes.throughput_jobs
    await clear_jobs(counter.conn)
    postmaster = await postmaster_pid(counter.conn)
    before = await counter.read()
    poll = await asyncpg.connect(asyncpg_dsn(database.url))
    recordings: list[profiling.Recording] = []
    try:
        async with running_schedulers(
            database.url, topology.replicas, extra_args=setup.scheduler_args, env=setup.env
        ) as schedulers:
            async with grpc.aio.insecure_channel(schedulers[0].address) as channel:
                stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
                await submit_in_batches(stub, jobs, setup.submit_batch)
            addresses = [s.address for s in schedulers]
            async with running_executors(
                addresses,
                topology.executors,
                sizes.executor_capacity,
                extra_args=setup.executor_args,
                env=setup.env,
            ) as executors:
                # CPU is counted from the first claim on: executor start-up is not per-job work.
                polls = await _wait_for_first_claim(poll)
                cpu = CpuWindow([*schedulers, *executors], postgres=postmaster)
                finished_before = int(await poll.fetchval(_FINISHED))
                if profile_dir is not None:
                    cap = sizes.throughput_cap_seconds
                    recordings = [
                        profiling.record("throughput-scheduler", schedulers[0], profile_dir, cap),
                        profiling.record("throughput-executor", executors[0], profile_dir, cap),
                    ]
                done, finished_after, capped = await _wait_until_finished(
                    poll, jobs, sizes.throughput_cap_seconds
                )
                shares = cpu.read()
                polls += 1 + done
                in_window = max(1, finished_after - finished_before)
                if capped:
                    for executor in executors:
                        executor.process.kill()
        outcome = await poll.fetchrow(_OUTCOME)
        polls += 1
    finally:
        await poll.close()
        await profiling.finish(recordings)
    finished = int(outcome["finished"])
    if outcome["succeeded"] != finished or finished == 0:
        raise RuntimeError(f"{outcome['succeeded']} of {finished} finished jobs succeeded")
    commits = await counter.others_since(before, own_statements=polls)

    def per_job_ms(share: float) -> float:
        return share / 100 * shares.seconds * 1000 / in_window

    return Run(
        finished=finished,
        jobs_per_second=finished / float(outcome["seconds"]),
        commits_per_job=commits / finished,
        scheduler_ms=per_job_ms(sum(shares.processes[: topology.replicas])),
        executor_ms=per_job_ms(sum(shares.processes[topology.replicas :])),
        postgres_ms=per_job_ms(shares.postgres) if shares.postgres is not None else None,
        machine_cpu=shares.machine,
        profiles=[profiling.summary(r) for r in recordings],
    )


async def measure_throughput(
    database: BenchDatabase,
    conn: asyncpg.Connection,
    sizes: Sizes,
    figures: Figures,
    profile_dir: Path | None = None,
) -> list[str]:
    """Returns notes: the profile summaries, with `profile_dir` (first run of 1 + 1 only)."""
    notes: list[str] = []
    counter = CommitCounter(conn)
    await counter.calibrate()
    async with autovacuum_paused(conn):
        for topology in TOPOLOGIES:
            name = topology.describe(sizes.throughput_jobs, sizes.executor_capacity)
            single = topology == TOPOLOGIES[0]
            for repetition in range(1, sizes.repetitions + 1):
                progress(f"{name} (run {repetition}/{sizes.repetitions})")
                profile = profile_dir if single and repetition == 1 else None
                run = await run_once(database, counter, topology, sizes, profile)
                notes += [f"py-spy during {name}, run 1: {p}" for p in run.profiles if p]
                figures.add(
                    name,
                    "first claim to last result",
                    "jobs/s",
                    run.jobs_per_second,
                    targets.THROUGHPUT_JOBS_PER_S if single else None,
                )
                figures.add(
                    name,
                    "DB commits per job (xact_commit)",
                    "commits/job",
                    run.commits_per_job,
                    targets.COMMITS_PER_JOB if single else None,
                )
                figures.add(name, "CPU per job: scheduler process(es)", "ms", run.scheduler_ms)
                figures.add(name, "CPU per job: executor process(es)", "ms", run.executor_ms)
                if run.postgres_ms is not None:
                    figures.add(name, "CPU per job: PostgreSQL server", "ms", run.postgres_ms)
                figures.add(name, "CPU busy, whole machine", "% of a core", run.machine_cpu)
                figures.add(name, "jobs finished in the run", "jobs", run.finished)
    return notes
