"""Fault catalogue case 25, the ping flood (tests/faults/CASES.md): raw HTTP/2 connections
flood PINGs at a real scheduler process. The server's keepalive policy (jobsched.keepalive:
a minimum ping interval and a strike limit) sends each flooder away with GOAWAY
ENHANCE_YOUR_CALM "too_many_pings", while another client's submits all succeed, the executor
keeps its stream, and the leader's renewals (leadership.renewed_at, sampled all through the
flood) stay well within its renew timeout. Ends with the invariant checker."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from sqlalchemy import text

from jobsched import keepalive
from jobsched.client import JobschedClient, job_spec
from scheduler.store.database import Database
from tests.faults.harness import Cluster, leader_epoch
from tests.faults.invariants import Observed, assert_invariants
from tests.faults.raw_h2 import ENHANCE_YOUR_CALM, FloodResult, ping_flood
from tests.faults.test_process_faults import all_end, executors_connected, states
from tests.helpers import assert_eventually

pytestmark = pytest.mark.timeout(120)

RENEW_TIMEOUT = 2.0  # the leader's; it renews every RENEW_TIMEOUT / 3
FLOODERS = 4  # connections flooding at once, each replaced as soon as it is sent away
SUBMITS = 30


async def test_25_a_ping_flood_is_sent_away_while_submits_and_the_leader_carry_on(
    cluster: Cluster, db: Database
) -> None:
    scheduler = await cluster.scheduler("s1", "--leader-renew-timeout", str(RENEW_TIMEOUT))
    await cluster.executor("e1", [scheduler.address], 4)
    await executors_connected(scheduler.address, 1)

    async def leading() -> tuple[str, int]:
        found = await leader_epoch(db)
        assert found[0], found
        return found

    leader, epoch = await assert_eventually(leading, within=20)

    floods: list[FloodResult] = []
    renewals: list[tuple[int, float]] = []  # (epoch, renewed_at as epoch seconds, db clock)
    flooding = asyncio.Event()
    flooding.set()

    async def flooder() -> None:
        while flooding.is_set():
            floods.append(await ping_flood(scheduler.address))

    async def sample_renewals() -> None:
        while flooding.is_set():
            async with db.read() as conn:
                row = (
                    await conn.execute(
                        text("SELECT epoch, extract(epoch FROM renewed_at) FROM leadership")
                    )
                ).one()
            if not renewals or renewals[-1] != (int(row[0]), float(row[1])):
                renewals.append((int(row[0]), float(row[1])))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample_renewals())
    flooders = [asyncio.create_task(flooder()) for _ in range(FLOODERS)]
    ids: list[str] = []
    try:
        async with JobschedClient(scheduler.address) as client:
            for _ in range(SUBMITS):  # one at a time, all through the flood
                ids.append((await client.submit_job(job_spec("noop"))).job.id)

        async def flooded_long_enough() -> None:
            # Several renew intervals and many connections sent away while the flood lasted.
            assert len(renewals) >= 6, renewals
            assert len(floods) >= 20, len(floods)

        await assert_eventually(flooded_long_enough, within=30, interval=0.1)
    finally:
        flooding.clear()
        await asyncio.gather(*flooders, sampler)

    # Every flooding connection was sent away by the server's ping policy, none left open.
    assert floods
    for result in floods:
        assert result.goaway is not None, result
        assert result.goaway.error_code == ENHANCE_YOUR_CALM, result
        assert result.goaway.debug == b"too_many_pings", result
        # The first ping is on time; each one after it is a strike, and one past the limit
        # ends the connection.
        assert result.pings_sent <= keepalive.MAX_PING_STRIKES + 2, result
    # The leader kept leading, renewing on time all through the flood.
    assert {e for e, _at in renewals} == {epoch}, renewals
    gaps = [b - a for (_e, a), (_f, b) in itertools.pairwise(renewals)]
    assert max(gaps) < RENEW_TIMEOUT, gaps
    assert (await leader_epoch(db)) == (leader, epoch)
    # The other client's submits were all acknowledged and run, once each, on the executor's
    # stream, which the flood did not touch.
    await all_end(db, ids, "succeeded", within=30)
    assert {(a, e) for _s, a, e in (await states(db, ids)).values()} == {(1, "e1")}
    await executors_connected(scheduler.address, 1)
    await assert_invariants(db, Observed(acknowledged=set(ids)))
