"""The leader's rescue loop sleeps until the earliest deadline among the RUNNING jobs, not for
its whole interval: a lease that expires long before the interval is over is rescued at once,
and not before it expired."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from scheduler.domain.validation import JobSpecInput, validate_batch
from scheduler.store.attempts import claim_jobs
from scheduler.store.database import Database
from scheduler.store.jobs import JobStore
from tests.helpers import assert_eventually
from tests.scripted import serving

LEASE = timedelta(seconds=1.5)
INTERVAL = 60.0  # the rescue loop's longest sleep: far beyond this test


async def test_an_expiring_lease_is_rescued_at_its_deadline_not_at_the_interval(
    db: Database,
) -> None:
    now = datetime.now(UTC)
    [submitted] = await JobStore(db).submit(
        "default", validate_batch([JobSpecInput(type="ghost-work")], now)
    )
    async with db.transaction() as conn:  # an executor that vanished: no stream, no renewals
        [claimed] = await claim_jobs(
            conn,
            executor="ghost",
            job_types=["ghost-work"],
            queues=[],
            limit=1,
            lease=LEASE,
            now=now,
        )
    assert claimed.id == submitted.job.id
    started = time.monotonic()
    async with serving(db, rescue_interval=INTERVAL, leader_tick=0.1) as server:

        async def rescued() -> None:
            assert server.rescuer.rescued_total == 1

        await assert_eventually(rescued, within=10)
        elapsed = time.monotonic() - started
        async with db.read() as conn:
            event_at = (
                await conn.execute(
                    text(
                        "SELECT created_at FROM job_events WHERE job_id = :id "
                        "AND reason = 'failed: lease expired'"
                    ),
                    {"id": claimed.id},
                )
            ).scalar_one()
    assert event_at > now + LEASE  # not before the lease expired
    assert elapsed < 10  # at the deadline (plus election), far before the 60 s interval
