"""max_connection_age: the scheduler closes connections past that age (after a grace of three
heartbeat intervals), and everyone carries on over a new connection: an executor's Connect
stream reconnects and keeps its running job (same attempt, never rescued), and a client's
channel keeps answering."""

from __future__ import annotations

import asyncio
import contextlib
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


class CountWatches(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method.rsplit("/", 1)[-1]
        self.calls[method] = self.calls.get(method, 0) + 1
        return await continuation(handler_call_details)


async def test_watchers_resume_across_connection_ages(db: Database) -> None:
    """A WatchJob stream cut by the connection age is resumed after its last sequence number:
    every log line arrives once, in order, and the watch ends at the terminal event; a WatchJobs
    stream is subscribed again and says changes were dropped in between."""
    counter = CountWatches()
    release = asyncio.Event()
    lines = 12

    async def chatty(ctx: JobContext) -> str:
        for number in range(1, lines + 1):
            ctx.log(f"line {number}")
            await asyncio.sleep(0.15)  # the handler's own pace, spread over several ages
        await release.wait()
        return "done"

    registry = builtin_registry(extra=[("chatty", chatty)])
    async with (
        serving(
            db, [counter], max_connection_age=timedelta(seconds=0.3), heartbeat_interval=0.2
        ) as server,
        JobschedClient(server.address, timeout=10) as client,
    ):
        executor = Executor([server.address], name="talker", capacity=1, registry=registry)
        await executor.start()
        try:
            job = await client.submit("chatty")
            changes = client.watch_jobs(type="chatty")
            seen_kinds: list[str] = []

            async def follow_changes() -> None:
                async for item in changes:
                    seen_kinds.append(item.WhichOneof("item") or "")

            follower = asyncio.create_task(follow_changes())
            logged: list[str] = []
            states: list[int] = []
            async for item in client.watch(job.id):
                if item.HasField("log"):
                    logged.append(item.log.line)
                    if len(logged) == lines:
                        release.set()
                elif item.HasField("event"):
                    states.append(item.event.to_state)
            assert logged == [f"line {n}" for n in range(1, lines + 1)]
            assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED
            assert counter.calls["WatchJob"] >= 2, "the watch was never cut: the test is vacuous"

            async def resubscribed() -> None:
                assert counter.calls["WatchJobs"] >= 2
                assert "changes_dropped" in seen_kinds
                after = seen_kinds[seen_kinds.index("changes_dropped") + 1 :]
                assert after[:1] == ["subscribed"]

            await assert_eventually(resubscribed, within=15)
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        finally:
            await executor.stop(1.0)
