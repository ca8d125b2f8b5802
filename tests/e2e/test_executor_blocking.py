"""A handler that blocks its event loop (time.sleep inside `async def`) does not stop the
executor's stream: heartbeats go on, so its job's lease holds and the job runs exactly once, and
the executor logs a warning naming the job.

The executor runs on an application's own loop in another thread, as it would in its own
process: the scheduler under test runs on the test's loop, which a blocked handler must not
stall either."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import serving

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

T = TypeVar("T")
LEASE = timedelta(seconds=2)
HEARTBEAT = 0.3


class ApplicationLoop:
    """An event loop on its own thread, standing for the application that embeds an executor."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="application loop")
        self.thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the application's loop; wait for it from the caller's."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def test_a_handler_blocking_its_loop_past_the_lease_runs_once_and_is_named(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.executor")
    blocking_for = LEASE.total_seconds() * 2

    async def blocks(ctx: JobContext) -> str:
        time.sleep(blocking_for)  # noqa: ASYNC251 (the mistake under test)
        return "woke up"

    registry = builtin_registry(extra=[("blocks", blocks)])
    application = ApplicationLoop()
    try:
        async with (
            serving(db, lease=LEASE, heartbeat_interval=HEARTBEAT, leader_tick=0.1) as server,
            grpc.aio.insecure_channel(server.address) as channel,
        ):
            executor = Executor([server.address], name="blocker", capacity=1, registry=registry)

            async def start() -> None:
                await executor.start()
                await executor.wait_registered()

            await application.run(start())
            try:
                stub = job_service_pb2_grpc.JobServiceStub(channel)
                job_id = (
                    await stub.SubmitJob(
                        job_service_pb2.SubmitJobRequest(
                            job=job_pb2.JobSpec(type="blocks", max_attempts=3)
                        )
                    )
                ).job.id

                async def first_attempt_over() -> job_pb2.Job:
                    job = (
                        await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job_id))
                    ).job
                    assert job.attempt > 1 or job.state in (
                        job_pb2.JOB_STATE_SUCCEEDED,
                        job_pb2.JOB_STATE_DEAD,
                        job_pb2.JOB_STATE_SCHEDULED,
                    ), job_pb2.JobState.Name(job.state)
                    return job

                job = await assert_eventually(first_attempt_over, within=blocking_for + 10)
                history = (
                    await stub.GetJobStatus(
                        job_service_pb2.GetJobStatusRequest(id=job_id, include_events=True)
                    )
                ).events
                reasons = [e.reason for e in history]
                assert not [r for r in reasons if "lease expired" in r], reasons
                assert job.state == job_pb2.JOB_STATE_SUCCEEDED, reasons
                assert job.attempt == 1  # ran exactly once
                assert job.result == b"woke up"
            finally:
                await application.run(executor.stop(grace=1.0))
    finally:
        application.close()

    warnings = [
        r
        for r in caplog.records
        if getattr(r, "fields", {}).get("event") == "executor.loop_blocked"
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one per blocking episode
    [warning] = warnings
    assert warning.levelno == logging.WARNING
    assert warning.fields["job_id"] == job_id  # type: ignore[attr-defined]
    assert warning.fields["attempt"] == 1  # type: ignore[attr-defined]
    assert warning.fields["blocked_for"] >= 1.0  # type: ignore[attr-defined]
    assert job_id in warning.getMessage()
