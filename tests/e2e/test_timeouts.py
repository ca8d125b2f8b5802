"""Execution timeouts enforced by the executor: at the job's timeout the handler is asked to stop
(ctx.cancelled), one that ignores it is stopped after the cancel grace, and the attempt fails as
"timed out" (then retried, or DEAD after the last attempt). The scheduler's backstop for an
executor that does not stop it is tested in test_cluster.py."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from executor.handlers import JobCancelledError, JobContext, builtin_registry
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.helpers import assert_eventually
from tests.scripted import state_of


@pytest.mark.parametrize("cooperative", [True, False])
async def test_a_job_past_its_timeout_is_stopped_and_fails_as_timed_out(
    scheduler: SchedulerServer, channel: grpc.aio.Channel, cooperative: bool
) -> None:
    stopped: list[float] = []
    interrupted = asyncio.Event()

    async def slow(ctx: JobContext) -> None:
        started = time.monotonic()
        try:
            if cooperative:
                await ctx.cancelled.wait()
                stopped.append(time.monotonic() - started)
                raise JobCancelledError()
            await asyncio.sleep(60)  # ignores ctx.cancelled
        except asyncio.CancelledError:
            stopped.append(time.monotonic() - started)
            interrupted.set()
            raise

    executor = Executor(
        [scheduler.address],
        name="timer",
        capacity=1,
        registry=builtin_registry(extra=[("slow", slow)]),
        cancel_grace=0.3,
    )
    await executor.start()
    try:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        timeout = Duration()
        timeout.FromTimedelta(timedelta(seconds=0.3))
        job = (
            await stub.SubmitJob(
                job_service_pb2.SubmitJobRequest(
                    job=job_pb2.JobSpec(type="slow", timeout=timeout, max_attempts=1)
                )
            )
        ).job

        async def dead() -> None:
            current = await state_of(stub, job.id)
            assert current.state == job_pb2.JOB_STATE_DEAD
            assert current.last_error == "timed out after 0.3s"

        await assert_eventually(dead, within=10)
        [after] = stopped
        if cooperative:
            assert after >= 0.3  # asked at the timeout, and it stopped on its own
            assert not interrupted.is_set()
        else:
            assert after >= 0.3 + 0.3  # interrupted only after the cancel grace
            assert interrupted.is_set()
    finally:
        await executor.stop(grace=1.0)
