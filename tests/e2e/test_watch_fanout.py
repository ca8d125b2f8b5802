"""Fan-out: the watchers of one job share its store reads. A change that wakes 200 watchers at
once costs a read or two, not 200 (scheduler/api/shared_reads.py), and every watcher still gets
the change."""

from __future__ import annotations

import asyncio

import grpc

from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.scripted import serving, submit

WATCHERS = 200


async def test_a_change_woken_in_200_watchers_is_read_once_or_twice(db: Database) -> None:
    async with (
        serving(db) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        calls = [stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id)) for _ in range(WATCHERS)]
        try:
            async with asyncio.timeout(30):
                snapshots = await asyncio.gather(*(call.read() for call in calls))
            assert all(
                isinstance(s, job_service_pb2.WatchJobResponse)
                and s.snapshot.state == job_pb2.JOB_STATE_QUEUED
                for s in snapshots
            )
            reads = server.job_service.watch_reads
            before = reads.reads
            await stub.CancelJob(job_service_pb2.CancelJobRequest(id=job_id))

            async def final_state(call: object) -> int:
                assert isinstance(call, grpc.aio.UnaryStreamCall)
                while True:
                    item = await call.read()
                    assert isinstance(item, job_service_pb2.WatchJobResponse), "ended early"
                    if item.HasField("event"):
                        return int(item.event.to_state)

            async with asyncio.timeout(30):
                states = await asyncio.gather(*(final_state(call) for call in calls))
            assert states == [job_pb2.JOB_STATE_CANCELLED] * WATCHERS
            assert reads.reads - before <= 3, f"{reads.reads - before} reads for one change"
        finally:
            for call in calls:
                call.cancel()
