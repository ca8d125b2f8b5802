"""An acknowledged attempt that the executor's heartbeats leave out (it no longer runs it) for
heartbeat_timeout is failed as retryable, and the executor is told to stop it; attempts it lists,
and one whose result arrived, are left alone."""

from __future__ import annotations

import time
from datetime import timedelta

import grpc

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, serving, state_of, submit

HEARTBEAT = 0.2
TIMEOUT = timedelta(seconds=1.0)


async def test_an_attempt_missing_from_the_heartbeats_is_failed_and_cancelled(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, heartbeat_interval=HEARTBEAT, heartbeat_timeout=TIMEOUT) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        executor = await connect(channel, executors, "forgetful", 2, heartbeats=True)
        forgotten_id, kept_id = await submit(stub, 2)
        assignments = {}
        for _ in range(2):
            a = await executor.next("assignment")
            assignments[a.attempt.job_id] = a

        async def acknowledged() -> None:
            assert not server.dispatcher.sessions["forgetful"].unacked

        await assert_eventually(acknowledged)
        executor.omit.add(forgotten_id)
        omitted_at = time.monotonic()

        cancel = await executor.next("cancel", within=10)
        assert cancel.attempt == assignments[forgotten_id].attempt
        assert time.monotonic() - omitted_at >= TIMEOUT.total_seconds()
        job = await state_of(stub, forgotten_id)
        assert job.state == job_pb2.JOB_STATE_SCHEDULED  # retryable: attempt 2 after backoff
        assert job.last_error == "the executor no longer runs it"
        response = await stub.GetJobStatus(
            job_service_pb2.GetJobStatusRequest(id=forgotten_id, include_events=True)
        )
        assert response.events[-1].actor == "scheduler"

        # The one it lists runs on, and its result is recorded.
        assert (await state_of(stub, kept_id)).state == job_pb2.JOB_STATE_RUNNING
        executor.send(result=pb.JobResult(attempt=assignments[kept_id].attempt, result=b"ok"))
        assert (await executor.next("result_ack")).accepted
        assert (await state_of(stub, kept_id)).state == job_pb2.JOB_STATE_SUCCEEDED
