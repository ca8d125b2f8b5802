"""A lost executor stream gets a grace period: an executor that reconnects within it re-attaches
its in-flight attempts and finishes them; after it, the attempts move on (failed and retried
with attempt + 1, or, never acknowledged, released without burning an attempt), and a late
executor is told to stop what is no longer its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from sqlalchemy import text

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc, job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.helpers import assert_eventually, waiting_on_a_lock
from tests.scripted import ScriptedExecutor, connect, serving, state_of, submit

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub


async def events_of(stub: Stub, job_id: str) -> list[job_pb2.JobEvent]:
    response = await stub.GetJobStatus(
        job_service_pb2.GetJobStatusRequest(id=job_id, include_events=True)
    )
    return list(response.events)


def token_of(executor: ScriptedExecutor) -> str:
    """The session token a reconnect of this executor proves itself with."""
    assert executor.registered is not None
    return str(executor.registered.session_token)


async def detached(server: SchedulerServer, job_id: str) -> None:
    async def check() -> None:
        assert job_id in server.dispatcher.detached

    await assert_eventually(check)


async def test_an_executor_that_reconnects_within_the_grace_keeps_its_attempt(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, reconnect_grace=timedelta(seconds=30)) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        first = await connect(channel, executors, "exec-a", 1)
        assignment = await first.next("assignment")
        await first.close()
        await detached(server, job_id)
        [waiting_id] = await submit(stub, 1)

        again = await connect(
            channel,
            executors,
            "exec-a",
            1,
            in_flight=[assignment.attempt],
            session_token=token_of(first),  # the same executor: its attempts are re-attached
        )
        assert job_id not in server.dispatcher.detached
        # The re-attached attempt takes the only slot: nothing else is assigned meanwhile.
        again.send(result=pb.JobResult(attempt=assignment.attempt, result=b"done"))
        assert (await again.next("result_ack")).accepted
        job = await state_of(stub, job_id)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED
        assert job.attempt == 1
        assert [e.reason for e in await events_of(stub, job_id)] == [
            "submitted",
            "claimed",
            "succeeded",
        ]
        # With the slot free again, the waiting job is assigned.
        assert (await again.next("assignment")).attempt.job_id == waiting_id


async def test_after_the_grace_the_attempt_fails_and_a_late_executor_is_told_to_stop(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    grace = timedelta(seconds=0.5)
    async with (
        # An hour's safety poll: the attempt moves on at the grace's own timer.
        serving(db, reconnect_grace=grace, poll_interval=3600) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        first = await connect(channel, executors, "exec-a", 1)
        assignment = await first.next("assignment")

        async def acknowledged() -> None:  # an unacknowledged one would be released instead
            assert job_id not in server.dispatcher.sessions["exec-a"].unacked

        await assert_eventually(acknowledged)
        await first.close()

        async def failed() -> None:
            job = await state_of(stub, job_id)
            assert job.state == job_pb2.JOB_STATE_SCHEDULED
            assert job.last_error == "executor disconnected"

        await assert_eventually(failed)
        events = {e.reason: e for e in await events_of(stub, job_id)}
        claimed = events["claimed"].create_time.ToDatetime()
        gone = events["failed: executor disconnected"].create_time.ToDatetime()
        assert gone - claimed >= grace  # not before the grace

        # The executor comes back too late: told to stop, and its result is stale.
        late = await connect(
            channel,
            executors,
            "exec-a",
            1,
            in_flight=[assignment.attempt],
            session_token=token_of(first),
        )
        cancel = await late.next("cancel")
        assert cancel.attempt == assignment.attempt
        assert "no longer" in cancel.reason
        late.send(result=pb.JobResult(attempt=assignment.attempt, result=b"late"))
        assert not (await late.next("result_ack")).accepted
        assert (await state_of(stub, job_id)).state in (
            job_pb2.JOB_STATE_SCHEDULED,
            job_pb2.JOB_STATE_QUEUED,
            job_pb2.JOB_STATE_RUNNING,  # its retry, attempt 2, may already run on `late`
        )
        assert (await state_of(stub, job_id)).attempt >= 1


async def test_an_unacknowledged_assignment_of_a_lost_stream_is_released_after_the_grace(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, reconnect_grace=timedelta(seconds=0.3)) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        silent = await connect(channel, executors, "silent", 1, auto_ack=False)
        first = await silent.next("assignment")
        await silent.close()

        other = await connect(channel, executors, "other", 1)
        second = await other.next("assignment")
        assert second.attempt.job_id == job_id
        assert second.attempt.attempt == 2  # the fencing token never goes back
        job = await state_of(stub, job_id)
        assert job.max_attempts == 4  # ...but the released attempt is not burned
        released = [
            e for e in await events_of(stub, job_id) if e.from_state == job_pb2.JOB_STATE_RUNNING
        ]
        assert [e.reason for e in released] == ["executor disconnected before acknowledging"]
        assert released[0].attempt == first.attempt.attempt


async def test_jobs_claimed_while_their_stream_ends_are_released_after_the_grace(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    """The stream ends while a claim for it runs: the jobs it claimed are held like the other
    attempts of a lost stream and, never assigned, released after the grace without burning an
    attempt (not left RUNNING until their lease expires)."""
    async with (
        serving(db, reconnect_grace=timedelta(seconds=0.3), poll_interval=3600) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        # A claim begins by locking the settings rows of the limited queues: holding one here
        # keeps the claim waiting while the stream ends.
        async with db.transaction() as conn:
            await conn.execute(
                text(
                    "INSERT INTO queues (tenant, name, updated_at, max_concurrency) "
                    "VALUES ('default', 'held', now(), 1)"
                )
            )
        async with db.transaction() as holder:
            await holder.execute(text("SELECT 1 FROM queues WHERE name = 'held' FOR UPDATE"))
            leaving = await connect(channel, executors, "leaving", 1)
            await waiting_on_a_lock(db, "%WHERE max_concurrency IS NOT NULL AND NOT paused%")
            await leaving.close()

            async def gone() -> None:
                assert "leaving" not in server.dispatcher.sessions

            await assert_eventually(gone)
        await detached(server, job_id)

        async def released() -> None:
            assert (await state_of(stub, job_id)).state == job_pb2.JOB_STATE_QUEUED

        await assert_eventually(released)
        job = await state_of(stub, job_id)
        assert job.max_attempts == 4  # the released attempt is not burned
        left = [
            e for e in await events_of(stub, job_id) if e.from_state == job_pb2.JOB_STATE_RUNNING
        ]
        assert [(e.reason, e.attempt) for e in left] == [
            ("executor disconnected before acknowledging", 1)
        ]


async def test_a_cancel_requested_while_disconnected_reaches_the_reattached_executor(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, reconnect_grace=timedelta(seconds=30)) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        first = await connect(channel, executors, "exec-a", 1)
        assignment = await first.next("assignment")
        await first.close()
        await detached(server, job_id)
        await stub.CancelJob(job_service_pb2.CancelJobRequest(id=job_id))

        again = await connect(
            channel,
            executors,
            "exec-a",
            1,
            in_flight=[assignment.attempt],
            session_token=token_of(first),
        )
        cancel = await again.next("cancel")
        assert cancel.attempt == assignment.attempt
        again.send(result=pb.JobResult(attempt=assignment.attempt, cancelled=True))
        assert (await again.next("result_ack")).accepted
        assert (await state_of(stub, job_id)).state == job_pb2.JOB_STATE_CANCELLED


async def test_a_registration_with_bad_in_flight_attempts_names_them(
    channel: grpc.aio.Channel,
) -> None:
    async def requests() -> AsyncIterator[pb.ConnectRequest]:
        yield pb.ConnectRequest(
            register=pb.Register(
                name="exec-a",
                capacity=1,
                job_types=["work"],
                in_flight=[pb.JobAttempt(job_id="nope", attempt=0)],
            )
        )

    call = executor_service_pb2_grpc.ExecutorServiceStub(channel).Connect(requests())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details() or ""
    assert "register.in_flight[0].job_id" in details
    assert "register.in_flight[0].attempt" in details


async def test_a_real_executor_reattaches_its_running_job_to_a_restarted_scheduler(
    db: Database,
) -> None:
    release = asyncio.Event()

    async def waits(ctx: JobContext) -> str:
        await release.wait()
        return "finished"

    registry = builtin_registry(extra=[("waits", waits)])
    async with serving(db) as first:
        address = first.address
        executor = Executor([address], name="exec-a", capacity=2, registry=registry)
        await executor.start()
        await executor.wait_registered()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            job_id = (
                await stub.SubmitJob(
                    job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="waits"))
                )
            ).job.id

            async def running() -> None:
                assert executor.running == [(job_id, 1)]

            await assert_eventually(running)
    try:
        # The scheduler is gone (its stream ended) and a new one starts on the same address:
        # the executor reconnects and re-attaches the attempt it is still running.
        async with (
            serving(db, listen=address, reconnect_grace=timedelta(seconds=30)) as second,
            grpc.aio.insecure_channel(second.address) as channel,
        ):
            stub = job_service_pb2_grpc.JobServiceStub(channel)

            async def reattached() -> None:
                session = second.dispatcher.sessions.get("exec-a")
                assert session is not None
                assert job_id in session.in_flight

            await assert_eventually(reattached)
            release.set()

            async def succeeded() -> None:
                job = await state_of(stub, job_id)
                assert job.state == job_pb2.JOB_STATE_SUCCEEDED

            await assert_eventually(succeeded)
            job = await state_of(stub, job_id)
            assert job.attempt == 1
            assert job.result == b"finished"
            assert "executor disconnected" not in [e.reason for e in await events_of(stub, job_id)]
    finally:
        await executor.stop(grace=1.0)
