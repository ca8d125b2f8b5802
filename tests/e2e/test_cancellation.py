"""Cancelling a RUNNING job through a real executor: a handler that ignores `ctx.cancelled` is
interrupted (asyncio.CancelledError) once the executor's `cancel_grace` has passed, and a handler
that honours it stops at once; either way the job ends CANCELLED."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import pytest

from executor.handlers import HandlerRegistry, JobCancelledError, JobContext
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.helpers import assert_eventually

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

S = job_pb2.JobState
GRACE = 0.5


@dataclass
class Observed:
    """What the test learns from inside the handler, with loop times."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    context: JobContext | None = None
    cancel_seen_at: float | None = None  # when ctx.cancelled was set (watched by the test)
    interrupted_at: float | None = None  # when the handler got asyncio.CancelledError


def now() -> float:
    return asyncio.get_running_loop().time()


async def stubborn(observed: Observed, ctx: JobContext) -> bytes:
    """Never looks at ctx.cancelled."""
    observed.context = ctx
    observed.started.set()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        observed.interrupted_at = now()
        raise
    return b"finished anyway"


async def cooperative(observed: Observed, ctx: JobContext) -> bytes:
    """Stops as soon as ctx.cancelled is set."""
    observed.context = ctx
    observed.started.set()
    try:
        await ctx.cancelled.wait()
    except asyncio.CancelledError:
        observed.interrupted_at = now()
        raise
    raise JobCancelledError()


Start = Callable[[Callable[[Observed, JobContext], Awaitable[bytes]], float], Awaitable[Observed]]


@pytest.fixture
async def start_executor(scheduler: SchedulerServer) -> AsyncIterator[Start]:
    """Start an executor whose only handler (type `work`) is `handler`, with `cancel_grace`."""
    executors: list[Executor] = []

    async def start(
        handler: Callable[[Observed, JobContext], Awaitable[bytes]], cancel_grace: float
    ) -> Observed:
        observed = Observed()

        async def run(ctx: JobContext) -> bytes:
            return await handler(observed, ctx)

        executor = Executor(
            [scheduler.address],
            name="canceller",
            capacity=1,
            registry=HandlerRegistry({"work": run}),
            cancel_grace=cancel_grace,
        )
        executors.append(executor)
        await executor.start()
        await executor.wait_registered()
        return observed

    yield start
    for executor in executors:
        await executor.stop(grace=1.0)


async def run_and_cancel(stub: Stub, observed: Observed) -> tuple[float, job_pb2.Job]:
    """Submit a job, cancel it once its handler runs; return when CancelJob was called and the
    job once it is CANCELLED."""
    job = (
        await stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="work")))
    ).job
    async with asyncio.timeout(10):
        await observed.started.wait()
    assert observed.context is not None
    context = observed.context

    async def note_cancel_seen() -> None:
        await context.cancelled.wait()
        observed.cancel_seen_at = now()

    noting = asyncio.create_task(note_cancel_seen())
    cancelled_at = now()
    response = await stub.CancelJob(job_service_pb2.CancelJobRequest(id=job.id))
    assert response.job.state == S.JOB_STATE_RUNNING
    assert response.job.cancel_requested

    async def ended_cancelled() -> job_pb2.Job:
        got = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job.id))).job
        assert got.state == S.JOB_STATE_CANCELLED
        return got

    final = await assert_eventually(ended_cancelled, within=10)
    await asyncio.wait_for(noting, 1)
    return cancelled_at, final


async def test_a_handler_that_ignores_cancellation_is_interrupted_after_the_grace(
    start_executor: Start, channel: grpc.aio.Channel
) -> None:
    observed = await start_executor(stubborn, GRACE)
    cancelled_at, job = await run_and_cancel(job_service_pb2_grpc.JobServiceStub(channel), observed)

    assert job.state == S.JOB_STATE_CANCELLED
    assert job.attempt == 1  # the cancelled attempt is not retried
    assert observed.interrupted_at is not None, "the handler was never interrupted"
    assert observed.cancel_seen_at is not None
    # call_later may fire up to one clock tick early.
    assert observed.interrupted_at - observed.cancel_seen_at >= GRACE - 0.01
    assert observed.interrupted_at - cancelled_at >= GRACE - 0.01
    assert observed.interrupted_at - observed.cancel_seen_at < GRACE + 2.0


async def test_a_handler_that_honours_cancellation_stops_at_once(
    start_executor: Start, channel: grpc.aio.Channel
) -> None:
    # A long grace: the job can only end quickly if the handler stopped by itself.
    grace = 30.0
    observed = await start_executor(cooperative, grace)
    cancelled_at, job = await run_and_cancel(job_service_pb2_grpc.JobServiceStub(channel), observed)

    assert job.state == S.JOB_STATE_CANCELLED
    assert observed.interrupted_at is None  # it returned by itself, never cancelled
    assert now() - cancelled_at < 5.0
