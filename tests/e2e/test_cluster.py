"""Several scheduler replicas on one database: GetClusterStatus from any of them, one leader with
a fencing epoch, a prompt takeover when the leader stops, and the leader's lease rescue."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import text

from executor.handlers import builtin_registry
from executor.runner import Executor
from jobsched.v1 import cluster_service_pb2 as cpb
from jobsched.v1 import cluster_service_pb2_grpc, job_pb2, job_service_pb2, job_service_pb2_grpc
from jobsched.v1 import executor_service_pb2 as pb
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, serving, state_of, submit

FAST: dict[str, Any] = {
    "leader_tick": 0.1,
    "leader_renew_timeout": 1.0,
    "rescue_interval": 0.1,
    "presence_interval": 0.2,
}


async def status(channel: grpc.aio.Channel) -> cpb.GetClusterStatusResponse:
    stub = cluster_service_pb2_grpc.ClusterServiceStub(channel)
    return await stub.GetClusterStatus(cpb.GetClusterStatusRequest())


async def test_any_replica_reports_the_replicas_the_leader_and_the_executors(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, **FAST) as a,
        serving(db, **FAST) as b,
        grpc.aio.insecure_channel(a.address) as channel_a,
        grpc.aio.insecure_channel(b.address) as channel_b,
    ):
        await connect(channel_b, executors, "exec-on-b", 3)

        async def complete() -> None:
            for channel in (channel_a, channel_b):
                got = await status(channel)
                assert {r.id for r in got.replicas} == {a.replica_id, b.replica_id}
                assert [r.id for r in got.replicas if r.leader] == [got.leader_id]
                assert got.leader_id in (a.replica_id, b.replica_id)
                assert got.epoch == 1
                by_id = {r.id: r for r in got.replicas}
                assert by_id[a.replica_id].address == a.address
                assert [e.name for e in by_id[b.replica_id].executors] == ["exec-on-b"]
                assert by_id[b.replica_id].executors[0].capacity == 3
                assert list(by_id[a.replica_id].executors) == []

        await assert_eventually(complete)


async def test_a_stopping_leader_resigns_and_a_follower_takes_over_at_once(db: Database) -> None:
    async with serving(db, **FAST) as a, serving(db, **FAST) as b:
        servers = {a.replica_id: a, b.replica_id: b}

        async def one_leads() -> None:
            assert sum(s.leader.is_leader for s in servers.values()) == 1

        await assert_eventually(one_leads)
        leader = next(s for s in servers.values() if s.leader.is_leader)
        follower = next(s for s in servers.values() if s is not leader)
        await leader.stop()

        async def took_over() -> None:
            assert follower.leader.is_leader
            assert follower.leader.epoch == 2

        # Resigning releases the lock at once: the follower leads at its next tick (0.1 s),
        # far within the renew timeout a crashed leader would cost.
        await assert_eventually(took_over, within=1.0)
        async with grpc.aio.insecure_channel(follower.address) as channel:
            got = await status(channel)
        assert got.leader_id == follower.replica_id
        assert got.epoch == 2


async def test_the_leader_rescues_a_job_whose_executor_stalled_past_its_lease(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, lease=timedelta(seconds=0.5), **FAST) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        # Connected, but it never heartbeats: its lease is not renewed.
        stalled = await connect(channel, executors, "stalled", 1)
        assignment = await stalled.next("assignment")

        async def rescued() -> None:
            job = await state_of(stub, job_id)
            assert job.state in (job_pb2.JOB_STATE_SCHEDULED, job_pb2.JOB_STATE_QUEUED)
            assert job.last_error == "lease expired"

        await assert_eventually(rescued)
        assert server.rescuer.rescued_total == 1
        response = await stub.GetJobStatus(
            job_service_pb2.GetJobStatusRequest(id=job_id, include_events=True)
        )
        assert [e.actor for e in response.events if e.reason == "failed: lease expired"] == [
            f"leader:{server.replica_id}@1"
        ]
        assert (await stalled.next("cancel")).attempt == assignment.attempt
        # Its result comes too late: stale, nothing changes.
        stalled.send(result=pb.JobResult(attempt=assignment.attempt, result=b"late"))
        assert not (await stalled.next("result_ack")).accepted
        assert (await state_of(stub, job_id)).last_error == "lease expired"


async def test_the_leader_fails_a_job_its_executor_did_not_stop_at_its_timeout(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, timeout_grace=timedelta(seconds=0.2), **FAST) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        timeout = Duration()
        timeout.FromTimedelta(timedelta(seconds=0.3))
        job_id = (
            await stub.SubmitJob(
                job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="work", timeout=timeout))
            )
        ).job.id
        # The executor keeps its lease (30 s) but never stops the job.
        stuck = await connect(channel, executors, "stuck", 1)
        assignment = await stuck.next("assignment")
        assert assignment.timeout.ToTimedelta() == timedelta(seconds=0.3)

        async def backstopped() -> None:
            job = await state_of(stub, job_id)
            assert job.last_error == "timed out after 0.3s"
            assert job.state != job_pb2.JOB_STATE_RUNNING or job.attempt == 2

        await assert_eventually(backstopped)
        cancel = await stuck.next("cancel")  # told to stop the attempt it should have stopped
        assert cancel.attempt == assignment.attempt
        stuck.send(result=pb.JobResult(attempt=assignment.attempt, result=b"late"))
        assert not (await stuck.next("result_ack")).accepted


async def test_watchers_on_one_replica_see_changes_made_through_another(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, **FAST) as a,
        serving(db, **FAST) as b,
        grpc.aio.insecure_channel(a.address) as channel_a,
        grpc.aio.insecure_channel(b.address) as channel_b,
    ):

        async def acquainted() -> None:
            assert a.presence.peers == 1
            assert b.presence.peers == 1

        await assert_eventually(acquainted)
        # WatchJobs has no polling fallback: whatever reaches it came through the fan-out.
        watch = job_service_pb2_grpc.JobServiceStub(channel_a).WatchJobs(
            job_service_pb2.WatchJobsRequest()
        )
        try:
            first = await watch.read()
            assert isinstance(first, job_service_pb2.WatchJobsResponse)
            assert first.subscribed
            stub_b = job_service_pb2_grpc.JobServiceStub(channel_b)
            [job_id] = await submit(stub_b, 1)
            executor = await connect(channel_b, executors, "on-b", 1)
            assignment = await executor.next("assignment")
            executor.send(
                progress=pb.ProgressReport(
                    attempt=assignment.attempt, progress=job_pb2.Progress(percent=42, step="b")
                )
            )
            seen: list[tuple[int, float]] = []
            async with asyncio.timeout(10):
                while (job_pb2.JOB_STATE_RUNNING, 42.0) not in seen:
                    item = await watch.read()
                    assert isinstance(item, job_service_pb2.WatchJobsResponse)
                    if item.HasField("job") and item.job.id == job_id:
                        seen.append((item.job.state, item.job.progress.percent))
            assert seen[0][0] in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING)
        finally:
            watch.cancel()


async def test_jobs_on_two_replicas_run_exactly_once(db: Database) -> None:
    count = 300
    async with (
        serving(db, **FAST) as a,
        serving(db, **FAST) as b,
        grpc.aio.insecure_channel(a.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        await stub.SubmitJobs(
            job_service_pb2.SubmitJobsRequest(
                jobs=[job_pb2.JobSpec(type="noop") for _ in range(count)]
            )
        )
        workers = [
            Executor([server.address], name=f"w{i}", capacity=10, registry=builtin_registry())
            for i, server in enumerate([a, b, a, b])
        ]
        for worker in workers:
            await worker.start()
        try:

            async def all_succeeded() -> None:
                async with db.read() as conn:
                    done = await conn.execute(
                        text("SELECT count(*) FROM jobs WHERE state = 'succeeded'")
                    )
                    assert done.scalar_one() == count

            await assert_eventually(all_succeeded, within=45, interval=0.1)
        finally:
            for worker in workers:
                await worker.stop(grace=1.0)
    async with db.read() as conn:
        claims = (
            await conn.execute(
                text(
                    "SELECT job_id, count(*) FROM job_events WHERE reason = 'claimed' "
                    "GROUP BY job_id HAVING count(*) <> 1"
                )
            )
        ).all()
        executors_used = (
            await conn.execute(text("SELECT count(DISTINCT executor) FROM jobs"))
        ).scalar_one()
    assert claims == []  # each job was handed out exactly once
    assert executors_used >= 2  # and both replicas' executors took part
