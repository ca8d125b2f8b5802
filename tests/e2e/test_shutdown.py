"""Graceful shutdown of an executor: it stops taking work at once, lets running jobs finish
within the grace, and hands back the rest, requeued without burning an attempt."""

from __future__ import annotations

import asyncio

import grpc

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.helpers import assert_eventually
from tests.scripted import state_of


async def test_a_stopping_executor_finishes_what_it_can_and_hands_back_the_rest(
    scheduler: SchedulerServer, channel: grpc.aio.Channel
) -> None:
    finish_quick = asyncio.Event()
    stuck_cancelled = asyncio.Event()

    async def quick(ctx: JobContext) -> str:
        await finish_quick.wait()
        return "quick done"

    async def stuck(ctx: JobContext) -> str:
        try:
            await asyncio.Event().wait()  # ignores ctx.cancelled
        except asyncio.CancelledError:
            stuck_cancelled.set()
            raise
        return "never"

    registry = builtin_registry(extra=[("quick", quick), ("stuck", stuck)])
    executor = Executor(
        [scheduler.address], name="leaving", capacity=3, registry=registry, cancel_grace=0.2
    )
    await executor.start()
    await executor.wait_registered()
    stub = job_service_pb2_grpc.JobServiceStub(channel)

    async def submit(job_type: str) -> str:
        request = job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type=job_type))
        return str((await stub.SubmitJob(request)).job.id)

    quick_id, stuck_id = await submit("quick"), await submit("stuck")

    async def both_running() -> None:
        assert {key[0] for key in executor.running} == {quick_id, stuck_id}

    await assert_eventually(both_running)
    stopping = asyncio.create_task(executor.stop(grace=1.0))

    async def draining() -> None:
        session = scheduler.dispatcher.sessions.get("leaving")
        assert session is not None
        assert session.draining

    await assert_eventually(draining)
    # It has a free slot, but it is leaving: a new job is not given to it.
    later_id = await submit("noop")
    finish_quick.set()
    await stopping

    quick_job = await state_of(stub, quick_id)
    assert quick_job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert stuck_cancelled.is_set()
    stuck_job = await state_of(stub, stuck_id)
    assert stuck_job.state == job_pb2.JOB_STATE_QUEUED
    assert stuck_job.attempt == 1
    assert stuck_job.max_attempts == 4  # handed back: the attempt is not burned
    assert stuck_job.last_error == ""
    response = await stub.GetJobStatus(
        job_service_pb2.GetJobStatusRequest(id=stuck_id, include_events=True)
    )
    assert response.events[-1].reason == "released by its executor (shutting down)"
    later = await state_of(stub, later_id)
    assert later.state == job_pb2.JOB_STATE_QUEUED
    assert later.attempt == 0
