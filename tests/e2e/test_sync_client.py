"""jobsched.Client, the synchronous client, against a real scheduler and executor: submit, wait
for the result (decoded), watch progress and transitions, a failed job's JobFailedError, a
timeout, list and logs, and the example script examples/sync_client.py run as a process.

The scheduler serves on the test's event loop, so the blocking client runs on a worker thread
(asyncio.to_thread), as it would in a WSGI app's request thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

import jobsched
import jobsched.errors
from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.jobs import JobState
from jobsched.sync_client import Client
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.helpers import run_example
from tests.scripted import serving


async def shout(ctx: JobContext) -> dict[str, str]:
    ctx.log("shouting")
    return {"text": str(ctx.json()["text"]).upper()}


def explode(ctx: JobContext) -> None:
    raise ValueError("the handler's own words")


@pytest.fixture
async def cluster(db: Database) -> AsyncIterator[SchedulerServer]:
    registry = builtin_registry(extra=[("shout", shout), ("explode", explode)])
    async with serving(db) as server:
        executor = Executor([server.address], name="sync", capacity=4, registry=registry)
        await executor.start()
        try:
            await executor.wait_registered()
            yield server
        finally:
            await executor.stop(1.0)


async def test_submit_wait_watch_and_fail(cluster: SchedulerServer) -> None:
    def script() -> None:
        with jobsched.Client(cluster.address, timeout=10) as client:
            job = client.submit("shout", {"text": "hi"}, labels={"from": "script"})
            assert job.state in {JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED}
            assert job.wait(timeout=20) == {"text": "HI"}
            done = job.refresh()
            assert done.state is JobState.SUCCEEDED
            assert done.done
            assert isinstance(done.finished_at, datetime)
            assert done.finished_at.tzinfo is not None
            assert done.labels == {"from": "script"}
            assert list(client.logs(job.id)) == ["shouting"]

            sleeper = client.submit("sleep", {"seconds": 0.3})
            events = list(client.watch(sleeper.id))
            assert events[0].kind == "snapshot"
            assert events[-1].kind == "transition"
            assert events[-1].state is JobState.SUCCEEDED
            assert any(e.kind == "progress" for e in events)

            failing = client.submit("explode", max_attempts=1)
            with pytest.raises(jobsched.JobFailedError) as failed:
                failing.wait(timeout=20)
            assert failed.value.job.state is JobState.DEAD
            assert "the handler's own words" in failed.value.error

            slow = client.submit("sleep", {"seconds": 30})
            with pytest.raises(TimeoutError, match=r"did not end within 0\.2 s"):
                slow.wait(timeout=0.2)
            assert slow.cancel("enough").refresh().state in {
                JobState.CANCELLED,
                JobState.RUNNING,  # cancel requested; the executor stops it
            }
            ids = {j.id for j in client.history()}
            assert {job.id, sleeper.id, failing.id} <= ids

    await asyncio.wait_for(asyncio.to_thread(script), 60)


async def test_errors_are_the_clients_typed_errors(cluster: SchedulerServer) -> None:
    def script() -> None:
        with Client(cluster.address, timeout=5) as client:
            with pytest.raises(jobsched.errors.JobNotFoundError):
                client.get("00000000-0000-0000-0000-000000000000")
            with pytest.raises(jobsched.errors.InvalidArgumentError):
                client.submit("Not A Type!")

    await asyncio.wait_for(asyncio.to_thread(script), 30)


async def test_the_example_script_runs(cluster: SchedulerServer) -> None:
    lines = await run_example("sync_client.py", cluster.address)
    assert lines[0].startswith("submitted ")
    assert "state SUCCEEDED" in lines
    assert "result {'slept': 0.5}" in lines
    assert lines[-1].startswith("failed DEAD: sleep expects a payload")


async def test_the_dag_example_runs_in_dependency_order(cluster: SchedulerServer) -> None:
    lines = await run_example("dag.py", cluster.address)
    states = {line.split()[0]: line.split()[2] for line in lines[:4]}
    assert states["merge"] == "WAITING"
    assert states["report"] == "WAITING"
    order = lines[-1].removeprefix("finished in order: ").split()
    assert set(order[:2]) == {"fetch-a", "fetch-b"}
    assert order[2:] == ["merge", "report"]
