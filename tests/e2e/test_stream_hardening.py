"""The executor stream's limits: results over 1 MiB are refused and the attempt fails without
retry, a second Register is refused, Registered carries the limits and timeouts, and the last
progress reported before an outcome is kept with it."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2_grpc
from scheduler.domain.results import MAX_RESULT_BYTES
from scheduler.domain.validation import MAX_PAYLOAD_BYTES
from scheduler.store.database import Database
from tests.scripted import ScriptedExecutor, connect, error_reason, serving, state_of, submit


async def test_registered_carries_the_timeouts_and_the_result_limit(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, heartbeat_interval=2.0, ack_timeout=timedelta(seconds=7)) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        executor = await connect(channel, executors, "exec-a", 1)
        registered = executor.registered
        assert registered is not None
        assert registered.ack_timeout.ToTimedelta() == timedelta(seconds=7)
        assert registered.heartbeat_timeout.ToTimedelta() == timedelta(seconds=8)
        assert registered.max_result_bytes == MAX_RESULT_BYTES == MAX_PAYLOAD_BYTES == 1 << 20
        assert registered.session_token.startswith(registered.session_id + ".")


async def test_a_result_over_the_limit_is_refused_and_the_job_ends_dead(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with serving(db) as server, grpc.aio.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        big_id, fits_id = await submit(stub, 2)
        executor = await connect(channel, executors, "exec-a", 2)
        attempts = {}
        for _ in range(2):
            a = await executor.next("assignment")
            attempts[a.attempt.job_id] = a.attempt
        executor.send(
            result=pb.JobResult(attempt=attempts[big_id], result=b"x" * (MAX_RESULT_BYTES + 1))
        )
        ack = await executor.next("result_ack")
        assert not ack.accepted
        assert f"{MAX_RESULT_BYTES + 1} bytes" in ack.reason
        assert f"at most {MAX_RESULT_BYTES}" in ack.reason
        job = await state_of(stub, big_id)
        assert job.state == job_pb2.JOB_STATE_DEAD  # not retried: the same output would come
        assert job.last_error == ack.reason
        assert not job.result

        executor.send(
            result=pb.JobResult(attempt=attempts[fits_id], result=b"y" * MAX_RESULT_BYTES)
        )
        assert (await executor.next("result_ack")).accepted
        assert (await state_of(stub, fits_id)).result == b"y" * MAX_RESULT_BYTES


async def test_a_second_register_on_a_stream_is_refused(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with serving(db) as server, grpc.aio.insecure_channel(server.address) as channel:
        executor = await connect(channel, executors, "exec-a", 1)
        executor.send(register=pb.Register(name="exec-b", capacity=1, job_types=["work"]))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await executor.reader
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(raised.value) == "ALREADY_REGISTERED"
        assert "exec-b" not in server.dispatcher.sessions


async def test_the_last_progress_before_a_success_is_kept(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    # No progress tick during the test: only the outcome can store the report.
    async with (
        serving(db, progress_interval=3600) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        executor = await connect(channel, executors, "exec-a", 1)
        attempt = (await executor.next("assignment")).attempt
        executor.send(
            progress=pb.ProgressReport(
                attempt=attempt,
                progress=job_pb2.Progress(percent=90, step="final", message="writing"),
            )
        )
        executor.send(result=pb.JobResult(attempt=attempt, result=b"done"))
        assert (await executor.next("result_ack")).accepted
        job = await state_of(stub, job_id)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED
        assert job.progress.percent == 100
        assert job.progress.step == "final"
        assert job.progress.message == "writing"


async def test_the_last_progress_before_a_failure_is_kept(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, progress_interval=3600) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        executor = await connect(channel, executors, "exec-a", 1)
        attempt = (await executor.next("assignment")).attempt
        executor.send(
            progress=pb.ProgressReport(
                attempt=attempt, progress=job_pb2.Progress(percent=40, step="halfway")
            )
        )
        executor.send(
            result=pb.JobResult(
                attempt=attempt, failure=pb.JobFailure(message="boom", retryable=False)
            )
        )
        assert (await executor.next("result_ack")).accepted
        job = await state_of(stub, job_id)
        assert job.state == job_pb2.JOB_STATE_DEAD
        assert job.progress.percent == 40
        assert job.progress.step == "halfway"
