"""jobsched.AsyncClient, the asyncio client in Python objects, against a real scheduler and
executor: submit returns a Job (JobState, decoded payload), wait gives the decoded result or
JobFailedError, watch yields WatchEvents, list and logs yield Jobs and lines; the protobuf-level
client stays reachable as `.raw`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import jobsched
from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.jobs import Job, JobState
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.scripted import serving


async def add(ctx: JobContext) -> dict[str, int]:
    numbers = ctx.json()["numbers"]
    ctx.log(f"adding {len(numbers)}")
    ctx.progress(100, step="added")
    return {"sum": sum(numbers)}


def refuse(ctx: JobContext) -> None:
    raise RuntimeError("no thanks")


@pytest.fixture
async def server(db: Database) -> AsyncIterator[SchedulerServer]:
    registry = builtin_registry(extra=[("add", add), ("refuse", refuse)])
    async with serving(db) as running:
        executor = Executor([running.address], name="aio", capacity=2, registry=registry)
        await executor.start()
        try:
            await executor.wait_registered()
            yield running
        finally:
            await executor.stop(1.0)


async def test_objects_in_and_out(server: SchedulerServer) -> None:
    async with jobsched.AsyncClient(server.address, timeout=10) as client:
        job = await client.submit("add", {"numbers": [1, 2, 3]}, labels={"k": "v"})
        assert isinstance(job.job, Job)
        assert job.payload == {"numbers": [1, 2, 3]}
        assert job.state in {JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED}
        assert await job.wait(timeout=20) == {"sum": 6}
        events = [event async for event in client.watch(job.id)]
        # It had ended: the snapshot, then the stored lines of its attempt.
        assert [(e.kind, e.line) for e in events[1:]] == [("log", "adding 3")]
        assert events[0].kind == "snapshot"
        assert events[0].job is not None
        assert events[0].job.state is JobState.SUCCEEDED
        assert [line async for line in client.logs(job.id)] == ["adding 3"]
        done = await job.refresh()
        assert done.labels == {"k": "v"}
        assert done.result == {"sum": 6}

        failing = await client.submit("refuse", max_attempts=1)
        with pytest.raises(jobsched.JobFailedError) as failed:
            await failing.wait(timeout=20)
        assert failed.value.job.state is JobState.DEAD
        assert failed.value.error.startswith("RuntimeError: no thanks")

        finished = [j.id async for j in client.history()]
        assert {job.id, failing.id} <= set(finished)
        assert (await client.raw.get(job.id)).id == job.id  # the protobuf-level client
