"""Fault catalogue case 4 with real processes (tests/faults/CASES.md): the leader is SIGKILLed
while a cron schedule comes due, and the replica that takes over fires the tick exactly once.

Cron fires once a minute at most, so both replicas get the same test-only cron clock offset
(`--test-cron-clock-offset`, ServerSettings.test_cron_clock_offset): their cron loop and schedule
API see a minute boundary a few seconds after the test starts. Everything else (leases,
leadership, the jobs a fire submits) runs on the real clock. Ends with the invariant checker,
whose invariant 7 is that each cron fire happens once."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from jobsched.client import JobschedClient
from scheduler.store.database import Database
from tests.faults.harness import TAKEOVER_BOUND, Cluster, leader_epoch
from tests.faults.invariants import Observed, assert_invariants
from tests.faults.test_process_faults import all_end, executors_connected
from tests.helpers import assert_eventually

pytestmark = pytest.mark.timeout(120)

# Seconds from the test's start to the cron boundary: time to start two replicas and an
# executor and create the schedule first, on a loaded machine.
DUE_IN = 15.0


async def fires(db: Database, schedule_id: str) -> list[tuple[datetime, str | None]]:
    async with db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT fire_time, job_id::text FROM schedule_fires "
                "WHERE schedule_id = CAST(:id AS uuid) ORDER BY fire_time"
            ),
            {"id": schedule_id},
        )
        return [(r[0], r[1]) for r in rows]


async def next_fire_at(db: Database, schedule_id: str) -> datetime:
    async with db.read() as conn:
        value: datetime = (
            await conn.execute(
                text("SELECT next_fire_at FROM schedules WHERE id = CAST(:id AS uuid)"),
                {"id": schedule_id},
            )
        ).scalar_one()
        return value


@pytest.mark.parametrize(
    "kill_before",
    [1.5, 0.0],
    ids=["killed-before-the-tick-is-due", "killed-as-the-tick-comes-due"],
)
async def test_4_a_leader_killed_while_a_cron_tick_is_due_has_it_fired_once_by_the_next(
    cluster: Cluster, db: Database, kill_before: float
) -> None:
    # The cron clock runs `offset` seconds behind the real one, so that its next minute
    # boundary is DUE_IN seconds from now.
    offset = -((time.time() + DUE_IN) % 60)
    shifted = ("--test-cron-clock-offset", str(offset), "--cron-poll-interval", "1")
    first = await cluster.scheduler("s1", *shifted)

    async def elected() -> tuple[str, int]:
        found = await leader_epoch(db)
        assert found[0], found
        return found

    old_leader, old_epoch = await assert_eventually(elected, within=20)
    second = await cluster.scheduler("s2", *shifted)
    await cluster.executor("e1", [first.address, second.address], 2)
    await executors_connected(first.address, 1)
    async with JobschedClient(f"{first.address},{second.address}") as client:
        schedule = await client.create_schedule(
            "every-minute", "* * * * *", {"type": "noop"}, catchup="latest"
        )
    schedule_id = schedule.id
    due = await next_fire_at(db, schedule_id)
    due_real = due.timestamp() - offset  # when the cron clock reads `due`
    # The boundary the offset aimed at, still ahead (not the next one: startup took < DUE_IN).
    assert kill_before < due_real - time.time() <= DUE_IN + 1, "the machine too slow for DUE_IN"

    async def about_due() -> None:
        assert time.time() >= due_real - kill_before

    await assert_eventually(about_due, within=DUE_IN + 5, interval=0.01)
    first.signal(signal.SIGKILL)

    # The other replica takes over and fires the tick; once next_fire_at has moved past it,
    # it cannot be fired again.
    async def fired_and_moved_on() -> None:
        assert await next_fire_at(db, schedule_id) == due + timedelta(minutes=1)
        assert [t for t, _job in await fires(db, schedule_id)] == [due]

    await assert_eventually(fired_and_moved_on, within=TAKEOVER_BOUND + kill_before + 20)
    [(_t, job_id)] = await fires(db, schedule_id)
    assert job_id is not None
    new_leader, new_epoch = await leader_epoch(db)
    assert new_epoch > old_epoch
    async with db.read() as conn:
        actor = (
            await conn.execute(
                text("SELECT actor FROM job_events WHERE job_id = CAST(:id AS uuid) AND seq = 1"),
                {"id": job_id},
            )
        ).scalar_one()
    if kill_before > 0:
        # Killed before the tick was due: only its successor can have fired it.
        assert new_leader != old_leader
        assert actor == f"leader:{new_leader}@{new_epoch}", actor
    else:
        # Killed as it came due: whichever fired it, it was the leader of its time.
        assert actor in {f"leader:{old_leader}@{old_epoch}", f"leader:{new_leader}@{new_epoch}"}
    await all_end(db, [job_id], "succeeded", within=30)
    await assert_invariants(db, Observed(acknowledged={job_id}))
