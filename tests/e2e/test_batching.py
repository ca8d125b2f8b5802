"""Batched stream messages: an executor that registers accepts_batches gets a claim's
assignments and a group commit's result acks as one message each, and may send its acks and
results batched; an executor that does not gets one per message (the other e2e tests)."""

from __future__ import annotations

import grpc

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, state_of, submit

JOBS = 20


async def test_assignments_results_and_acks_travel_batched(
    scheduler: SchedulerServer, channel: grpc.aio.Channel, executors: list[ScriptedExecutor]
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    ids = await submit(stub, JOBS)
    executor = await connect(channel, executors, "batched", JOBS, accepts_batches=True)
    assignments: list[pb.Assignment] = []
    messages = 0
    while len(assignments) < JOBS:
        batch = await executor.next("assignments")
        assignments += batch.assignments
        messages += 1
    # One claim of 20 goes out together (never one message per job).
    assert messages < JOBS
    assert sorted(a.attempt.job_id for a in assignments) == sorted(ids)

    executor.send(
        results=pb.JobResultBatch(
            results=[pb.JobResult(attempt=a.attempt, result=b"ok") for a in assignments]
        )
    )
    acked: list[pb.ResultAck] = []
    while len(acked) < JOBS:
        try:
            acked += (await executor.next("result_acks", within=0.5)).acks
        except TimeoutError:
            while not executor.incoming["result_ack"].empty():
                acked.append(executor.incoming["result_ack"].get_nowait())
    assert all(a.accepted for a in acked)
    assert sorted(a.attempt.job_id for a in acked) == sorted(ids)

    async def succeeded() -> None:
        for job_id in ids:
            assert (await state_of(stub, job_id)).state == job_pb2.JOB_STATE_SUCCEEDED

    await assert_eventually(succeeded)


async def test_an_executor_without_batches_gets_one_message_per_assignment(
    scheduler: SchedulerServer, channel: grpc.aio.Channel, executors: list[ScriptedExecutor]
) -> None:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    ids = await submit(stub, 5)
    executor = await connect(channel, executors, "single", 5)
    got = [await executor.next("assignment") for _ in ids]
    assert sorted(a.attempt.job_id for a in got) == sorted(ids)
    assert executor.incoming["assignments"].empty()
