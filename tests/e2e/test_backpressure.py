"""Subscribers that never read hold up nobody, and cost the scheduler bounded memory.

The scheduler runs as a subprocess (`python -m scheduler`) so that its resident memory can be read
from /proc. Several WatchJob and WatchJobs streams are opened and then never read while an
in-test executor runs thousands of jobs with large rows (labels) and one job that reports large
progress all the time; one WatchJob subscriber does read. The changes owed to the stalled
subscribers add up to several times the memory bound, so a scheduler that queued them per
subscriber would fail the bound; ours keeps one wake-up per WatchJob stream and a bounded set of
job ids per WatchJobs stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import text

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

S = job_pb2.JobState
MIB = 1024 * 1024

NOOP_JOBS = 1500
# 32 labels of 256 characters: every job row a WatchJobs subscriber is owed is about 9 KB.
LABELS = {f"label-{i:02d}": chr(ord("a") + i % 26) * 256 for i in range(32)}
STALLED_WATCH_JOBS = 10
STALLED_WATCH_JOB = 4
RSS_GROWTH_LIMIT = 50 * MIB
# From the progress job's handler returning to the reading subscriber seeing SUCCEEDED. Without
# stalled subscribers this is tens of milliseconds (a result round trip and one store read).
TERMINAL_LATENCY_LIMIT = 2.0
STARTUP_TIMEOUT = 30.0
# Without BDP probing the client keeps HTTP/2 stream windows at their initial 64 KiB, so a stream
# it does not read is stalled at once; with it, the client would buffer megabytes per stream
# itself (and the scheduler would simply have sent them).
STALLED_CHANNEL_OPTIONS = [("grpc.http2.bdp_probe", 0)]


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0); the test samples VmRSS as well."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Scheduler:
    process: asyncio.subprocess.Process
    address: str

    @property
    def pid(self) -> int:
        return self.process.pid


@pytest.fixture
async def scheduler_process(database_url: str, tmp_path: Path) -> AsyncIterator[Scheduler]:
    """`python -m scheduler` on a free port, against the test's (already migrated) database."""
    log_path = tmp_path / "scheduler.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scheduler", "--listen", "127.0.0.1:0",
            "--database-url", database_url, "--no-migrate",
            stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    async def listening() -> str:
        assert process.returncode is None, log_path.read_text()
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == "scheduler.listening":
                    return str(record["address"])
        raise AssertionError("not listening yet")

    try:
        address = await assert_eventually(listening, within=STARTUP_TIMEOUT, interval=0.05)
        yield Scheduler(process, address)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


@dataclass
class ProgressJob:
    """A handler that reports 1000-character progress every few milliseconds until released."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    reports: int = 0
    returned_at: float = 0.0

    async def handler(self, ctx: JobContext) -> bytes:
        padding = "p" * 990
        while not self.release.is_set():
            self.reports += 1
            ctx.progress(self.reports % 100, step=f"{self.reports:08d}" + padding, message=padding)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 0.005)
        self.returned_at = time.monotonic()
        return b"done"


@dataclass
class Reader:
    """A WatchJob subscriber that reads everything, noting when each item arrived."""

    items: list[tuple[float, job_service_pb2.WatchJobResponse]] = field(default_factory=list)

    async def follow(self, stub: Stub, job_id: str) -> None:
        async for item in stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id)):
            self.items.append((time.monotonic(), item))


async def test_subscribers_that_never_read_block_nobody_and_memory_stays_bounded(
    scheduler_process: Scheduler, db: Database
) -> None:
    pid = scheduler_process.pid
    progress_job = ProgressJob()
    stalled: list[Any] = []
    executor: Executor | None = None
    async with (
        grpc.aio.insecure_channel(scheduler_process.address) as channel,
        grpc.aio.insecure_channel(
            scheduler_process.address, options=STALLED_CHANNEL_OPTIONS
        ) as stalled_channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        stalled_stub = job_service_pb2_grpc.JobServiceStub(stalled_channel)
        try:
            # The work, queued before any executor exists; the progress job is claimed first.
            chatty = (
                await stub.SubmitJob(
                    job_service_pb2.SubmitJobRequest(
                        job=job_pb2.JobSpec(type="chatty", priority=100, labels=LABELS)
                    )
                )
            ).job
            for _ in range(NOOP_JOBS // 250):
                await stub.SubmitJobs(
                    job_service_pb2.SubmitJobsRequest(
                        jobs=[job_pb2.JobSpec(type="noop", labels=LABELS)] * 250
                    )
                )

            # Subscribers that read their first item (so they are registered), then never again.
            for _ in range(STALLED_WATCH_JOBS):
                many = stalled_stub.WatchJobs(job_service_pb2.WatchJobsRequest())
                stalled.append(many)
                first = await many.read()
                assert isinstance(first, job_service_pb2.WatchJobsResponse)
                assert first.subscribed
            for _ in range(STALLED_WATCH_JOB):
                one = stalled_stub.WatchJob(job_service_pb2.WatchJobRequest(id=chatty.id))
                stalled.append(one)
                snapshot = await one.read()
                assert isinstance(snapshot, job_service_pb2.WatchJobResponse)
                assert snapshot.WhichOneof("item") == "snapshot"
            reader = Reader()
            reading = asyncio.create_task(reader.follow(stub, chatty.id))
            await assert_eventually(_has_items(reader))

            baseline = rss_kib(pid) * 1024
            reset_peak_rss(pid)
            peak = baseline
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, rss_kib(pid) * 1024)
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            began = time.monotonic()
            executor = Executor(
                [scheduler_process.address],
                name="flood",
                capacity=64,
                registry=builtin_registry([("chatty", progress_job.handler)]),
            )
            await executor.start()

            async def all_noop_jobs_succeeded() -> None:
                async with db.read() as conn:
                    done = await conn.scalar(
                        text(
                            "SELECT count(*) FROM jobs WHERE type = 'noop' AND state = 'succeeded'"
                        )
                    )
                assert done == NOOP_JOBS

            await assert_eventually(all_noop_jobs_succeeded, within=25, interval=0.1)
            flood_seconds = time.monotonic() - began
            progress_job.release.set()
            async with asyncio.timeout(TERMINAL_LATENCY_LIMIT + 5):
                await reading
            sampling = False
            await sampler
            peak = max(peak, rss_kib(pid, "VmHWM") * 1024, rss_kib(pid) * 1024)

            # The reading subscriber got every transition, in order, and the end promptly.
            items = [item for _, item in reader.items]
            assert items[0].WhichOneof("item") == "snapshot"
            assert items[0].snapshot.state == S.JOB_STATE_QUEUED
            events = [i for i in items if i.WhichOneof("item") == "event"]
            assert [e.event.to_state for e in events] == [
                S.JOB_STATE_RUNNING,
                S.JOB_STATE_SUCCEEDED,
            ]
            assert [e.sequence for e in events] == [2, 3]
            history = (
                await stub.GetJobStatus(
                    job_service_pb2.GetJobStatusRequest(id=chatty.id, include_events=True)
                )
            ).events
            assert [e.event for e in events] == list(history[1:])
            progress_items = [i for i in items if i.WhichOneof("item") == "progress"]
            # Progress kept arriving during the whole flood (it is written every 0.5 s).
            arrivals = [at for at, i in reader.items if i.WhichOneof("item") == "progress"]
            assert arrivals[0] - began < 3.0
            assert max(b - a for a, b in itertools.pairwise(arrivals)) < 3.0
            terminal_latency = reader.items[-1][0] - progress_job.returned_at
            assert 0 < terminal_latency < TERMINAL_LATENCY_LIMIT, terminal_latency

            # Every job of the executor succeeded, once.
            async with db.read() as conn:
                result = await conn.execute(text("SELECT state, count(*) FROM jobs GROUP BY state"))
                states = {str(state): int(count) for state, count in result}
                transitions = await conn.scalar(
                    text(
                        "SELECT count(*) FROM job_events WHERE to_state IN ('running', 'succeeded')"
                    )
                )
            assert states == {"succeeded": NOOP_JOBS + 1}
            assert transitions == 2 * (NOOP_JOBS + 1)

            # What the stalled subscribers were owed: each WatchJobs stream the current row of
            # every job at each transition and progress change, each WatchJob stream every
            # progress item. Rows are measured as the API serialises them (the smallest one).
            page = await stub.GetJobHistory(job_service_pb2.GetJobHistoryRequest(page_size=100))
            row_bytes = min(job.ByteSize() for job in page.jobs)
            progress_bytes = sum(i.ByteSize() for i in progress_items)
            owed = (
                STALLED_WATCH_JOBS
                * (transitions * row_bytes + len(progress_items) * (row_bytes + 2000))
                + STALLED_WATCH_JOB * progress_bytes
            )
            growth = peak - baseline
            print(
                f"\nflood of {NOOP_JOBS} jobs: {flood_seconds:.1f} s; terminal latency "
                f"{terminal_latency * 1000:.0f} ms; {len(progress_items)} progress items "
                f"({progress_job.reports} reports); row {row_bytes} B; owed to stalled "
                f"subscribers {owed / MIB:.0f} MiB; scheduler RSS {baseline / MIB:.1f} MiB -> "
                f"peak {peak / MIB:.1f} MiB (+{growth / MIB:.1f} MiB)"
            )
            assert owed > 4 * RSS_GROWTH_LIMIT, owed
            assert growth < RSS_GROWTH_LIMIT, growth

            # Stalled subscribers that go away, with changes still in flight, take nothing down.
            for call in stalled:
                call.cancel()

            async def still_serving() -> None:
                assert scheduler_process.process.returncode is None, "the scheduler died"
                got = await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=chatty.id))
                assert got.job.state == S.JOB_STATE_SUCCEEDED

            await assert_eventually(_gone(stalled_stub), within=5)
            await still_serving()
        finally:
            for call in stalled:
                call.cancel()
            if executor is not None:
                await executor.stop(grace=1.0)


def _gone(stalled_stub: Stub) -> Any:
    """A fresh call on the stalled subscribers' channel works: their cancellations are through."""

    async def check() -> None:
        call = stalled_stub.WatchJobs(job_service_pb2.WatchJobsRequest())
        try:
            first = await asyncio.wait_for(call.read(), 2)
            assert isinstance(first, job_service_pb2.WatchJobsResponse)
            assert first.subscribed
        finally:
            call.cancel()

    return check


def _has_items(reader: Reader) -> Any:
    async def check() -> None:
        assert reader.items, "the reading subscriber has not had its snapshot yet"

    return check
