"""Event-driven wake-ups: a submit on one replica wakes the dispatcher of another (NOTIFY), a
cancel requested on one replica reaches the executor connected to another (NOTIFY, and the
lease renewal as a backstop), and SCHEDULED jobs start at their run_at by timer. Every server
here polls only once a minute, so anything that arrives sooner was event-driven."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.scripted import ScriptedExecutor, connect, serving, state_of, submit

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

SLOW_POLL = 60.0
WITHIN = 5.0  # far below SLOW_POLL, far above any event-driven delay


async def test_a_submit_on_one_replica_wakes_the_dispatcher_of_another(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, poll_interval=SLOW_POLL) as a,
        serving(db, poll_interval=SLOW_POLL) as b,
        grpc.aio.insecure_channel(a.address) as channel_a,
        grpc.aio.insecure_channel(b.address) as channel_b,
    ):
        assert a.notifier is not None
        assert b.notifier is not None
        await a.notifier.connected.wait()
        await b.notifier.connected.wait()
        executor = await connect(channel_b, executors, "on-b", 1)
        # The first dispatch pass (at start) is over once the stream is registered and idle.
        [job_id] = await submit(job_service_pb2_grpc.JobServiceStub(channel_a), 1)
        assignment = await executor.next("assignment", within=WITHIN)
        assert assignment.attempt.job_id == job_id


async def test_a_cancel_on_one_replica_reaches_the_executor_on_another(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, poll_interval=SLOW_POLL, heartbeat_interval=SLOW_POLL) as a,
        serving(db, poll_interval=SLOW_POLL, heartbeat_interval=SLOW_POLL) as b,
        grpc.aio.insecure_channel(a.address) as channel_a,
        grpc.aio.insecure_channel(b.address) as channel_b,
    ):
        assert a.notifier is not None
        assert b.notifier is not None
        await a.notifier.connected.wait()
        await b.notifier.connected.wait()
        stub_b = job_service_pb2_grpc.JobServiceStub(channel_b)
        [job_id] = await submit(stub_b, 1)
        executor = await connect(channel_b, executors, "on-b", 1)
        assignment = await executor.next("assignment")

        stub_a = job_service_pb2_grpc.JobServiceStub(channel_a)
        await stub_a.CancelJob(job_service_pb2.CancelJobRequest(id=job_id))
        cancel = await executor.next("cancel", within=WITHIN)
        assert cancel.attempt == assignment.attempt
        executor.send(result=pb.JobResult(attempt=assignment.attempt, cancelled=True))
        assert (await executor.next("result_ack")).accepted
        assert (await state_of(stub_a, job_id)).state == job_pb2.JOB_STATE_CANCELLED


async def test_without_notify_a_cancel_still_arrives_with_the_next_heartbeat(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, poll_interval=SLOW_POLL, notify=False) as a,
        serving(db, poll_interval=SLOW_POLL, notify=False) as b,
        grpc.aio.insecure_channel(a.address) as channel_a,
        grpc.aio.insecure_channel(b.address) as channel_b,
    ):
        [job_id] = await submit(job_service_pb2_grpc.JobServiceStub(channel_b), 1)
        executor = await connect(channel_b, executors, "on-b", 1)
        assignment = await executor.next("assignment")
        stub_a = job_service_pb2_grpc.JobServiceStub(channel_a)
        await stub_a.CancelJob(job_service_pb2.CancelJobRequest(id=job_id))
        assert executor.incoming["cancel"].empty()

        executor.send(heartbeat=pb.Heartbeat(running=[assignment.attempt]))
        cancel = await executor.next("cancel", within=WITHIN)
        assert cancel.attempt == assignment.attempt


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


async def test_a_scheduled_job_starts_at_its_run_at_without_polling(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, poll_interval=SLOW_POLL) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        executor = await connect(channel, executors, "exec", 1)
        run_at = datetime.now(UTC) + timedelta(seconds=0.5)
        response = await stub.SubmitJob(
            job_service_pb2.SubmitJobRequest(
                job=job_pb2.JobSpec(type="work", run_at=_timestamp(run_at))
            )
        )
        assert response.job.state == job_pb2.JOB_STATE_SCHEDULED
        assignment = await executor.next("assignment", within=WITHIN)
        started = datetime.now(UTC)
        assert assignment.attempt.job_id == response.job.id
        assert started >= run_at  # not early
        # By timer, not by the (one-minute) poll: well under a second late, even on a busy box.
        assert started - run_at < timedelta(seconds=1)


async def test_a_retry_starts_after_its_backoff_without_polling(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, poll_interval=SLOW_POLL) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        executor = await connect(channel, executors, "exec", 1)
        first = await executor.next("assignment")
        failed_at = time.monotonic()
        executor.send(
            result=pb.JobResult(
                attempt=first.attempt, failure=pb.JobFailure(message="boom", retryable=True)
            )
        )
        second = await executor.next("assignment", within=WITHIN)
        assert second.attempt.job_id == job_id
        assert second.attempt.attempt == 2
        assert time.monotonic() - failed_at >= 0.8  # the first backoff: 1 s, jitter 10 %
