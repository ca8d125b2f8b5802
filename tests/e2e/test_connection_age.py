"""max_connection_age: the scheduler closes connections past that age (after a grace of three
heartbeat intervals), and everyone carries on over a new connection: an executor's Connect
stream reconnects and keeps its running job (same attempt, never rescued), and a client's
channel keeps answering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import serving

CONNECT = "/jobsched.v1.ExecutorService/Connect"


class CountConnects(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.connects = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        if handler_call_details.method == CONNECT:
            self.connects += 1
        return await continuation(handler_call_details)


async def test_streams_move_to_a_new_connection_and_keep_their_jobs(db: Database) -> None:
    counter = CountConnects()
    release = asyncio.Event()

    async def hold(ctx: JobContext) -> str:
        await release.wait()
        return "held"

    registry = builtin_registry(extra=[("hold", hold)])
    async with (
        # Connections last 0.3 s (+/-10 %), then 0.6 s of grace: a stream lives about 0.9 s.
        serving(
            db,
            [counter],
            max_connection_age=timedelta(seconds=0.3),
            heartbeat_interval=0.2,
        ) as server,
        JobschedClient(server.address, timeout=10) as client,
    ):
        executor = Executor([server.address], name="aging", capacity=2, registry=registry)
        await executor.start()
        try:
            job = await client.submit("hold")

            async def running() -> None:
                assert (await client.get(job.id)).state == job_pb2.JOB_STATE_RUNNING

            await assert_eventually(running)

            async def reconnected_twice() -> None:
                assert counter.connects >= 3
                assert "aging" in server.dispatcher.sessions

            await assert_eventually(reconnected_twice, within=15)
            # The client's channel went through the same ages and still answers.
            assert (await client.get(job.id)).state == job_pb2.JOB_STATE_RUNNING
            release.set()

            async def succeeded() -> None:
                assert (await client.get(job.id)).state == job_pb2.JOB_STATE_SUCCEEDED

            await assert_eventually(succeeded)
            done, events = await client.get(job.id, include_events=True)
            assert done.attempt == 1
            assert [e.to_state for e in events] == [
                job_pb2.JOB_STATE_QUEUED,
                job_pb2.JOB_STATE_RUNNING,
                job_pb2.JOB_STATE_SUCCEEDED,
            ]
        finally:
            await executor.stop(1.0)
