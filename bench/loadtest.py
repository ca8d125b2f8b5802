"""`python -m bench.loadtest [--minutes M]` (`make loadtest`): the load-test matrix of issue 20.

One scheduler and two executor processes (no-op jobs, capacity 100 each) on a throw-away
PostgreSQL. First the machine's capacity C is measured (jobs/s finished while a deep queue
drains), then four phases of `--minutes` each, submits issued open-loop (on a fixed schedule,
whatever the responses do) as SubmitJobs batches of 10:

- baseline: 0.2 C; 2x: 0.4 C; 5x: 1.0 C (saturation);
- burst: 2 C for the first 10 s, then the baseline rate: the queue the burst leaves must drain.

Every second: jobs submitted, submit errors, jobs finished, queue depth (QUEUED), the
enqueue-to-start latency of the jobs started in that second (started_at - created_at, both
written by the scheduler), and CPU and memory of every process. The report (bench/LOADTEST.md,
with PNG charts in bench/loadtest/) judges each phase: no acknowledged job lost, < 1 % submit
errors; after the burst, the queue back to its baseline depth and the p99 back within 2x the
baseline's within DRAIN_BOUND seconds."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import grpc

from bench.console import progress
from bench.cpu import postmaster_pid, server_cpu_seconds
from bench.dataset import clear_jobs
from bench.postgres import asyncpg_dsn, provisioned_database
from bench.scheduler_process import Process, running_executors, running_scheduler
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

BATCH = 10
EXECUTORS = 2
CAPACITY = 100
CAPACITY_JOBS = 20_000
BURST_SECONDS = 10.0
DRAIN_BOUND = 60.0  # seconds after the burst for depth and latency to return to baseline
PHASES = (("baseline", 0.2), ("2x", 0.4), ("5x", 1.0), ("burst", 2.0))


@dataclass(slots=True)
class Second:
    at: float  # seconds since the phase started
    submitted: int = 0
    errors: int = 0
    finished: int = 0
    depth: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core, by process
    rss_mb: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Phase:
    name: str
    rate: float  # offered jobs/s (the burst's first 10 s: twice that of the rest)
    seconds: list[Second] = field(default_factory=list)
    acknowledged: int = 0
    lost: int = 0
    errors: int = 0
    drained_in: float | None = None  # burst only


_PER_SECOND = """
SELECT count(*) FILTER (WHERE state = 'queued') AS depth,
       count(*) FILTER (WHERE finished_at >= $1 AND finished_at < $2) AS finished,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
           ORDER BY EXTRACT(EPOCH FROM started_at - created_at) * 1000)
           FILTER (WHERE started_at >= $1 AND started_at < $2) AS latency
FROM jobs
"""


async def _submitter(
    stub: JobServiceAsyncStub,
    rate_at: Callable[[float], float],
    seconds: float,
    acknowledged: list[str],
    counts: dict[str, int],
) -> None:
    """Open-loop SubmitJobs batches: the k-th batch at the time the rate says."""
    spec = job_pb2.JobSpec(type="noop", payload=b"{}")
    request = job_service_pb2.SubmitJobsRequest(jobs=[spec] * BATCH)

    async def submit() -> None:
        try:
            response = await stub.SubmitJobs(request, timeout=10)
            acknowledged.extend(j.id for j in response.jobs)
            counts["submitted"] += BATCH
        except grpc.aio.AioRpcError:
            counts["errors"] += BATCH

    loop = asyncio.get_running_loop()
    start = loop.time()
    due = 0.0
    async with asyncio.TaskGroup() as group:
        while due < seconds:
            delay = start + due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(submit())
            due += BATCH / rate_at(due)


async def _sample(
    conn: asyncpg.Connection,
    processes: dict[str, Process],
    postmaster: int | None,
    phase: Phase,
    counts: dict[str, int],
    stop: asyncio.Event,
) -> None:
    started = time.time()
    last_cpu = {name: p.cpu_seconds() for name, p in processes.items()}
    last_pg = server_cpu_seconds(postmaster) if postmaster else 0.0
    last_counts = dict(counts)
    tick = 1
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=started + tick - time.time())
        window_end = started + tick
        row = await conn.fetchrow(
            _PER_SECOND,
            _ts(window_end - 1),
            _ts(window_end),
        )
        assert row is not None
        latency = row["latency"] or [None, None, None]
        second = Second(
            at=float(tick),
            submitted=counts["submitted"] - last_counts["submitted"],
            errors=counts["errors"] - last_counts["errors"],
            finished=int(row["finished"]),
            depth=int(row["depth"]),
            p50_ms=latency[0],
            p95_ms=latency[1],
            p99_ms=latency[2],
        )
        for name, process in processes.items():
            cpu = process.cpu_seconds()
            second.cpu[name] = 100 * (cpu - last_cpu[name])
            second.rss_mb[name] = process.rss_mb()
            last_cpu[name] = cpu
        if postmaster:
            pg = server_cpu_seconds(postmaster)
            second.cpu["postgresql"] = 100 * (pg - last_pg)
            last_pg = pg
        last_counts = dict(counts)
        phase.seconds.append(second)
        tick += 1


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def _all_finished(conn: asyncpg.Connection, within: float) -> None:
    async with asyncio.timeout(within):
        while await conn.fetchval(  # noqa: ASYNC110 (a database poll)
            "SELECT count(*) FROM jobs WHERE finished_at IS NULL"
        ):
            await asyncio.sleep(0.5)


async def _capacity(stub: JobServiceAsyncStub, conn: asyncpg.Connection) -> float:
    """Jobs/s finished from a deep queue: the machine's capacity C."""
    await clear_jobs(conn)
    spec = job_pb2.JobSpec(type="noop", payload=b"{}")
    for _ in range(CAPACITY_JOBS // 1_000):
        await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(jobs=[spec] * 1_000))
    await _all_finished(conn, within=600)
    seconds = await conn.fetchval(
        "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(started_at)) FROM jobs"
    )
    return CAPACITY_JOBS / float(seconds)


async def _run_phase(
    name: str,
    rate: float,
    minutes: float,
    stub: JobServiceAsyncStub,
    conn: asyncpg.Connection,
    sampling: asyncpg.Connection,
    processes: dict[str, Process],
    postmaster: int | None,
    baseline_rate: float,
) -> Phase:
    await clear_jobs(conn)
    phase = Phase(name, rate)
    acknowledged: list[str] = []
    counts = {"submitted": 0, "errors": 0}
    seconds = minutes * 60

    def rate_at(t: float) -> float:
        if name == "burst":
            return rate if t < BURST_SECONDS else baseline_rate
        return rate

    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(sampling, processes, postmaster, phase, counts, stop))
    await _submitter(stub, rate_at, seconds, acknowledged, counts)
    # Let what was submitted finish (bounded), still sampling.
    await _all_finished(conn, within=max(DRAIN_BOUND, 120))
    stop.set()
    await sampler
    phase.acknowledged = len(acknowledged)
    phase.errors = counts["errors"]
    stored = await conn.fetchval(
        "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'succeeded'",
        acknowledged,
    )
    phase.lost = len(acknowledged) - int(stored)
    return phase


def drain_time(burst: Phase, baseline: Phase) -> float | None:
    """Seconds after the burst's end until depth and p99 are back at the baseline's level."""
    base_depth = max((s.depth for s in baseline.seconds), default=0)
    p99s = [s.p99_ms for s in baseline.seconds if s.p99_ms is not None]
    base_p99 = sorted(p99s)[len(p99s) // 2] if p99s else None
    for s in burst.seconds:
        if s.at <= BURST_SECONDS:
            continue
        deep = s.depth > max(2 * base_depth, 2 * BATCH)
        slow = base_p99 is not None and s.p99_ms is not None and s.p99_ms > 2 * base_p99
        if not deep and not slow:
            return s.at - BURST_SECONDS
    return None


def load_test(minutes: float) -> tuple[float, list[Phase], str]:
    with provisioned_database() as database:  # outside the event loop (it runs its own)
        return asyncio.run(_matrix(database.url, minutes, database.origin))


async def _matrix(url: str, minutes: float, origin: str) -> tuple[float, list[Phase], str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    sampling = await asyncpg.connect(asyncpg_dsn(url))  # the per-second reads, alongside
    try:
        async with (
            running_scheduler(url) as scheduler,
            running_executors([scheduler.address], EXECUTORS, CAPACITY) as executors,
            grpc.aio.insecure_channel(scheduler.address) as channel,
        ):
            stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
            processes: dict[str, Process] = {"scheduler": scheduler}
            processes.update({f"executor-{i}": e for i, e in enumerate(executors)})
            postmaster = await postmaster_pid(conn)
            progress("load test: measuring capacity")
            capacity = await _capacity(stub, conn)
            progress(f"load test: capacity {capacity:,.0f} jobs/s")
            phases: list[Phase] = []
            for name, share in PHASES:
                progress(f"load test: {name} at {share * capacity:,.0f} jobs/s")
                phases.append(
                    await _run_phase(
                        name,
                        share * capacity,
                        minutes,
                        stub,
                        conn,
                        sampling,
                        processes,
                        postmaster,
                        PHASES[0][1] * capacity,
                    )
                )
            phases[-1].drained_in = drain_time(phases[-1], phases[0])
    finally:
        await conn.close()
        await sampling.close()
    return capacity, phases, origin


def main(argv: list[str] | None = None) -> int:
    from bench.loadtest_report import write_report

    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__)
    parser.add_argument("--minutes", type=float, default=1.0, help="minutes per phase")
    parser.add_argument("--no-record", action="store_true", help="print, do not append")
    args = parser.parse_args(argv)
    started = time.monotonic()
    capacity, phases, origin = load_test(args.minutes)
    passed = write_report(
        capacity, phases, origin, args.minutes, time.monotonic() - started, args.no_record
    )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
