"""The executor sends a job's progress when the handler reports it (not on a tick), at most once
per progress_interval per job: a report inside the interval is held, replaced by later ones, and
the latest goes out when the interval ends or the job does."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from executor.handlers import HandlerRegistry, JobContext
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer


async def test_progress_goes_out_when_reported_then_at_most_once_per_interval(
    scheduler: SchedulerServer, channel: grpc.aio.Channel
) -> None:
    first_seen = asyncio.Event()

    async def handler(ctx: JobContext) -> Any:
        ctx.progress(10, step="first")
        await first_seen.wait()
        # Inside the interval (an hour here): held, and 20 is replaced by 30.
        ctx.progress(20, step="second")
        ctx.progress(30, step="third")
        return None

    registry = HandlerRegistry({"steps": handler})
    # A tick of an hour: anything seen during the test went out when it was reported.
    executor = Executor(
        [scheduler.address], name="e", capacity=1, registry=registry, progress_interval=3600
    )
    await executor.start()
    try:
        await executor.wait_registered()
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job_id = (
            await stub.SubmitJob(
                job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="steps"))
            )
        ).job.id
        watch = stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id))
        seen: list[tuple[float, str]] = []
        async with asyncio.timeout(15):
            async for item in watch:
                if item.WhichOneof("item") == "progress":
                    seen.append((item.progress.percent, item.progress.step))
                    first_seen.set()
                elif item.WhichOneof("item") == "snapshot" and item.snapshot.progress.step:
                    seen.append((item.snapshot.progress.percent, item.snapshot.progress.step))
                    first_seen.set()
        assert seen[0] == (10.0, "first")
        # The held report went out with the result, as its latest value.
        assert seen[-1] == (30.0, "third")
        assert (20.0, "second") not in seen
        final = (await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))).job
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED
    finally:
        await executor.stop(grace=1.0)
