"""Fault catalogue cases on the links to a scheduler (tests/faults/CASES.md 12-15, 18), played by a
loopback fault proxy (tests/fault_proxy.py) in front of a real scheduler process: on an
executor's link a black hole, a proxy that closes idle connections, a slow link; on a client's
link a submit response lost after the commit; a cancel while the executor is partitioned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from jobsched.client import JobschedClient, job_spec
from jobsched.v1 import job_pb2
from scheduler.store.database import Database
from tests.fault_proxy import FaultProxy
from tests.faults.harness import Cluster, cluster_status
from tests.faults.invariants import Observed, assert_invariants
from tests.helpers import assert_eventually

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def proxies() -> AsyncIterator[list[FaultProxy]]:
    made: list[FaultProxy] = []
    yield made
    for proxy in made:
        await proxy.stop()


async def proxy_to(proxies: list[FaultProxy], address: str) -> FaultProxy:
    proxy = FaultProxy(address)
    await proxy.start()
    proxies.append(proxy)
    return proxy


async def executor_names(address: str) -> set[str]:
    status = await cluster_status(address)
    return {e.name for r in status.replicas for e in r.executors}


async def running_on(client: JobschedClient, job_id: str, executor: str) -> None:
    async def there() -> None:
        job = await client.get(job_id)
        assert job.state == job_pb2.JOB_STATE_RUNNING
        assert job.executor == executor

    await assert_eventually(there, within=20, interval=0.05)


async def succeeded(client: JobschedClient, job_id: str, within: float = 30) -> job_pb2.Job:
    async def done() -> None:
        assert (await client.get(job_id)).state == job_pb2.JOB_STATE_SUCCEEDED

    await assert_eventually(done, within=within, interval=0.1)
    return await client.get(job_id)


async def test_12_a_black_hole_on_an_executor_stream_moves_its_job_and_refuses_it_later(
    cluster: Cluster, db: Database, proxies: list[FaultProxy]
) -> None:
    scheduler = await cluster.scheduler("s1")
    proxy = await proxy_to(proxies, scheduler.address)
    await cluster.executor("behind-proxy", [proxy.address], 1)

    async def registered() -> None:
        assert await executor_names(scheduler.address) == {"behind-proxy"}

    await assert_eventually(registered, within=20)
    async with JobschedClient(scheduler.address) as client:
        job = await client.submit("sleep", payload={"seconds": 2})
        await running_on(client, job.id, "behind-proxy")
        proxy.black_hole()
        await cluster.executor("direct", [scheduler.address], 1)
        final = await succeeded(client, job.id)
        # Its session timed out (nothing came through), the attempt was run again elsewhere.
        assert (final.executor, final.attempt) == ("direct", 2)
        proxy.pass_through()

        async def back() -> None:
            assert "behind-proxy" in await executor_names(scheduler.address)

        await assert_eventually(back, within=30)
        again = await client.get(job.id)
        assert (again.state, again.attempt) == (job_pb2.JOB_STATE_SUCCEEDED, 2)
    await assert_invariants(db, Observed(acknowledged={job.id}))


async def test_13_a_proxy_closing_idle_connections_costs_no_attempt(
    cluster: Cluster, db: Database, proxies: list[FaultProxy]
) -> None:
    scheduler = await cluster.scheduler("s1", "--reconnect-grace", "10")
    proxy = await proxy_to(proxies, scheduler.address)
    await cluster.executor("behind-proxy", [proxy.address], 2)
    async with JobschedClient(scheduler.address) as client:
        job = await client.submit("sleep", payload={"seconds": 3})
        await running_on(client, job.id, "behind-proxy")
        # Shorter than the heartbeat interval (0.3 s): the stream is cut between heartbeats.
        proxy.close_when_idle(0.2)

        async def reconnected() -> None:
            assert proxy.connections >= 3

        await assert_eventually(reconnected, within=20, interval=0.05)
        final = await succeeded(client, job.id)
    # Every reconnect re-attached the running attempt: it was never run again.
    assert (final.executor, final.attempt) == ("behind-proxy", 1)
    await assert_invariants(db, Observed(acknowledged={job.id}))


async def test_14_heartbeats_delayed_on_a_live_stream_end_nothing(
    cluster: Cluster, db: Database, proxies: list[FaultProxy]
) -> None:
    scheduler = await cluster.scheduler("s1")
    proxy = await proxy_to(proxies, scheduler.address)
    await cluster.executor("slow-link", [proxy.address], 4)

    async def registered() -> None:
        assert await executor_names(scheduler.address) == {"slow-link"}

    await assert_eventually(registered, within=20)
    # Each way 0.6 s late: two heartbeat intervals behind, half the silence timeout (1.2 s).
    proxy.delay(0.6)
    async with JobschedClient(scheduler.address) as client:
        jobs = [await client.submit("sleep", payload={"seconds": 1}) for _ in range(4)]
        finals = [await succeeded(client, job.id) for job in jobs]
    assert {(f.executor, f.attempt) for f in finals} == {("slow-link", 1)}
    assert proxy.connections == 1  # the stream was never ended
    await assert_invariants(db, Observed(acknowledged={j.id for j in jobs}))


async def test_15_a_keyed_submit_whose_response_is_lost_after_commit_is_retried_into_one_job(
    cluster: Cluster, db: Database, proxies: list[FaultProxy]
) -> None:
    first = await cluster.scheduler("s1")
    second = await cluster.scheduler("s2")
    await cluster.executor("e1", [first.address, second.address], 2)
    proxy = await proxy_to(proxies, first.address)
    key = "order-15"

    async def stored() -> str:
        async with db.read() as conn:
            found = (
                await conn.execute(
                    text("SELECT id::text FROM jobs WHERE idempotency_key = :k"), {"k": key}
                )
            ).all()
        assert len(found) == 1, found
        return str(found[0][0])

    async with JobschedClient(f"{proxy.address},{second.address}") as client:
        warm = (await client.submit_job(job_spec("noop"))).job  # the connection is up
        # Both ways slow: the submit reaches s1 and commits, and its answer waits in the
        # proxy, where the reset below loses it.
        proxy.delay(3.0)
        submitting = asyncio.create_task(client.submit_job(job_spec("noop", idempotency_key=key)))
        job_id = await assert_eventually(stored, within=20, interval=0.01)
        assert not submitting.done()  # committed, not yet answered
        proxy.reset()
        proxy.pass_through()
        # The client sees the connection end (UNAVAILABLE) and, the submit being keyed,
        # repeats it (on the next address, s2): the stored job comes back, not a new one.
        result = await asyncio.wait_for(submitting, 30)
        assert result.job.id == job_id
        assert not result.created
        assert await stored() == job_id
        for each in (warm.id, job_id):
            await succeeded(client, each)
    await assert_invariants(db, Observed(acknowledged={warm.id, job_id}))


async def test_18_a_cancel_while_the_executor_is_partitioned_reaches_it_when_it_is_back(
    cluster: Cluster, db: Database, proxies: list[FaultProxy]
) -> None:
    # A grace and a lease longer than the partition: the attempt waits for its executor.
    scheduler = await cluster.scheduler("s1", "--reconnect-grace", "15", "--lease", "30")
    proxy = await proxy_to(proxies, scheduler.address)
    await cluster.executor("behind-proxy", [proxy.address], 1)

    async def registered() -> None:
        assert await executor_names(scheduler.address) == {"behind-proxy"}

    await assert_eventually(registered, within=20)
    async with JobschedClient(scheduler.address) as client:
        job = await client.submit("sleep", payload={"seconds": 60})
        await running_on(client, job.id, "behind-proxy")
        proxy.black_hole()

        async def partitioned() -> None:
            assert "behind-proxy" not in await executor_names(scheduler.address)

        # The scheduler has ended the silent stream; the attempt is still the executor's.
        await assert_eventually(partitioned, within=20, interval=0.05)
        cancelled = await client.cancel(job.id, "partitioned")
        assert cancelled.state == job_pb2.JOB_STATE_RUNNING  # requested, not yet honoured
        proxy.pass_through()

        async def ended() -> None:
            assert (await client.get(job.id)).state == job_pb2.JOB_STATE_CANCELLED

        await assert_eventually(ended, within=30, interval=0.1)
        final = await client.get(job.id)
    # The executor came back with its attempt, was told of the cancel and stopped its handler:
    # the job was neither run again nor left running.
    assert (final.executor, final.attempt) == ("behind-proxy", 1)
    await assert_invariants(db, Observed(acknowledged={job.id}, cancelled={job.id}))
