"""9. Command-job overhead: submit to exit of `true`, one job at a time (closed loop, so no
queueing enters it), against a scheduler process and an in-process executor whose `command`
handler (executor/command.py) allows /usr/bin/* and /bin/*.

Three job kinds side by side: a no-op handler (the scheduler's and the stream's share), the
`command` job `["true"]` (plus a working directory, a process group, the pipes, the group check
and the removal), and the same command with resource limits (plus the `python -I -S` wrapper
that sets them). Each sample is SubmitJob sent to the handler's return, on this process's
clock; the handler's own time is reported too.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import asyncpg
import grpc

from bench.console import progress
from bench.dataset import clear_jobs
from bench.in_process import running_executor
from bench.scheduler_process import running_scheduler
from bench.settings import Sizes
from bench.stats import Figures, percentile
from executor.command import CommandHandler, CommandSettings
from executor.handlers import AsyncHandler, HandlerRegistry, HandlerResult, JobContext
from executor.processes import Limits
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

JOBS = {"full": 300, "quick": 40}
WARM_UP_JOBS = 10
JOB_TIMEOUT = 30.0
ALLOW = ("/usr/bin/*", "/bin/*")


class Timed:
    """Wraps an async handler: notes time.time() when it starts and returns, by job id."""

    def __init__(self, handler: AsyncHandler) -> None:
        self.inner = handler
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def __call__(self, ctx: JobContext) -> HandlerResult:
        self.started[ctx.job_id] = time.time()
        try:
            return await self.inner(ctx)
        finally:
            self.ended[ctx.job_id] = time.time()
            self.changed.set()

    async def wait_for(self, job_id: str) -> None:
        while job_id not in self.ended:
            self.changed.clear()
            await self.changed.wait()


async def _noop(ctx: JobContext) -> None:
    return None


KINDS = [
    ("no-op handler", "bench.noop", b"{}"),
    ("command true", "command", json.dumps({"argv": ["true"]}).encode()),
    ("command true with rlimits", "bench.limited", json.dumps({"argv": ["true"]}).encode()),
]


async def _run_one(stub: JobServiceAsyncStub, timed: Timed, job_type: str, payload: bytes) -> float:
    sent = time.time()
    response = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type=job_type, payload=payload))
    )
    job_id = response.job.id
    async with asyncio.timeout(JOB_TIMEOUT):
        await timed.wait_for(job_id)
    return (timed.ended[job_id] - sent) * 1000


async def measure_command_overhead(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    count = JOBS.get(sizes.mode, JOBS["quick"])
    name = f"Command jobs: submit to exit, {count} jobs one at a time, in-process executor"
    await clear_jobs(conn)
    timers = {
        "bench.noop": Timed(_noop),
        "command": Timed(CommandHandler(CommandSettings(allow=ALLOW))),
        "bench.limited": Timed(
            CommandHandler(CommandSettings(allow=ALLOW, limits=Limits(files=1024)))
        ),
    }
    registry = HandlerRegistry(dict(timers))
    async with (
        running_scheduler(database_url) as scheduler,
        grpc.aio.insecure_channel(scheduler.address) as channel,
        running_executor(scheduler.address, registry, name="bench-command", capacity=4),
    ):
        stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)
        for _, job_type, payload in KINDS:
            for _ in range(WARM_UP_JOBS):
                await _run_one(stub, timers[job_type], job_type, payload)
        for repetition in range(1, sizes.repetitions + 1):
            progress(f"{name} (run {repetition}/{sizes.repetitions})")
            for label, job_type, payload in KINDS:
                timed = timers[job_type]
                timed.started.clear()
                timed.ended.clear()
                total = [await _run_one(stub, timed, job_type, payload) for _ in range(count)]
                inside = [(timed.ended[j] - timed.started[j]) * 1000 for j in timed.ended]
                figures.add(name, f"{label}: submit to exit p50", "ms", percentile(total, 50))
                figures.add(name, f"{label}: submit to exit p99", "ms", percentile(total, 99))
                figures.add(name, f"{label}: in the handler p50", "ms", percentile(inside, 50))
    await clear_jobs(conn)
    return [
        "Command jobs: the difference between `command true` and the no-op handler is the "
        "command's own cost (working directory, spawn in a new session, pipes, group check, "
        "removal); `with rlimits` adds the python -I -S wrapper that sets them"
    ]
