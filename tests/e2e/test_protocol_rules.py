"""The executor protocol's rules as protos/jobsched/v1/executor_service.proto states them, and
the ErrorInfo every client reads, against a real scheduler: a LogReport without a line number is
refused (it was dropped silently), an unset JobFailure.retryable ends the job DEAD at once, the
ErrorInfo metadata names the existing job of a reused idempotency key and the field and limit of
a violation, and refusals of different kinds carry different reasons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc, job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, ended, state_of

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub

S = job_pb2.JobState


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status in the trailers of {err.code()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


async def assigned_job(stub: Stub, executor: ScriptedExecutor, **spec: object) -> pb.Assignment:
    await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="work", **spec))  # type: ignore[arg-type]
    )
    assignment: pb.Assignment = await executor.next("assignment")
    return assignment


async def log_rows(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM job_logs"))).scalar_one())


async def test_a_log_report_without_first_line_number_ends_the_stream_naming_the_field(
    jobs_stub: Stub, channel: grpc.aio.Channel, executors: list[ScriptedExecutor], db: Database
) -> None:
    executor = await connect(channel, executors, "unnumbered", capacity=1)
    assignment = await assigned_job(jobs_stub, executor)
    executor.send(log=pb.LogReport(attempt=assignment.attempt, lines=["lost?"]))
    err = await ended(executor)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(err)
    assert info.reason == "INVALID_ARGUMENT"
    assert info.metadata["field"] == "log.first_line_number"
    assert info.metadata["limit"] == "1"
    assert "log.first_line_number" in (err.details() or "")
    assert await log_rows(db) == 0  # nothing stored


async def test_numbered_log_lines_are_kept(
    jobs_stub: Stub, channel: grpc.aio.Channel, executors: list[ScriptedExecutor], db: Database
) -> None:
    executor = await connect(channel, executors, "numbered", capacity=1)
    assignment = await assigned_job(jobs_stub, executor)
    executor.send(
        log=pb.LogReport(attempt=assignment.attempt, lines=["a", "b"], first_line_number=1)
    )
    executor.send(result=pb.JobResult(attempt=assignment.attempt, result=b"{}"))
    assert (await executor.next("result_ack")).accepted
    assert await log_rows(db) == 2


async def test_a_failure_without_retryable_ends_the_job_dead_at_once(
    jobs_stub: Stub, channel: grpc.aio.Channel, executors: list[ScriptedExecutor]
) -> None:
    executor = await connect(channel, executors, "plain-failure", capacity=1)
    assignment = await assigned_job(jobs_stub, executor, max_attempts=5)
    executor.send(
        result=pb.JobResult(attempt=assignment.attempt, failure=pb.JobFailure(message="no"))
    )
    assert (await executor.next("result_ack")).accepted
    job = await state_of(jobs_stub, assignment.attempt.job_id)
    assert (job.state, job.attempt, job.last_error) == (S.JOB_STATE_DEAD, 1, "no")


async def test_a_reused_idempotency_key_names_the_job_holding_it(jobs_stub: Stub) -> None:
    first = await jobs_stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(
            job=job_pb2.JobSpec(type="work", payload=b"1", idempotency_key="once")
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await jobs_stub.SubmitJob(
            job_service_pb2.SubmitJobRequest(
                job=job_pb2.JobSpec(type="work", payload=b"2", idempotency_key="once")
            )
        )
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(raised.value)
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert info.metadata["job_id"] == first.job.id
    assert info.metadata["idempotency_key"] == "once"
    assert info.metadata["request_id"]


async def test_a_violation_names_its_field_and_limit(jobs_stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await jobs_stub.SubmitJob(
            job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="work", max_attempts=101))
        )
    info = error_info(raised.value)
    assert (info.reason, info.metadata["field"], info.metadata["limit"]) == (
        "INVALID_ARGUMENT",
        "job.max_attempts",
        "[1, 100]",
    )


async def test_a_register_over_the_capacity_names_the_field_and_limit(
    scheduler: SchedulerServer, channel: grpc.aio.Channel
) -> None:
    async def requests() -> AsyncIterator[pb.ConnectRequest]:
        yield pb.ConnectRequest(register=pb.Register(name="big", capacity=10_001, job_types=["w"]))

    call = executor_service_pb2_grpc.ExecutorServiceStub(channel).Connect(requests())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert (info.metadata["field"], info.metadata["limit"]) == ("register.capacity", "[1, 10000]")


async def test_refusals_of_different_kinds_carry_different_reasons(
    jobs_stub: Stub, channel: grpc.aio.Channel, executors: list[ScriptedExecutor]
) -> None:
    batch = await jobs_stub.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(
            jobs=[
                job_pb2.JobSpec(type="work", ref="parent"),
                job_pb2.JobSpec(type="other", depends_on_refs=["parent"]),
            ]
        )
    )
    parent = batch.jobs[0].id
    with pytest.raises(grpc.aio.AioRpcError) as dependents:
        await jobs_stub.DeleteJob(job_service_pb2.DeleteJobRequest(id=parent))
    assert dependents.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(dependents.value).reason == "JOB_HAS_DEPENDENTS"

    executor = await connect(channel, executors, "runs-parent", capacity=1)
    await executor.next("assignment")

    async def running() -> None:
        assert (await state_of(jobs_stub, parent)).state == S.JOB_STATE_RUNNING

    await assert_eventually(running)
    with pytest.raises(grpc.aio.AioRpcError) as priority:
        await jobs_stub.UpdateJobPriority(
            job_service_pb2.UpdateJobPriorityRequest(id=parent, priority=90)
        )
    assert priority.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(priority.value).reason == "INVALID_TRANSITION"
