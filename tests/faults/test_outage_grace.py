"""A database outage longer than a lease while jobs run: once the store answers again the lease
rescue waits rescue_recovery_grace, so the executors' heartbeats renew their leases and the
results they kept are recorded; nothing runs twice."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2
from scheduler.store.database import Database
from tests.faults.cuttable_proxy import CuttableProxy
from tests.faults.harness import Cluster, check_nothing_lost
from tests.helpers import assert_eventually

JOBS = 4
RUN_SECONDS = 1.0  # each job's handler; the lease is 1.5 s (tests/faults/harness.py)


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[CuttableProxy]:
    running = CuttableProxy(database_url)
    await running.start()
    yield running
    await running.cut()


async def test_an_outage_longer_than_the_lease_reruns_nothing(
    cluster: Cluster, proxy: CuttableProxy, db: Database
) -> None:
    cluster.database_url = proxy.proxied(cluster.database_url)
    # Heartbeats 1 s apart (lease 1.5 s): after the outage the leader is back well before the
    # first heartbeat could renew anything, which is the race the grace is for.
    scheduler = await cluster.scheduler("s1", "--heartbeat-interval", "1.0")
    await cluster.executor("exec-1", [scheduler.address], capacity=JOBS)
    async with JobschedClient(scheduler.address) as client:
        jobs = [await client.submit("sleep", payload={"seconds": RUN_SECONDS}) for _ in range(JOBS)]

        async def all_running() -> None:
            for job in jobs:
                assert (await client.get(job.id)).state == job_pb2.JOB_STATE_RUNNING

        await assert_eventually(all_running, within=20)
        await proxy.cut()

        # Every lease runs out during the outage (seen through the test's own connection,
        # which bypasses the proxy), and by then every handler has returned.
        async def leases_expired() -> None:
            async with db.read() as conn:
                live = await conn.scalar(
                    text(
                        "SELECT count(*) FROM jobs "
                        "WHERE state = 'running' AND lease_expires_at > now()"
                    )
                )
            assert live == 0

        await assert_eventually(leases_expired, within=10)
        await proxy.restore()

        async def all_succeeded() -> None:
            for job in jobs:
                current = await client.get(job.id)
                assert current.state == job_pb2.JOB_STATE_SUCCEEDED, current.last_error

        await assert_eventually(all_succeeded, within=30)
        for job in jobs:
            current = await client.get(job.id)
            assert current.attempt == 1  # ran once: no "lease expired", no re-run
    async with db.read() as conn:
        rescued = await conn.scalar(
            text("SELECT count(*) FROM job_events WHERE reason = 'failed: lease expired'")
        )
    assert rescued == 0
    await check_nothing_lost(db, [j.id for j in jobs])
