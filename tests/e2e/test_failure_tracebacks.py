"""An unexpected exception in a handler keeps its traceback: the executor sends it with the
failure, the scheduler stores it (clipped), `jobsched status` shows it whole and the one-line
views (`ls --history`) show the exception only. A handler's deliberate failure
(NonRetryableError) is its message alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from executor.handlers import JobContext, NonRetryableError, builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.cli import cli_ok
from tests.helpers import assert_eventually
from tests.scripted import serving


def parse_the_order(order: dict[str, int]) -> int:
    return order["quantity"]  # KeyError for an order without one


def broken(ctx: JobContext) -> dict[str, int]:
    return {"quantity": parse_the_order(ctx.json())}


async def refuses(ctx: JobContext) -> None:
    raise NonRetryableError("order 7 was withdrawn")


@pytest.fixture
async def server(db: Database) -> AsyncIterator[SchedulerServer]:
    registry = builtin_registry(extra=[("broken", broken), ("refuses", refuses)])
    async with serving(db) as running:
        executor = Executor([running.address], name="tb", capacity=2, registry=registry)
        await executor.start()
        try:
            yield running
        finally:
            await executor.stop(1.0)


async def dead(client: JobschedClient, job_id: str) -> job_pb2.Job:
    async def ended() -> job_pb2.Job:
        job = await client.get(job_id)
        assert job.state == job_pb2.JOB_STATE_DEAD
        return job

    return await assert_eventually(ended, within=20)


async def test_a_handlers_traceback_is_kept_and_shown(server: SchedulerServer) -> None:
    async with JobschedClient(server.address, timeout=10) as client:
        job = await client.submit("broken", payload={"sku": "A-1"}, max_attempts=1)
        refused = await client.submit("refuses", max_attempts=3)
        failed = await dead(client, job.id)
        first, _, traceback = failed.last_error.partition("\n\n")
        assert first == "KeyError: 'quantity'"
        assert traceback.startswith("Traceback (most recent call last):")
        # The frames name the handler and the function that raised, innermost last.
        assert traceback.index(", in broken\n") < traceback.index(", in parse_the_order\n")
        assert (await dead(client, refused.id)).last_error == "order 7 was withdrawn"

    status = await cli_ok(server.address, "status", job.id)
    assert "KeyError: 'quantity'" in status
    assert "in parse_the_order" in status
    history = await cli_ok(server.address, "ls", "--history", "--type", "broken")
    row = next(line for line in history.splitlines() if job.id in line)
    assert "KeyError: 'quantity' (more: jobsched status)" in row
    assert "Traceback" not in history
