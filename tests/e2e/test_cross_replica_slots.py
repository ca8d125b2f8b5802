"""A slot freed in a limited queue by a job ending on replica A is taken by an executor of
replica B at once: A's completion sends `jobsched_work` while it has peers. The dispatchers'
safety poll is an hour here, so nothing else would wake B."""

from __future__ import annotations

import asyncio
from typing import Any

from executor.handlers import HandlerRegistry, JobContext, builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2, queue_service_pb2
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import serving

SETTINGS: dict[str, Any] = {"poll_interval": 3600, "presence_interval": 0.2}


async def test_a_slot_freed_on_one_replica_is_taken_through_another(db: Database) -> None:
    release = asyncio.Event()

    async def block(ctx: JobContext) -> None:
        await release.wait()

    async with serving(db, **SETTINGS) as a, serving(db, **SETTINGS) as b:

        async def peers() -> None:
            assert a.presence.peers == 1
            assert b.presence.peers == 1

        await assert_eventually(peers)
        # Only x (on a) runs "block"; only y (on b) runs "noop".
        x = Executor([a.address], name="x", capacity=2, registry=HandlerRegistry({"block": block}))
        y = Executor([b.address], name="y", capacity=2, registry=builtin_registry())
        for executor in (x, y):
            await executor.start()
            await executor.wait_registered()
        # Count the work signals b receives (its notifier calls the dispatcher's wake).
        assert b.notifier is not None
        signals: list[int] = []
        wake = b.notifier.on_work

        def on_work() -> None:
            signals.append(b.dispatcher.rounds)
            wake()

        b.notifier.on_work = on_work
        try:
            async with JobschedClient(a.address, timeout=10) as client:
                await client.update_queue(
                    queue_service_pb2.Queue(name="lim", max_concurrency=1), ["max_concurrency"]
                )
                blocking = (await client.submit("block", queue="lim")).id

                async def running() -> None:
                    job = await client.get(blocking)
                    assert job.state == job_pb2.JOB_STATE_RUNNING

                await assert_eventually(running)
                before = len(signals)
                waiting = (await client.submit("noop", queue="lim")).id

                # b heard of it and went through a round since: the queue is at its limit, so
                # y could not take it.
                async def b_looked() -> None:
                    assert len(signals) > before
                    assert b.dispatcher.rounds > signals[-1]

                await assert_eventually(b_looked)
                assert (await client.get(waiting)).state == job_pb2.JOB_STATE_QUEUED
                release.set()

                async def ran() -> None:
                    job = await client.get(waiting)
                    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
                    assert job.executor == "y"

                await assert_eventually(ran, within=5)
        finally:
            release.set()
            for executor in (x, y):
                await executor.stop(grace=1.0)
