"""A frozen executor (its stream open, its heartbeats stopped) is detected by its heartbeats: after
two intervals of silence it gets no assignments (another executor takes the work), and after
heartbeat_timeout its stream ends with UNAVAILABLE, so its attempts take the lost-stream path."""

from __future__ import annotations

import time
from datetime import timedelta

import grpc

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, ended, serving, state_of, submit

HEARTBEAT = 0.2
TIMEOUT = timedelta(seconds=1.2)


async def test_a_silent_executor_gets_no_work_and_its_stream_ends_after_the_timeout(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, heartbeat_interval=HEARTBEAT, heartbeat_timeout=TIMEOUT) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        # First connected, so first in every round: it would get the work if it had credits.
        frozen = await connect(channel, executors, "frozen", 4, heartbeats=True)
        healthy = await connect(channel, executors, "healthy", 4, heartbeats=True)
        frozen.heartbeating = False
        silent_since = time.monotonic()

        async def silenced() -> None:
            assert server.dispatcher.sessions["frozen"].credits == 0

        await assert_eventually(silenced)
        # Two intervals after its last heartbeat, which went out at most one before it fell
        # silent.
        assert time.monotonic() - silent_since >= HEARTBEAT
        job_ids = await submit(stub, 4)
        for _ in job_ids:
            assignment = await healthy.next("assignment")
            healthy.send(result=pb.JobResult(attempt=assignment.attempt, result=b"done"))
        for job_id in job_ids:
            assert (await state_of(stub, job_id)).executor == "healthy"
        assert frozen.incoming["assignment"].empty()

        error = await ended(frozen)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - silent_since >= TIMEOUT.total_seconds() - HEARTBEAT
        assert "frozen" not in server.dispatcher.sessions
        # The healthy one, heartbeating all along, keeps its stream and its work.
        [more] = await submit(stub, 1)
        assert (await healthy.next("assignment")).attempt.job_id == more
        assert (await state_of(stub, more)).state == job_pb2.JOB_STATE_RUNNING


async def test_the_attempts_of_a_silent_executor_take_the_lost_stream_path(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(
            db,
            heartbeat_interval=HEARTBEAT,
            heartbeat_timeout=TIMEOUT,
            reconnect_grace=timedelta(seconds=0.3),
        ) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        frozen = await connect(channel, executors, "frozen", 1, heartbeats=True)
        await frozen.next("assignment")

        async def acknowledged() -> None:
            assert job_id not in server.dispatcher.sessions["frozen"].unacked

        await assert_eventually(acknowledged)
        frozen.heartbeating = False

        async def failed() -> None:
            job = await state_of(stub, job_id)
            assert job.state == job_pb2.JOB_STATE_SCHEDULED
            assert job.last_error == "executor disconnected"

        await assert_eventually(failed, within=10)
        assert (await ended(frozen)).code() == grpc.StatusCode.UNAVAILABLE
