"""Live progress: a watcher on the replica that receives a progress report gets it from memory at
once, not at the progress writer's next tick (here: never during the test)."""

from __future__ import annotations

import asyncio

import grpc

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.scripted import ScriptedExecutor, connect, serving, state_of, submit


async def test_progress_reaches_a_watcher_before_it_is_written(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, progress_interval=3600) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        executor = await connect(channel, executors, "exec", 1)
        assignment = await executor.next("assignment")
        watch = stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id))
        try:
            snapshot = await watch.read()
            assert isinstance(snapshot, job_service_pb2.WatchJobResponse)
            assert snapshot.snapshot.state == job_pb2.JOB_STATE_RUNNING
            for percent in (10.0, 55.0):
                executor.send(
                    progress=pb.ProgressReport(
                        attempt=assignment.attempt,
                        progress=job_pb2.Progress(percent=percent, step="live"),
                    )
                )
                async with asyncio.timeout(5):
                    while True:
                        item = await watch.read()
                        assert isinstance(item, job_service_pb2.WatchJobResponse)
                        if item.HasField("progress"):
                            break
                assert item.progress.percent == percent
                assert item.progress.step == "live"
            # Not written yet: the store still has the claim's 0 %.
            assert (await state_of(stub, job_id)).progress.percent == 0
        finally:
            watch.cancel()
