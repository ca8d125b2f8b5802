"""7. Scheduler memory (VmRSS) with many executor streams and WatchJob watchers connected, and
what they cost it in CPU while nothing happens. Measured once on a fresh scheduler (a memory
figure does not vary between runs the way a latency does): the executors, then the watchers.

The executors are raw ExecutorService.Connect streams opened by the benchmark process, one
connection each: Register (capacity 1, a job type no job has), then silence — no heartbeat, no
answer. The watchers are WatchJob streams, one connection each, on distinct QUEUED jobs that
nothing runs. Streams the scheduler refuses, drops or has not opened after a while are counted,
not retried: today it cannot serve a thousand watchers (each reads the store every second), so
the RSS at the target's thousand of each is also given extrapolated linearly from the watchers
that did connect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc

from bench import targets
from bench.console import progress
from bench.dataset import clear_jobs
from bench.scheduler_process import SchedulerProcess, running_scheduler
from bench.settings import Sizes
from bench.stats import Figures
from jobsched.v1 import (
    executor_service_pb2,
    executor_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]  # one connection per stream
IDLE_TYPE = "bench.idle"  # what the silent executors take: no job has it
PARKED_TYPE = "bench.parked"  # what the watched jobs are: nothing takes it
WATCHERS_GIVE_UP = 25.0
MEMORY = "Scheduler memory and idle CPU"
OPEN_CONCURRENCY = 50
OPEN_TIMEOUT = 45.0


@dataclass
class _Stream:
    channel: grpc.aio.Channel
    call: grpc.aio.Call


async def _silent_executor(address: str, index: int) -> _Stream:
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        call = stub.Connect()  # written to directly: Register, and nothing after it
        await call.write(
            executor_service_pb2.ConnectRequest(
                register=executor_service_pb2.Register(
                    name=f"bench-silent-{index}", capacity=1, job_types=[IDLE_TYPE]
                )
            )
        )
        first = await call.read()
        if not isinstance(first, executor_service_pb2.ConnectResponse) or not first.HasField(
            "registered"
        ):
            raise RuntimeError(f"silent executor {index} was not registered: {first!r}")
        return _Stream(channel, call)
    except BaseException:
        await channel.close()
        raise


async def _watcher(address: str, job_id: str) -> _Stream:
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        call = stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id))
        first = await call.read()
        if not isinstance(first, job_service_pb2.WatchJobResponse) or not first.HasField(
            "snapshot"
        ):
            raise RuntimeError(f"watcher of {job_id} got no snapshot: {first!r}")
        return _Stream(channel, call)
    except BaseException:
        await channel.close()
        raise


@dataclass
class Opened:
    streams: list[_Stream]
    seconds: float
    failures: collections.Counter[str]


async def _open_all(
    open_one: Callable[[int], Coroutine[Any, Any, _Stream]], count: int, give_up_after: float
) -> Opened:
    """open_one(0..count-1), OPEN_CONCURRENCY at a time (a thousand handshakes at once would
    time out); those refused, failed or not open after `give_up_after` seconds are counted, not
    retried."""
    limit = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def bounded(index: int) -> _Stream:
        async with limit:
            return await open_one(index)

    started = time.monotonic()
    tasks = [asyncio.create_task(bounded(i)) for i in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=give_up_after)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failures: collections.Counter[str] = collections.Counter()
    if pending:
        failures[f"not open after {give_up_after:.0f} s"] = len(pending)
    streams = []
    for task in done:
        exc = task.exception()
        if exc is None:
            streams.append(task.result())
        elif isinstance(exc, grpc.aio.AioRpcError):
            failures[f"{exc.code().name}: {(exc.details() or '')[:120]}"] += 1
        else:
            failures[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
    return Opened(streams, time.monotonic() - started, failures)


async def _close_all(streams: list[_Stream]) -> None:
    for stream in streams:
        stream.call.cancel()
    await asyncio.gather(*(s.channel.close() for s in streams), return_exceptions=True)


@contextlib.asynccontextmanager
async def silent_executors(
    address: str, count: int, give_up_after: float = OPEN_TIMEOUT
) -> AsyncIterator[Opened]:
    opened = await _open_all(lambda i: _silent_executor(address, i), count, give_up_after)
    try:
        yield opened
    finally:
        await _close_all(opened.streams)


@contextlib.asynccontextmanager
async def watchers(address: str, job_ids: list[str], give_up_after: float) -> AsyncIterator[Opened]:
    opened = await _open_all(lambda i: _watcher(address, job_ids[i]), len(job_ids), give_up_after)
    try:
        yield opened
    finally:
        await _close_all(opened.streams)


async def _parked_jobs(address: str, count: int) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
        response = await stub.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(
                jobs=[job_pb2.JobSpec(type=PARKED_TYPE) for _ in range(count)]
            )
        )
        return [job.id for job in response.jobs]


async def settled(scheduler: SchedulerProcess, seconds: float) -> tuple[float, float]:
    """(RSS in MB, CPU in % of a core) after `seconds` of nothing new happening."""
    before = scheduler.cpu_seconds()
    await asyncio.sleep(seconds)
    cpu = 100 * (scheduler.cpu_seconds() - before) / seconds
    return scheduler.rss_mb(), cpu


def failures(what: str, opened: Opened) -> list[str]:
    if not opened.failures:
        return []
    listed = "; ".join(f"{n} x {reason}" for reason, n in opened.failures.most_common())
    return [f"{MEMORY}: {what} that did not stay connected: {listed}"]


async def measure_memory(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    """Returns notes: the streams the scheduler refused or dropped, if any."""
    executors, wanted = sizes.memory_executors, sizes.many_subscribers
    settle = sizes.memory_settle_seconds
    notes: list[str] = []
    await clear_jobs(conn)
    progress(f"{MEMORY}: {executors:,} silent executor streams, then {wanted:,} watchers")
    async with running_scheduler(database_url) as scheduler:
        job_ids = await _parked_jobs(scheduler.address, wanted)
        fresh, cpu = await settled(scheduler, settle)
        figures.add(MEMORY, "RSS, fresh (after one SubmitJobs)", "MB", fresh)
        figures.add(MEMORY, "CPU, fresh and idle", "% of a core", cpu)
        async with silent_executors(scheduler.address, executors) as silent:
            connected = len(silent.streams)
            figures.add(
                MEMORY, f"time to connect {executors:,} executor streams", "s", silent.seconds
            )
            with_executors, cpu = await settled(scheduler, settle)
            figures.add(MEMORY, f"RSS with {connected:,} executor streams", "MB", with_executors)
            figures.add(MEMORY, f"CPU with {connected:,} idle executor streams", "% of a core", cpu)
            notes += failures("executor streams", silent)
            async with watchers(scheduler.address, job_ids, WATCHERS_GIVE_UP) as watching:
                watched = len(watching.streams)
                rss, cpu = await settled(scheduler, settle)
                both = f"{connected:,} executors + {watched:,} watchers"
                figures.add(MEMORY, f"watchers open after {WATCHERS_GIVE_UP:.0f} s", "", watched)
                figures.add(MEMORY, f"RSS with {both}", "MB", rss)
                figures.add(MEMORY, f"CPU with {both}, idle", "% of a core", cpu)
                notes += failures("watchers", watching)
        if connected and watched:
            estimate = fresh + (with_executors - fresh) * executors / connected
            estimate += (rss - with_executors) * wanted / watched
            figures.add(
                MEMORY,
                f"RSS at {executors:,} executors + {wanted:,} watchers (linear from the above)",
                "MB",
                estimate,
                targets.SCHEDULER_RSS_MB,
            )
        figures.add(MEMORY, "peak RSS (VmHWM)", "MB", scheduler.memory_kib("VmHWM") * 1024 / 1e6)
    await clear_jobs(conn)
    return notes
