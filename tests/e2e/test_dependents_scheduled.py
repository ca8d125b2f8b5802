"""A dependent whose run_at is still ahead when its last dependency succeeds becomes SCHEDULED
through the dependency trigger, which no dispatcher timer knows of: the trigger's
`jobsched_work` 'scheduled' signal makes every replica promote, and the job starts at its
run_at, not at the next safety poll (an hour here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from executor.handlers import builtin_registry
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import serving


async def test_a_dependent_scheduled_by_the_trigger_starts_at_its_run_at(db: Database) -> None:
    async with serving(db, poll_interval=3600) as server:
        executor = Executor([server.address], name="e", capacity=4, registry=builtin_registry())
        await executor.start()
        try:
            await executor.wait_registered()
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = job_service_pb2_grpc.JobServiceStub(channel)
                run_at = Timestamp()
                run_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=1.5))
                response = await stub.SubmitJobs(
                    job_service_pb2.SubmitJobsRequest(
                        jobs=[
                            job_pb2.JobSpec(type="noop", ref="first"),
                            job_pb2.JobSpec(type="noop", depends_on_refs=["first"], run_at=run_at),
                        ]
                    )
                )
                first, later = (job.id for job in response.jobs)

                async def state(job_id: str) -> job_pb2.Job:
                    request = job_service_pb2.GetJobStatusRequest(id=job_id)
                    return (await stub.GetJobStatus(request)).job

                async def first_done_later_scheduled() -> None:
                    assert (await state(first)).state == job_pb2.JOB_STATE_SUCCEEDED
                    assert (await state(later)).state == job_pb2.JOB_STATE_SCHEDULED

                await assert_eventually(first_done_later_scheduled, within=5)

                async def later_done() -> job_pb2.Job:
                    job = await state(later)
                    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
                    return job

                job = await assert_eventually(later_done, within=5)
                started = job.start_time.ToDatetime(tzinfo=UTC)
                due = run_at.ToDatetime(tzinfo=UTC)
                assert due <= started < due + timedelta(seconds=1)
        finally:
            await executor.stop(grace=1.0)
