"""Queues and priorities over gRPC: pause and resume, a concurrency limit that holds across many
executors and two replicas, ListQueues, waiting reasons, UpdateJobPriority, and the starvation
rule (a job queued long enough is claimed before younger ones, whatever their priority)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.v1 import (
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    executor_service_pb2,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
)
from scheduler.store.attempts import claim_jobs
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, serving, state_of

if TYPE_CHECKING:  # the async stubs exist only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub
    QueueStub = queue_service_pb2_grpc.QueueServiceAsyncStub

FAST: dict[str, Any] = {"presence_interval": 0.2}


async def submit(stub: Stub, **spec: Any) -> job_pb2.Job:
    spec.setdefault("type", "work")
    response = await stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(**spec)))
    return response.job


async def waiting(stub: Stub, job_id: str) -> tuple[int, str]:
    job = await state_of(stub, job_id)
    return job.waiting_reason, job.waiting_detail


async def test_a_paused_queue_accepts_jobs_and_dispatches_none_until_resumed(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, **FAST) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        queues = queue_service_pb2_grpc.QueueServiceStub(channel)
        paused = await queues.PauseQueue(queue_service_pb2.PauseQueueRequest(name="Mail"))
        assert paused.queue.paused
        held = await submit(stub, queue="mail")
        other = await submit(stub, queue="other")
        executor = await connect(channel, executors, "exec", 2)
        assert (await executor.next("assignment")).attempt.job_id == other.id

        async def explained() -> None:
            reason, detail = await waiting(stub, held.id)
            assert reason == job_pb2.WAITING_REASON_QUEUE_PAUSED
            assert "mail" in detail

        await assert_eventually(explained)
        assert executor.incoming["assignment"].empty()
        assert (await state_of(stub, held.id)).state == job_pb2.JOB_STATE_QUEUED

        resumed = await queues.ResumeQueue(queue_service_pb2.ResumeQueueRequest(name="mail"))
        assert not resumed.queue.paused
        assert (await executor.next("assignment")).attempt.job_id == held.id


async def test_the_concurrency_limit_holds_across_executors_and_replicas(db: Database) -> None:
    limit, jobs = 3, 24
    running = 0
    peak = 0
    release = asyncio.Event()

    async def guarded(ctx: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.wait_for(release.wait(), 0.05)
        except TimeoutError:
            pass
        finally:
            running -= 1

    registry = builtin_registry(extra=[("guarded", guarded)])
    async with (
        serving(db, **FAST) as a,
        serving(db, **FAST) as b,
        grpc.aio.insecure_channel(a.address) as channel,
    ):
        queues = queue_service_pb2_grpc.QueueServiceStub(channel)
        await queues.UpdateQueue(
            queue_service_pb2.UpdateQueueRequest(
                queue=queue_service_pb2.Queue(name="limited", max_concurrency=limit)
            )
        )
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        await stub.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(
                jobs=[job_pb2.JobSpec(type="guarded", queue="limited") for _ in range(jobs)]
            )
        )
        workers = [
            Executor([server.address], name=f"w{i}", capacity=4, registry=registry)
            for i, server in enumerate([a, b, a, b, a, b])
        ]
        for worker in workers:
            await worker.start()
        try:

            async def all_done() -> None:
                listed = await queues.ListQueues(queue_service_pb2.ListQueuesRequest())
                [entry] = [q for q in listed.queues if q.name == "limited"]
                assert dict(entry.stats.jobs_by_state) == {}

            await assert_eventually(all_done, within=45, interval=0.1)
        finally:
            for worker in workers:
                await worker.stop(grace=1.0)
    assert 1 <= peak <= limit, f"{peak} jobs of the queue ran at once; the limit is {limit}"


async def test_list_queues_counts_states_running_age_and_waiting_reasons(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, **FAST) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        queues = queue_service_pb2_grpc.QueueServiceStub(channel)
        first = await submit(stub, queue="q1")
        await submit(stub, queue="q1", type="unrun")  # no executor runs this type
        await submit(stub, queue="q1")
        await submit(stub, queue="q2")
        await queues.PauseQueue(queue_service_pb2.PauseQueueRequest(name="q2"))
        await queues.UpdateQueue(
            queue_service_pb2.UpdateQueueRequest(
                queue=queue_service_pb2.Queue(name="empty", max_concurrency=5)
            )
        )
        executor = await connect(channel, executors, "exec", 1)
        assert (await executor.next("assignment")).attempt.job_id == first.id

        async def counted() -> None:
            listed = await queues.ListQueues(queue_service_pb2.ListQueuesRequest())
            by_name = {q.name: q for q in listed.queues}
            assert list(by_name) == ["empty", "q1", "q2"]
            q1 = by_name["q1"].stats
            assert dict(q1.jobs_by_state) == {"JOB_STATE_QUEUED": 2, "JOB_STATE_RUNNING": 1}
            assert q1.running == 1
            assert dict(q1.waiting_by_reason) == {
                "WAITING_REASON_NO_EXECUTOR_FOR_TYPE": 1,
                "WAITING_REASON_NO_FREE_CAPACITY": 1,  # the one executor's slot is taken
            }
            assert q1.HasField("oldest_waiting_create_time")
            assert q1.oldest_waiting_age.ToTimedelta() >= timedelta(0)
            q2 = by_name["q2"]
            assert q2.paused
            assert dict(q2.stats.waiting_by_reason) == {"WAITING_REASON_QUEUE_PAUSED": 1}
            empty = by_name["empty"]
            assert empty.max_concurrency == 5
            assert dict(empty.stats.jobs_by_state) == {}
            assert not empty.stats.HasField("oldest_waiting_create_time")

        await assert_eventually(counted)


async def test_every_waiting_job_says_why(db: Database, executors: list[ScriptedExecutor]) -> None:
    async with (
        serving(db, **FAST) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        queues = queue_service_pb2_grpc.QueueServiceStub(channel)
        nobody = await submit(stub)
        assert (await waiting(stub, nobody.id))[0] == job_pb2.WAITING_REASON_NO_EXECUTOR_FOR_TYPE

        future = Timestamp()
        future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
        scheduled = await submit(stub, run_at=future)
        reason, detail = await waiting(stub, scheduled.id)
        assert reason == job_pb2.WAITING_REASON_SCHEDULED
        assert "runs at" in detail

        await queues.UpdateQueue(
            queue_service_pb2.UpdateQueueRequest(
                queue=queue_service_pb2.Queue(name="limited", max_concurrency=1)
            )
        )
        running = await submit(stub, queue="limited")
        blocked = await submit(stub, queue="limited")
        executor = await connect(channel, executors, "exec", 5)
        # The job with no executor so far, and one of the limited queue, are dispatched.
        claimed = {(await executor.next("assignment")).attempt.job_id for _ in range(2)}
        assert running.id in claimed
        assert blocked.id not in claimed
        reason, detail = await waiting(stub, blocked.id)
        assert reason == job_pb2.WAITING_REASON_QUEUE_AT_CONCURRENCY_LIMIT
        assert "1 of at most 1" in detail
        for job_id in (nobody.id, running.id):
            assert (await state_of(stub, job_id)).waiting_reason == (
                job_pb2.WAITING_REASON_UNSPECIFIED
            )


async def test_a_job_only_a_draining_executor_could_run_says_so(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, **FAST) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        clusters = cluster_service_pb2_grpc.ClusterServiceStub(channel)
        executor = await connect(channel, executors, "leaving", 5)
        executor.send(heartbeat=executor_service_pb2.Heartbeat(draining=True))

        async def reported_draining() -> None:
            status = await clusters.GetClusterStatus(cluster_service_pb2.GetClusterStatusRequest())
            [replica] = status.replicas
            assert [(e.name, e.draining) for e in replica.executors] == [("leaving", True)]

        await assert_eventually(reported_draining)
        job = await submit(stub)
        reason, detail = await waiting(stub, job.id)
        assert reason == job_pb2.WAITING_REASON_EXECUTORS_DRAINING
        assert "shutting down" in detail
        queues = queue_service_pb2_grpc.QueueServiceStub(channel)
        listed = await queues.ListQueues(queue_service_pb2.ListQueuesRequest())
        [default] = [q for q in listed.queues if q.name == "default"]
        assert dict(default.stats.waiting_by_reason) == {"WAITING_REASON_EXECUTORS_DRAINING": 1}


async def test_update_job_priority_reorders_waiting_jobs_and_writes_nothing_when_equal(
    db: Database,
) -> None:
    async with (
        serving(db, **FAST) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        first = await submit(stub, priority=50)
        second = await submit(stub, priority=50)
        changed = await stub.UpdateJobPriority(
            job_service_pb2.UpdateJobPriorityRequest(id=second.id, priority=90)
        )
        assert changed.changed
        assert changed.job.priority == 90
        same = await stub.UpdateJobPriority(
            job_service_pb2.UpdateJobPriorityRequest(id=second.id, priority=90)
        )
        assert not same.changed
        assert same.job.update_time == changed.job.update_time  # nothing written

        # The claim takes the reordered job first (claimed here directly: the order is the
        # point, not which stream it goes to).
        async with db.transaction() as conn:
            [claimed] = await claim_jobs(
                conn,
                executor="probe",
                job_types=["work"],
                queues=[],
                limit=1,
                lease=timedelta(seconds=30),
                now=datetime.now(UTC),
            )
        assert claimed.id == second.id

        with pytest.raises(grpc.aio.AioRpcError) as running:
            await stub.UpdateJobPriority(
                job_service_pb2.UpdateJobPriorityRequest(id=second.id, priority=10)
            )
        assert running.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.UpdateJobPriority(
                job_service_pb2.UpdateJobPriorityRequest(id=first.id, priority=101)
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "priority" in (bad.value.details() or "")
        assert (await state_of(stub, first.id)).priority == 50
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.UpdateJobPriority(
                job_service_pb2.UpdateJobPriorityRequest(
                    id="00000000-0000-4000-8000-000000000000", priority=10
                )
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("starvation_after", "first_claimed"),
    [(timedelta(minutes=5), "high"), (timedelta(0), "low")],
)
async def test_a_job_queued_past_the_starvation_bound_goes_before_higher_priorities(
    db: Database,
    executors: list[ScriptedExecutor],
    starvation_after: timedelta,
    first_claimed: str,
) -> None:
    async with (
        serving(db, starvation_after=starvation_after) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        low = await submit(stub, priority=job_pb2.PRIORITY_LOW)
        high = await submit(stub, priority=job_pb2.PRIORITY_HIGH)
        executor = await connect(channel, executors, "exec", 1)
        expected = {"low": low.id, "high": high.id}[first_claimed]
        assert (await executor.next("assignment")).attempt.job_id == expected
