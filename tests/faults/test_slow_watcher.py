"""Fault catalogue case 16: a slow watcher under 1,000 progress reports per second. A scheduler
process gets a flood of progress for one job from a raw executor stream; a watcher that reads
ten messages a second gets collapsed progress and the final state, a fast watcher of the same
job is not held back by it, and the scheduler keeps answering."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from jobsched.client import JobschedClient
from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.faults.harness import Cluster
from tests.faults.invariants import Observed, assert_invariants
from tests.scripted import ScriptedExecutor

pytestmark = pytest.mark.timeout(90)

REPORTS_PER_SECOND = 1_000
FLOOD_SECONDS = 3.0


async def watch(
    address: str, job_id: str, per_message: float, kinds: list[str], done: list[float]
) -> None:
    """WatchJob, reading one message per `per_message` seconds; records each item's kind and
    the time the terminal event arrived."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        async for item in stub.WatchJob(job_service_pb2.WatchJobRequest(id=job_id)):
            kind = str(item.WhichOneof("item"))
            kinds.append(kind)
            if kind == "event" and item.event.to_state == job_pb2.JOB_STATE_SUCCEEDED:
                done.append(time.monotonic())
            if per_message:
                await asyncio.sleep(per_message)


async def test_16_a_slow_watcher_gets_collapsed_progress_and_the_final_state(
    cluster: Cluster, db: Database
) -> None:
    scheduler = await cluster.scheduler("s1")
    async with (
        JobschedClient(scheduler.address) as client,
        grpc.aio.insecure_channel(scheduler.address) as channel,
    ):
        executor = ScriptedExecutor(channel, "flooder", 1, heartbeats=True)
        try:
            job = await client.submit("work")
            assignment = await executor.next("assignment", within=20)
            attempt = assignment.attempt
            slow_kinds: list[str] = []
            fast_kinds: list[str] = []
            slow_done: list[float] = []
            fast_done: list[float] = []
            watchers = [
                asyncio.create_task(watch(scheduler.address, job.id, 0.1, slow_kinds, slow_done)),
                asyncio.create_task(watch(scheduler.address, job.id, 0.0, fast_kinds, fast_done)),
            ]
            sent = 0
            started = time.monotonic()
            while time.monotonic() - started < FLOOD_SECONDS:
                for _ in range(REPORTS_PER_SECOND // 100):
                    sent += 1
                    executor.send(
                        progress=pb.ProgressReport(
                            attempt=attempt,
                            progress=job_pb2.Progress(
                                percent=min(99.0, sent / 40), message=f"report {sent}"
                            ),
                        )
                    )
                await asyncio.sleep(0.01)
            # The scheduler kept answering while flooded.
            assert (await client.get(job.id)).state == job_pb2.JOB_STATE_RUNNING
            executor.send(result=pb.JobResult(attempt=attempt, result=b"{}"))
            finished = time.monotonic()
            async with asyncio.timeout(30):
                await asyncio.gather(*watchers)
        finally:
            await executor.close()
    assert sent >= REPORTS_PER_SECOND * FLOOD_SECONDS * 0.5  # it was a flood
    # Both saw the end; the slow one was not given every report, only the latest ones.
    assert fast_done
    assert slow_done
    assert slow_kinds.count("progress") < sent / 10
    assert slow_kinds[-1] == "event"
    # The fast watcher was not held back by the slow one.
    assert fast_done[0] - finished < 5
    assert fast_done[0] <= slow_done[0]
    await assert_invariants(db, Observed(acknowledged={job.id}))
