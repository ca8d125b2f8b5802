"""Hand-backs are bounded: an assignment that is never acknowledged is reverted without burning an
attempt, but a job handed back more than `max_releases` times ends DEAD with an error saying why,
and a reverted job goes to another executor with free slots before the one that failed to
acknowledge it."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
from sqlalchemy import text

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, serving, state_of, submit

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

ACK_TIMEOUT = timedelta(seconds=0.2)


async def test_a_job_never_acknowledged_ends_dead_past_the_release_limit(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, ack_timeout=ACK_TIMEOUT, max_releases=3) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        # The only executor: it gets the job back each time (nobody else could take it).
        await connect(channel, executors, "silent", 1, auto_ack=False)

        async def dead() -> None:
            assert (await state_of(stub, job_id)).state == job_pb2.JOB_STATE_DEAD

        await assert_eventually(dead, within=10)
        job = await state_of(stub, job_id)
        assert job.last_error == (
            "handed back 4 times without running (ack timeouts or releases); limit 3"
        )
        assert job.attempt == 4
        assert job.max_attempts == 6  # three reverts did not burn attempts; the fourth ended it
        response = await stub.GetJobStatus(
            job_service_pb2.GetJobStatusRequest(id=job_id, include_events=True)
        )
        left = [e for e in response.events if e.from_state == job_pb2.JOB_STATE_RUNNING]
        assert [e.to_state for e in left] == [job_pb2.JOB_STATE_QUEUED] * 3 + [
            job_pb2.JOB_STATE_DEAD
        ]
        assert left[-1].reason == f"dead: {job.last_error}"
        async with db.read() as conn:
            releases = await conn.scalar(
                text("SELECT releases FROM jobs WHERE id = :id"), {"id": job_id}
            )
        assert releases == 4


async def test_a_reverted_job_goes_to_another_executor_with_free_slots(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, ack_timeout=ACK_TIMEOUT, poll_interval=3600) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        silent = await connect(channel, executors, "silent", 1, auto_ack=False)
        first = await silent.next("assignment")
        assert first.attempt.job_id == job_id
        # Connected after the claim; the silent one is ahead of it in every round.
        other = await connect(channel, executors, "other", 1)
        second = await other.next("assignment")
        assert second.attempt.job_id == job_id
        assert second.attempt.attempt == 2
        other.send(result=pb.JobResult(attempt=second.attempt, result=b"done"))
        assert (await other.next("result_ack")).accepted
        assert silent.incoming["assignment"].empty()
        job = await state_of(stub, job_id)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED
        assert job.executor == "other"
