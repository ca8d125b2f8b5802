"""Executor names and session tokens: a name is one live executor. A second executor registering
a name that is alive (here or on another replica) is refused with ALREADY_EXISTS and the first
keeps its stream; the same executor reconnecting with its session token takes over and
re-attaches its attempts; without a valid token nothing is re-attached."""

from __future__ import annotations

from datetime import timedelta

import grpc

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import (
    ScriptedExecutor,
    connect,
    ended,
    error_reason,
    serving,
    state_of,
    submit,
)


def token_of(executor: ScriptedExecutor) -> str:
    assert executor.registered is not None
    return str(executor.registered.session_token)


async def test_a_second_executor_with_a_live_name_is_refused_and_the_first_keeps_its_stream(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with serving(db) as server, grpc.aio.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        first = await connect(channel, executors, "exec-a", 1)
        impostor = ScriptedExecutor(channel, "exec-a", 1)
        executors.append(impostor)
        error = await ended(impostor)
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error_reason(error) == "EXECUTOR_NAME_TAKEN"
        assert "exec-a" in (error.details() or "")

        [job_id] = await submit(stub, 1)
        assignment = await first.next("assignment")
        assert assignment.attempt.job_id == job_id
        first.send(result=pb.JobResult(attempt=assignment.attempt, result=b"done"))
        assert (await first.next("result_ack")).accepted


async def test_a_wrong_token_is_no_proof(db: Database, executors: list[ScriptedExecutor]) -> None:
    async with serving(db) as server, grpc.aio.insecure_channel(server.address) as channel:
        first = await connect(channel, executors, "exec-a", 1)
        other = await connect(channel, executors, "exec-b", 1)
        # exec-b's token, or a forged one, does not prove to be exec-a.
        for token in (token_of(other), token_of(first)[:-2] + "xx", "garbage"):
            impostor = ScriptedExecutor(channel, "exec-a", 1, session_token=token)
            executors.append(impostor)
            assert (await ended(impostor)).code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_reconnect_with_the_token_takes_over_and_reattaches(
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
        # The old stream still looks alive (a half-open connection): the token takes over.
        again = await connect(
            channel,
            executors,
            "exec-a",
            1,
            in_flight=[assignment.attempt],
            session_token=token_of(first),
        )
        assert server.dispatcher.sessions["exec-a"].in_flight.keys() == {job_id}

        async def first_closed() -> None:
            assert first.reader.done()

        await assert_eventually(first_closed)
        assert again.incoming["cancel"].empty()
        again.send(result=pb.JobResult(attempt=assignment.attempt, result=b"done"))
        assert (await again.next("result_ack")).accepted
        job = await state_of(stub, job_id)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED
        assert job.attempt == 1
        # Its new token works for the next reconnect too.
        assert token_of(again) != token_of(first)


async def test_without_a_valid_token_in_flight_attempts_are_not_reattached(
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

        async def gone() -> None:
            assert "exec-a" not in server.dispatcher.sessions

        await assert_eventually(gone)
        for token in ("", "not-a-token"):
            claimant = await connect(
                channel,
                executors,
                "exec-a",
                1,
                in_flight=[assignment.attempt],
                session_token=token,
            )
            cancel = await claimant.next("cancel")
            assert cancel.attempt == assignment.attempt
            assert cancel.reason == "not re-attached: no valid session token"
            assert job_id not in server.dispatcher.sessions["exec-a"].in_flight
            assert job_id in server.dispatcher.detached  # still waiting for its own executor
            await claimant.close()
            await assert_eventually(gone)


async def test_a_name_live_on_another_replica_is_refused(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, presence_interval=0.1) as a,
        serving(db, presence_interval=0.1) as b,
        grpc.aio.insecure_channel(a.address) as channel_a,
        grpc.aio.insecure_channel(b.address) as channel_b,
    ):
        first = await connect(channel_a, executors, "exec-a", 1)

        async def b_sees_a() -> None:
            await b.presence.report()
            assert b.presence.peers == 1

        await assert_eventually(b_sees_a)
        await a.presence.report()  # its row lists exec-a now
        impostor = ScriptedExecutor(channel_b, "exec-a", 1)
        executors.append(impostor)
        error = await ended(impostor)
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error_reason(error) == "EXECUTOR_NAME_TAKEN"
        # The same executor moving to replica B with its token is let in.
        moved = await connect(channel_b, executors, "exec-a", 1, session_token=token_of(first))
        assert moved.registered is not None
