"""Dispatch over real gRPC: executors connect to ExecutorService.Connect, receive assignments
within their credits, and report outcomes fenced by the attempt number. The executor here is a
scripted stream on the raw stub, so each test controls exactly what the executor says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from sqlalchemy import text

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc, job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, state_of, submit

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub


@pytest.fixture
async def executors(channel: grpc.aio.Channel) -> AsyncIterator[list[ScriptedExecutor]]:
    started: list[ScriptedExecutor] = []
    yield started
    for executor in started:
        await executor.close()


async def test_jobs_across_two_executors_each_succeed_exactly_once_within_credits(
    channel: grpc.aio.Channel, jobs_stub: Stub, db: Database, executors: list[ScriptedExecutor]
) -> None:
    ids = await submit(jobs_stub, 40)
    a = await connect(channel, executors, "exec-a", 3)
    b = await connect(channel, executors, "exec-b", 5)
    done: dict[str, str] = {}

    async def work(executor: ScriptedExecutor) -> None:
        outstanding: list[pb.Assignment] = []
        while len(done) < len(ids):
            with contextlib.suppress(TimeoutError):
                outstanding.append(await executor.next("assignment", within=0.3))
                continue
            # Never more assignments at once than the executor's capacity.
            assert len(outstanding) <= executor.capacity
            for assignment in outstanding:
                done[assignment.attempt.job_id] = executor.name
                executor.send(result=pb.JobResult(attempt=assignment.attempt, result=b"done"))
                ack = await executor.next("result_ack")
                assert ack.accepted, ack.reason
            outstanding.clear()

    async with asyncio.timeout(30):
        await asyncio.gather(work(a), work(b))
    assert set(done) == set(ids)
    assert set(done.values()) == {"exec-a", "exec-b"}

    async with db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT job_id, count(*) FILTER (WHERE to_state = 'running'), "
                "count(*) FILTER (WHERE to_state = 'succeeded') FROM job_events GROUP BY job_id"
            )
        )
        counts = {str(r[0]): (r[1], r[2]) for r in rows}
    assert counts == {job_id: (1, 1) for job_id in ids}  # exactly one run, one outcome


async def test_a_result_for_a_stale_attempt_is_rejected_and_changes_nothing(
    channel: grpc.aio.Channel, jobs_stub: Stub, executors: list[ScriptedExecutor]
) -> None:
    [job_id] = await submit(jobs_stub, 1)
    executor = await connect(channel, executors, "exec-a", 1)
    assignment = await executor.next("assignment")
    assert assignment.attempt.attempt == 1

    stale = pb.JobAttempt(job_id=job_id, attempt=assignment.attempt.attempt + 1)
    executor.send(result=pb.JobResult(attempt=stale, result=b"forged"))
    ack = await executor.next("result_ack")
    assert not ack.accepted
    assert "stale" in ack.reason
    job = await state_of(jobs_stub, job_id)
    assert job.state == job_pb2.JOB_STATE_RUNNING
    assert job.result == b""


async def test_a_retryable_failure_schedules_the_next_attempt_with_the_error(
    channel: grpc.aio.Channel, jobs_stub: Stub, executors: list[ScriptedExecutor]
) -> None:
    [job_id] = await submit(jobs_stub, 1)
    executor = await connect(channel, executors, "exec-a", 1)
    assignment = await executor.next("assignment")
    executor.send(
        result=pb.JobResult(
            attempt=assignment.attempt, failure=pb.JobFailure(message="boom", retryable=True)
        )
    )
    assert (await executor.next("result_ack")).accepted
    job = await state_of(jobs_stub, job_id)
    assert job.state == job_pb2.JOB_STATE_SCHEDULED
    assert job.last_error == "boom"
    assert job.attempt == 1


async def test_cancelling_a_running_job_reaches_its_executor(
    channel: grpc.aio.Channel, jobs_stub: Stub, executors: list[ScriptedExecutor]
) -> None:
    [job_id] = await submit(jobs_stub, 1)
    executor = await connect(channel, executors, "exec-a", 1)
    assignment = await executor.next("assignment")

    response = await jobs_stub.CancelJob(job_service_pb2.CancelJobRequest(id=job_id))
    assert response.job.state == job_pb2.JOB_STATE_RUNNING
    assert response.job.cancel_requested
    cancel = await executor.next("cancel")
    assert cancel.attempt == assignment.attempt

    executor.send(result=pb.JobResult(attempt=assignment.attempt, cancelled=True))
    assert (await executor.next("result_ack")).accepted
    assert (await state_of(jobs_stub, job_id)).state == job_pb2.JOB_STATE_CANCELLED


async def test_a_lost_stream_fails_its_attempts_instead_of_stranding_them(
    channel: grpc.aio.Channel,
    jobs_stub: Stub,
    executors: list[ScriptedExecutor],
    scheduler: SchedulerServer,
) -> None:
    [job_id] = await submit(jobs_stub, 1)
    executor = await connect(channel, executors, "exec-a", 1)
    await executor.next("assignment")

    async def acknowledged() -> None:  # else the lost attempt is released, not failed
        session = scheduler.dispatcher.sessions["exec-a"]
        assert job_id in session.in_flight
        assert job_id not in session.unacked

    await assert_eventually(acknowledged)
    await executor.close()

    async def failed_over() -> None:
        job = await state_of(jobs_stub, job_id)
        assert job.state == job_pb2.JOB_STATE_SCHEDULED
        assert job.last_error == "executor disconnected"

    await assert_eventually(failed_over)


async def test_the_first_message_must_register(channel: grpc.aio.Channel) -> None:
    async def requests() -> AsyncIterator[pb.ConnectRequest]:
        yield pb.ConnectRequest(heartbeat=pb.Heartbeat())

    call = executor_service_pb2_grpc.ExecutorServiceStub(channel).Connect(requests())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_progress_is_stored_for_the_running_attempt_only(
    channel: grpc.aio.Channel,
    jobs_stub: Stub,
    executors: list[ScriptedExecutor],
    scheduler: SchedulerServer,
) -> None:
    [job_id] = await submit(jobs_stub, 1)
    executor = await connect(channel, executors, "exec-a", 1)
    assignment = await executor.next("assignment")

    for percent in (10.0, 20.0, 42.5):  # coalesced: the latest report wins
        executor.send(
            progress=pb.ProgressReport(
                attempt=assignment.attempt,
                progress=job_pb2.Progress(percent=percent, step="crunching", message="m"),
            )
        )
    # Last of all, a report for an attempt that is not running: it must not replace 42.5.
    stale = pb.JobAttempt(job_id=job_id, attempt=assignment.attempt.attempt + 1)
    executor.send(progress=pb.ProgressReport(attempt=stale, progress=job_pb2.Progress(percent=90)))

    async def stored() -> None:
        await scheduler.dispatcher.flush_progress()
        job = await state_of(jobs_stub, job_id)
        assert job.progress.percent == 42.5
        assert job.progress.step == "crunching"

    await assert_eventually(stored)


async def test_an_unacknowledged_assignment_is_reverted_without_burning_the_attempt(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    # An hour's safety poll: the revert comes from the ack deadline's own timer.
    server = SchedulerServer(
        db,
        ServerSettings(
            listen="127.0.0.1:0", ack_timeout=timedelta(seconds=0.5), poll_interval=3600
        ),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            [job_id] = await submit(stub, 1)
            silent = await connect(channel, executors, "silent", 1, auto_ack=False)
            first = await silent.next("assignment")
            assert first.attempt.attempt == 1

            # Not acknowledged: reverted to QUEUED and offered again. The attempt number is the
            # fencing token, so it never goes back: the new offer is attempt 2, and the
            # released attempt does not count (max_attempts grew by one).
            again = await silent.next("assignment")
            assert again.attempt.attempt == 2
            response = await stub.GetJobStatus(
                job_service_pb2.GetJobStatusRequest(id=job_id, include_events=True)
            )
            reverted = [e for e in response.events if e.reason == "assignment not acknowledged"]
            assert reverted
            assert reverted[0].to_state == job_pb2.JOB_STATE_QUEUED
            assert reverted[0].attempt == 1
            assert response.job.max_attempts == 4  # 3 + the attempt handed back

            # A late result for the released attempt is stale: rejected, nothing changes.
            silent.send(result=pb.JobResult(attempt=first.attempt, result=b"late"))
            assert not (await silent.next("result_ack")).accepted

            # Acknowledged this time: it stays assigned and its result is recorded.
            silent.send(ack=pb.AssignmentAck(attempt=again.attempt))
            silent.send(result=pb.JobResult(attempt=again.attempt, result=b"ok"))
            assert (await silent.next("result_ack")).accepted
            job = await state_of(stub, job_id)
            assert job.state == job_pb2.JOB_STATE_SUCCEEDED
            assert job.result == b"ok"
            await silent.close()
    finally:
        await server.stop()


async def test_an_invalid_registration_names_each_bad_field(channel: grpc.aio.Channel) -> None:
    async def requests() -> AsyncIterator[pb.ConnectRequest]:
        yield pb.ConnectRequest(
            register=pb.Register(name="", capacity=0, job_types=["Bad Name"], queues=["ok"])
        )

    call = executor_service_pb2_grpc.ExecutorServiceStub(channel).Connect(requests())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details() or ""
    for field in ("register.name", "register.capacity", "register.job_types[0]"):
        assert field in details
    assert "register.queues" not in details
