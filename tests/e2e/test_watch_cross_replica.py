"""Live progress across replicas: a progress report made to replica B reaches a watcher on
replica A through the `jobsched_progress` NOTIFY, as soon as a watcher on B would get it, not
when B's progress writer stores it (an hour here: never during the test)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, serving, state_of, submit

SETTINGS: dict[str, Any] = {"progress_interval": 3600, "presence_interval": 0.2}


async def test_progress_reported_to_one_replica_reaches_a_watcher_on_another_at_once(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, **SETTINGS) as a,
        serving(db, **SETTINGS) as b,
        grpc.aio.insecure_channel(a.address) as channel_a,
        grpc.aio.insecure_channel(b.address) as channel_b,
    ):

        async def peers() -> None:
            assert a.presence.peers == 1
            assert b.presence.peers == 1

        await assert_eventually(peers)
        stub_a = job_service_pb2_grpc.JobServiceStub(channel_a)
        [job_id] = await submit(stub_a, 1)
        executor = await connect(channel_b, executors, "on-b", 1)  # runs it through B
        assignment = await executor.next("assignment")
        watch = stub_a.WatchJob(job_service_pb2.WatchJobRequest(id=job_id))
        try:
            snapshot = await watch.read()
            assert isinstance(snapshot, job_service_pb2.WatchJobResponse)
            if snapshot.snapshot.state != job_pb2.JOB_STATE_RUNNING:
                # Subscribed before the claim's change reached A: the next item says RUNNING.
                item = await asyncio.wait_for(watch.read(), 5)
                assert isinstance(item, job_service_pb2.WatchJobResponse)
            for percent, step in ((10.0, "first"), (55.0, "second")):
                executor.send(
                    progress=pb.ProgressReport(
                        attempt=assignment.attempt,
                        progress=job_pb2.Progress(percent=percent, step=step, message="über"),
                    )
                )
                async with asyncio.timeout(5):
                    while True:
                        item = await watch.read()
                        assert isinstance(item, job_service_pb2.WatchJobResponse)
                        if item.HasField("progress") and item.progress.step == step:
                            break
                assert item.progress.percent == percent
                assert item.progress.message == "über"
            # Never written: the store still has the claim's 0 %, so only the signal carried it.
            assert (await state_of(stub_a, job_id)).progress.percent == 0
            assert b.notifier is not None
            assert b.notifier.sent > 0
        finally:
            watch.cancel()


async def test_a_lone_replica_sends_no_progress_signal(
    db: Database, executors: list[ScriptedExecutor]
) -> None:
    async with (
        serving(db, **SETTINGS) as a,
        grpc.aio.insecure_channel(a.address) as channel,
    ):
        assert a.notifier is not None
        await asyncio.wait_for(a.notifier.connected.wait(), 10)
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)
        executor = await connect(channel, executors, "alone", 1)
        assignment = await executor.next("assignment")
        watch = stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id))
        try:
            await watch.read()
            sent = a.notifier.sent
            executor.send(
                progress=pb.ProgressReport(
                    attempt=assignment.attempt, progress=job_pb2.Progress(percent=30.0)
                )
            )
            async with asyncio.timeout(5):
                while True:
                    item = await watch.read()
                    assert isinstance(item, job_service_pb2.WatchJobResponse)
                    if item.HasField("progress"):
                        break
            assert item.progress.percent == 30.0
            await asyncio.sleep(0)  # a sender task would have been created by now
            assert a.notifier.sent == sent
            assert a.notifier._progress_sender is None
        finally:
            watch.cancel()
