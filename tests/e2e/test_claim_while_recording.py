"""A result frees the executor's slot when it arrives: the next job is claimed and assigned
while the result is still being recorded (the success commit and the claim overlap), and the
executor never gets more than its capacity."""

from __future__ import annotations

import grpc
from sqlalchemy import text

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, state_of, submit


async def test_the_next_job_is_assigned_while_the_result_is_recorded(
    scheduler: SchedulerServer,
    channel: grpc.aio.Channel,
    executors: list[ScriptedExecutor],
    db: Database,
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    first_id = (await submit(stub, 1))[0]
    executor = await connect(channel, executors, "one", 1)
    first = await executor.next("assignment")
    assert first.attempt.job_id == first_id
    second_id = (await submit(stub, 1))[0]
    # Hold the first job's row: its success UPDATE waits for this transaction.
    async with db.transaction() as conn:
        await conn.execute(
            text("SELECT 1 FROM jobs WHERE id = CAST(:id AS uuid) FOR UPDATE"), {"id": first_id}
        )
        executor.send(result=pb.JobResult(attempt=first.attempt, result=b"ok"))
        second = await executor.next("assignment")
        assert second.attempt.job_id == second_id
        # The first result is not recorded yet: it is still RUNNING, unanswered.
        assert (await state_of(stub, first_id)).state == job_pb2.JOB_STATE_RUNNING
        assert executor.incoming["result_ack"].empty()
    ack = await executor.next("result_ack")
    assert ack.accepted
    assert ack.attempt.job_id == first_id

    async def succeeded() -> None:
        assert (await state_of(stub, first_id)).state == job_pb2.JOB_STATE_SUCCEEDED

    await assert_eventually(succeeded)
    # Capacity 1: nothing more is handed out while the second runs, whatever rounds pass.
    rounds = scheduler.dispatcher.rounds
    third_id = (await submit(stub, 1))[0]

    async def looked() -> None:
        assert scheduler.dispatcher.rounds > rounds

    await assert_eventually(looked)
    assert (await state_of(stub, third_id)).state == job_pb2.JOB_STATE_QUEUED
    assert executor.incoming["assignment"].empty()
