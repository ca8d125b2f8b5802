"""Schedules on a real PostgreSQL, fired by the leader's cron loop with an injected clock: the
Berlin daylight-saving days, exactly once across racing firers and a leader change mid-fire,
catch-up none/latest/all, overlap skip/cancel_previous/allow, pause/resume, trigger."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import text

from jobsched.v1 import job_pb2, schedule_service_pb2
from scheduler.api.schedule_service import job_from_template, validate_schedule
from scheduler.domain.errors import LeadershipLost, ScheduleNameTaken, ScheduleNotFound
from scheduler.domain.schedules import ScheduleRecord, schedule_ref
from scheduler.domain.states import JobState
from scheduler.maintenance.cron import CronFirer
from scheduler.store.database import Database
from scheduler.store.leadership import check_epoch
from scheduler.store.schedules import Fired, ScheduleStore
from tests.helpers import utc, waiting_on_a_lock

TENANT = "acme"
pb = schedule_service_pb2


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, *fields: int) -> datetime:
        """Move to utc(*fields)."""
        self.now = utc(*fields)
        return self.now


@dataclass
class FakeLeader:
    epoch: int | None = 1
    replica_id: str = "replica-a"
    is_leader: bool = True


@pytest.fixture
async def leadership(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "INSERT INTO leadership (id, epoch, leader, since, renewed_at, backend_pid) "
                "VALUES (1, 1, 'replica-a', now(), now(), 0)"
            )
        )


@pytest.fixture
def clock() -> Clock:
    return Clock(utc(2026, 5, 1, 11, 59, 30))


@pytest.fixture
def schedules(db: Database) -> ScheduleStore:
    return ScheduleStore(db)


def firer(db: Database, clock: Clock, leader: FakeLeader | None = None, **kw: Any) -> CronFirer:
    return CronFirer(db, leader or FakeLeader(), clock, job_from_template, **kw)


async def create(
    store: ScheduleStore,
    clock: Clock,
    name: str = "nightly",
    cron: str = "0 * * * *",
    time_zone: str = "",
    *,
    overlap: int = pb.OVERLAP_POLICY_ALLOW,
    catchup: int = pb.CATCHUP_POLICY_NONE,
    window: timedelta | None = None,
    queue: str = "",
) -> ScheduleRecord:
    message = pb.Schedule(
        name=name,
        cron=cron,
        time_zone=time_zone,
        job_template=job_pb2.JobSpec(type="report", queue=queue, payload=b'{"x": 1}'),
        overlap_policy=overlap,  # type: ignore[arg-type]
        catchup_policy=catchup,  # type: ignore[arg-type]
    )
    if window is not None:
        message.catchup_window.CopyFrom(Duration(seconds=int(window.total_seconds())))
    return await store.create(TENANT, validate_schedule(message, clock()), clock())


async def fires(db: Database, schedule_id: str | None = None) -> list[tuple[datetime, str, Any]]:
    """(fire_time, outcome, job_id) of every fire, oldest first."""
    where = "WHERE schedule_id = :id" if schedule_id else ""
    async with db.read() as conn:
        rows = await conn.execute(
            text(
                f"SELECT fire_time, outcome, job_id FROM schedule_fires {where} "
                "ORDER BY fire_time, schedule_id"
            ),
            {"id": schedule_id},
        )
        return [(r[0], r[1], str(r[2]) if r[2] else None) for r in rows]


async def jobs(db: Database) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, state, idempotency_key, queue, type, max_attempts, cancel_requested_at "
                "FROM jobs ORDER BY created_at, idempotency_key"
            )
        )
        return [dict(r._mapping) for r in rows]


async def job_state(db: Database, job_id: str) -> str:
    async with db.read() as conn:
        value = (
            await conn.execute(text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id})
        ).scalar_one()
        return str(value)


async def run_until(cron: CronFirer, clock: Clock, end: datetime) -> list[Fired]:
    """Drive the loop as it runs: sleep (move the clock) to the earliest next fire, fire."""
    fired: list[Fired] = []
    while True:
        result = await cron.fire_once()
        fired += result.fired
        if result.more:
            continue
        assert result.next_due is not None
        if result.next_due > end:
            clock.now = end
            fired += (await cron.fire_once()).fired
            return fired
        clock.now = max(clock.now, result.next_due)


# --- the store ---------------------------------------------------------------------------------


async def test_create_get_list_pause_resume_delete(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    created = await create(schedules, clock, "nightly", "30 2 * * *", "europe/berlin")
    assert created.time_zone == "Europe/Berlin"
    assert created.next_fire_at == utc(2026, 5, 2, 0, 30)  # 02:30 CEST
    with pytest.raises(ScheduleNameTaken):
        await create(schedules, clock, "Nightly")
    by_id = await schedules.get(TENANT, schedule_ref(created.id))
    assert by_id == await schedules.get(TENANT, schedule_ref("NIGHTLY"))
    with pytest.raises(ScheduleNotFound):
        await schedules.get("other", schedule_ref(created.id))

    for name in ("c", "a", "b"):
        await create(schedules, clock, name)
    first = await schedules.list_page(TENANT, None, 2)
    assert [s.name for s in first] == ["a", "b"]
    rest = await schedules.list_page(TENANT, "b", 10)
    assert [s.name for s in rest] == ["c", "nightly"]

    paused = await schedules.pause(TENANT, schedule_ref("nightly"), clock())
    assert paused.paused
    again = await schedules.pause(TENANT, schedule_ref("nightly"), clock() + timedelta(1))
    assert again.updated_at == paused.updated_at  # idempotent: nothing written
    clock.now = utc(2026, 5, 3, 12)
    resumed, changed = await schedules.resume(TENANT, schedule_ref("nightly"), clock())
    assert changed
    assert not resumed.paused
    assert resumed.next_fire_at == utc(2026, 5, 4, 0, 30)  # from now: missed fires are not due
    _, changed = await schedules.resume(TENANT, schedule_ref("nightly"), clock())
    assert not changed

    await schedules.delete(TENANT, schedule_ref("nightly"))
    with pytest.raises(ScheduleNotFound):
        await schedules.delete(TENANT, schedule_ref("nightly"))


# --- firing ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("leadership")
async def test_a_due_schedule_fires_once_with_its_key_and_the_queue_defaults(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "INSERT INTO queues (tenant, name, default_max_attempts, updated_at) "
                "VALUES (:t, 'reports', 7, now())"
            ),
            {"t": TENANT},
        )
    schedule = await create(schedules, clock, queue="Reports")
    woken: list[Sequence[Fired]] = []
    cron = firer(db, clock, on_fired=woken.append)
    assert (await cron.fire_once()).fired == []  # 11:59:30: not due yet
    clock.set(2026, 5, 1, 12, 0, 0, 5000)
    result = await cron.fire_once()
    [fired] = result.fired
    assert fired.fire_time == utc(2026, 5, 1, 12)
    assert fired.job is not None
    assert result.next_due == utc(2026, 5, 1, 13)
    assert woken == [[fired]]
    [job] = await jobs(db)
    assert job["idempotency_key"] == f"schedule:{schedule.id}:2026-05-01T12:00:00+00:00"
    assert (job["queue"], job["type"], job["max_attempts"]) == ("reports", "report", 7)
    assert job["state"] == "queued"
    assert await fires(db) == [(utc(2026, 5, 1, 12), "submitted", str(job["id"]))]
    # Later rounds within the hour fire nothing more.
    clock.set(2026, 5, 1, 12, 30)
    assert (await cron.fire_once()).fired == []
    stored = await schedules.get(TENANT, schedule_ref(schedule.id))
    assert (stored.last_fire_at, stored.last_job_id) == (utc(2026, 5, 1, 12), str(job["id"]))
    assert stored.next_fire_at == utc(2026, 5, 1, 13)


@pytest.mark.usefixtures("leadership")
async def test_berlin_spring_forward_day_fires_0230_once_at_the_end_of_the_gap(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    clock.set(2026, 3, 27, 12)
    daily = await create(schedules, clock, "daily", "30 2 * * *", "Europe/Berlin")
    hourly = await create(schedules, clock, "hourly", "0 * * * *", "Europe/Berlin")
    await run_until(firer(db, clock), clock, utc(2026, 3, 30, 12))
    assert [f[0] for f in await fires(db, daily.id)] == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST, the end of the gap
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    # Every real hour once (local 02:00 does not exist; 03:00 CEST is 01:00 UTC).
    hours = [f[0] for f in await fires(db, hourly.id)]
    assert hours == [utc(2026, 3, 27, 12) + timedelta(hours=h) for h in range(1, 73)]


@pytest.mark.usefixtures("leadership")
async def test_berlin_fall_back_day_fires_0230_once_at_its_first_occurrence(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    clock.set(2026, 10, 24, 12)
    daily = await create(schedules, clock, "daily", "30 2 * * *", "Europe/Berlin")
    hourly = await create(schedules, clock, "hourly", "0 * * * *", "Europe/Berlin")
    cron = firer(db, clock)
    await run_until(cron, clock, utc(2026, 10, 25, 1, 29))
    # 01:30 UTC is 02:30 CET, the second occurrence: a round then fires nothing.
    clock.set(2026, 10, 25, 1, 30)
    assert (await cron.fire_once()).fired == []
    await run_until(cron, clock, utc(2026, 10, 26, 12))
    assert [f[0] for f in await fires(db, daily.id)] == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]
    # 02:00 occurs at 00:00 UTC (CEST) and 01:00 UTC (CET): it fires at the first only.
    hours = [f[0] for f in await fires(db, hourly.id)]
    expected = [utc(2026, 10, 24, 12) + timedelta(hours=h) for h in range(1, 49)]
    expected.remove(utc(2026, 10, 25, 1))
    assert hours == expected


# --- exactly once ------------------------------------------------------------------------------


@pytest.mark.usefixtures("leadership")
async def test_two_firers_racing_fire_each_time_exactly_once(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    clock.set(2026, 5, 1, 12, 0, 30)
    for i in range(5):
        await create(schedules, clock, f"s{i}", "* * * * *", catchup=pb.CATCHUP_POLICY_ALL)
    a, b = firer(db, clock, batch=2), firer(db, clock, FakeLeader(replica_id="replica-b"))
    for minute in range(1, 21):
        clock.now = utc(2026, 5, 1, 12, minute, 0, 1000)
        for _ in range(3):
            await asyncio.gather(a.fire_once(), b.fire_once(), a.fire_once())
    made = await fires(db)
    assert len(made) == 5 * 20
    assert len({(f[0], f[2]) for f in made}) == 100
    all_jobs = await jobs(db)
    assert len(all_jobs) == 100
    assert len({j["idempotency_key"] for j in all_jobs}) == 100
    assert a.fired_total + b.fired_total == 100


@pytest.mark.usefixtures("leadership")
async def test_a_leader_change_mid_fire_fires_once(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    schedule = await create(schedules, clock, cron="* * * * *")
    old = firer(db, clock, FakeLeader(epoch=1))
    new_leader = FakeLeader(epoch=None, replica_id="replica-b", is_leader=False)
    new = firer(db, clock, new_leader)
    clock.set(2026, 5, 1, 12, 0, 1)

    # The old leader is in the middle of its round (checked, fired, not committed) when the new
    # one is elected: the epoch bump waits for the old round, so it commits or rolls back whole,
    # and the new leader sees its outcome.
    async with db.transaction() as conn:
        await check_epoch(conn, 1)
        mid = await old.fire_due(conn, clock(), "leader:replica-a@1")
        assert [f.fire_time for f in mid.fired] == [utc(2026, 5, 1, 12)]

        async def elect() -> None:
            async with db.transaction() as other:
                await other.execute(text("UPDATE leadership SET epoch = 2, leader = 'replica-b'"))
            new_leader.epoch, new_leader.is_leader = 2, True

        election = asyncio.create_task(elect())

        # The election's UPDATE waits for a lock: the old round's share lock.
        await waiting_on_a_lock(db, "UPDATE leadership SET epoch = 2%")
        assert not election.done()
    await election
    assert (await new.fire_once()).fired == []
    with pytest.raises(LeadershipLost):
        await old.fire_once()
    assert [f[0] for f in await fires(db)] == [utc(2026, 5, 1, 12)]
    assert len(await jobs(db)) == 1

    # A round that dies mid-fire leaves nothing behind: the next leader fires that time once.
    clock.set(2026, 5, 1, 12, 1, 1)

    async def crash_mid_fire() -> None:
        async with db.transaction() as conn:
            await check_epoch(conn, 2)
            await new.fire_due(conn, clock(), "leader:replica-b@2")
            raise RuntimeError("crashed before the commit")

    with pytest.raises(RuntimeError):
        await crash_mid_fire()
    [fired] = (await new.fire_once()).fired
    assert fired.fire_time == utc(2026, 5, 1, 12, 1)
    assert [f[0] for f in await fires(db, schedule.id)] == [
        utc(2026, 5, 1, 12),
        utc(2026, 5, 1, 12, 1),
    ]
    assert len(await jobs(db)) == 2


@pytest.mark.usefixtures("leadership")
async def test_a_fire_recorded_before_is_not_made_again(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    schedule = await create(schedules, clock, cron="* * * * *")
    cron = firer(db, clock)
    clock.set(2026, 5, 1, 12, 0, 1)
    [first] = (await cron.fire_once()).fired
    assert first.job is not None
    # A stale firer's view: the schedule still says 12:00 is next (as if its advance was lost).
    async with db.transaction() as conn:
        await conn.execute(
            text("UPDATE schedules SET next_fire_at = :at"), {"at": utc(2026, 5, 1, 12)}
        )
    [again] = (await cron.fire_once()).fired
    assert again.duplicate
    assert again.job is None
    assert len(await jobs(db)) == 1
    stored = await schedules.get(TENANT, schedule_ref(schedule.id))
    assert stored.next_fire_at == utc(2026, 5, 1, 12, 1)
    assert stored.last_job_id == first.job.id


async def test_a_replica_that_does_not_lead_fires_nothing(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    await create(schedules, clock, cron="* * * * *")
    clock.set(2026, 5, 1, 13)
    assert (await firer(db, clock, FakeLeader(is_leader=False)).fire_once()).fired == []
    with pytest.raises(LeadershipLost):  # no leadership row: no epoch is current
        await firer(db, clock).fire_once()
    assert await fires(db) == []


# --- catch-up ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("leadership")
@pytest.mark.parametrize(
    ("catchup", "window", "expected_hours"),
    [
        (pb.CATCHUP_POLICY_NONE, None, []),
        (pb.CATCHUP_POLICY_LATEST, None, [17]),
        (pb.CATCHUP_POLICY_LATEST, timedelta(minutes=20), []),
        (pb.CATCHUP_POLICY_ALL, timedelta(hours=3), [15, 16, 17]),
        (pb.CATCHUP_POLICY_ALL, None, [12, 13, 14, 15, 16, 17]),
    ],
)
async def test_catchup_of_fires_missed_while_no_leader_ran(
    db: Database,
    schedules: ScheduleStore,
    clock: Clock,
    catchup: int,
    window: timedelta | None,
    expected_hours: list[int],
) -> None:
    schedule = await create(schedules, clock, catchup=catchup, window=window)
    clock.set(2026, 5, 1, 17, 30)  # the leader comes back after 5.5 hours
    cron = firer(db, clock, max_fires=2)  # ALL goes on over several rounds
    await run_until(cron, clock, clock())
    assert [f[0] for f in await fires(db, schedule.id)] == [
        utc(2026, 5, 1, h) for h in expected_hours
    ]
    stored = await schedules.get(TENANT, schedule_ref(schedule.id))
    assert stored.next_fire_at == utc(2026, 5, 1, 18)
    # A fire just a little late (a failover) is on time under every policy.
    clock.set(2026, 5, 1, 18, 0, 40)
    [on_time] = (await cron.fire_once()).fired
    assert on_time.fire_time == utc(2026, 5, 1, 18)


# --- overlap -----------------------------------------------------------------------------------


async def set_running(db: Database, job_id: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "UPDATE jobs SET state = 'running', attempt = 1, executor = 'e', "
                "started_at = now(), lease_expires_at = now() + interval '30 seconds' "
                "WHERE id = :id"
            ),
            {"id": job_id},
        )


async def set_succeeded(db: Database, job_id: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text("UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE id = :id"),
            {"id": job_id},
        )


@pytest.mark.usefixtures("leadership")
async def test_overlap_skip_while_the_previous_job_is_active(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    schedule = await create(schedules, clock, cron="* * * * *", overlap=pb.OVERLAP_POLICY_SKIP)
    cron = firer(db, clock)
    clock.set(2026, 5, 1, 12, 0, 1)
    [first] = (await cron.fire_once()).fired
    assert first.job is not None
    clock.set(2026, 5, 1, 12, 1, 1)
    [second] = (await cron.fire_once()).fired
    assert second.skipped
    await set_running(db, first.job.id)
    clock.set(2026, 5, 1, 12, 2, 1)
    assert (await cron.fire_once()).fired[0].skipped
    await set_succeeded(db, first.job.id)
    clock.set(2026, 5, 1, 12, 3, 1)
    [fourth] = (await cron.fire_once()).fired
    assert fourth.job is not None
    assert [(f[0].minute, f[1], f[2] is not None) for f in await fires(db, schedule.id)] == [
        (0, "submitted", True),
        (1, "skipped", False),
        (2, "skipped", False),
        (3, "submitted", True),
    ]
    stored = await schedules.get(TENANT, schedule_ref(schedule.id))
    assert stored.last_job_id == fourth.job.id
    assert stored.last_fire_at == utc(2026, 5, 1, 12, 3)


@pytest.mark.usefixtures("leadership")
async def test_overlap_cancel_previous(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    await create(schedules, clock, cron="* * * * *", overlap=pb.OVERLAP_POLICY_CANCEL_PREVIOUS)
    cron = firer(db, clock)
    clock.set(2026, 5, 1, 12, 0, 1)
    [first] = (await cron.fire_once()).fired
    assert first.job is not None
    clock.set(2026, 5, 1, 12, 1, 1)
    [second] = (await cron.fire_once()).fired
    assert second.job is not None
    assert second.cancelled is not None
    assert second.cancelled.state is JobState.CANCELLED
    assert await job_state(db, first.job.id) == "cancelled"
    async with db.read() as conn:
        reason = (
            await conn.execute(
                text("SELECT reason FROM job_events WHERE job_id = :id ORDER BY seq DESC LIMIT 1"),
                {"id": first.job.id},
            )
        ).scalar_one()
    assert reason == "cancelled by schedule nightly: its next run started"
    # A RUNNING previous job is asked to stop (its executor ends it), and the next one starts.
    await set_running(db, second.job.id)
    clock.set(2026, 5, 1, 12, 2, 1)
    [third] = (await cron.fire_once()).fired
    assert third.job is not None
    assert third.cancelled is not None
    assert third.cancelled.state is JobState.RUNNING
    assert third.cancelled.cancel_requested
    states = {str(j["id"]): j["state"] for j in await jobs(db)}
    assert states == {first.job.id: "cancelled", second.job.id: "running", third.job.id: "queued"}


@pytest.mark.usefixtures("leadership")
async def test_overlap_allow_lets_runs_overlap(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    await create(schedules, clock, cron="* * * * *", overlap=pb.OVERLAP_POLICY_ALLOW)
    cron = firer(db, clock)
    for minute in range(3):
        clock.set(2026, 5, 1, 12, minute, 1)
        await cron.fire_once()
    assert [j["state"] for j in await jobs(db)] == ["queued"] * 3


# --- pause and trigger -------------------------------------------------------------------------


@pytest.mark.usefixtures("leadership")
async def test_a_paused_schedule_does_not_fire_and_resumes_from_now(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    schedule = await create(schedules, clock, catchup=pb.CATCHUP_POLICY_ALL)
    cron = firer(db, clock)
    await schedules.pause(TENANT, schedule_ref("nightly"), clock())
    clock.set(2026, 5, 1, 15, 0, 1)
    result = await cron.fire_once()
    assert result.fired == []
    assert result.next_due is None  # only paused schedules
    await schedules.resume(TENANT, schedule_ref("nightly"), clock())
    assert (await cron.fire_once()).fired == []  # 12:00..15:00 are not caught up
    clock.set(2026, 5, 1, 16, 0, 1)
    assert [f.fire_time for f in (await cron.fire_once()).fired] == [utc(2026, 5, 1, 16)]
    assert [f[0] for f in await fires(db, schedule.id)] == [utc(2026, 5, 1, 16)]


async def test_trigger_fires_now_with_the_overlap_policy(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    schedule = await create(schedules, clock, overlap=pb.OVERLAP_POLICY_SKIP)
    ref = schedule_ref("nightly")

    def template(s: ScheduleRecord) -> Any:
        return job_from_template(s.job_template, clock())

    after, fired = await schedules.trigger(TENANT, ref, clock(), template, "client")
    assert fired.job is not None
    assert not fired.skipped
    assert after.last_job_id == fired.job.id
    assert after.last_fire_at == clock()
    assert after.next_fire_at == schedule.next_fire_at  # outside the cron rhythm
    clock.now += timedelta(seconds=1)
    _, skipped = await schedules.trigger(TENANT, ref, clock(), template, "client")
    assert skipped.skipped
    assert skipped.job is None
    assert [f[1] for f in await fires(db, schedule.id)] == ["triggered", "skipped"]
    with pytest.raises(ScheduleNotFound):
        await schedules.trigger("other", ref, clock(), template, "client")


@pytest.mark.usefixtures("leadership")
async def test_a_schedule_whose_template_no_longer_validates_is_paused(
    db: Database, schedules: ScheduleStore, clock: Clock
) -> None:
    await create(schedules, clock, "broken")
    await create(schedules, clock, "fine")
    async with db.transaction() as conn:
        bad = job_pb2.JobSpec(type="no spaces allowed").SerializeToString()
        await conn.execute(
            text("UPDATE schedules SET job_template = :t WHERE name = 'broken'"), {"t": bad}
        )
    clock.set(2026, 5, 1, 12, 0, 1)
    [fired] = (await firer(db, clock).fire_once()).fired
    assert fired.job is not None
    assert (await schedules.get(TENANT, schedule_ref("broken"))).paused
    assert not (await schedules.get(TENANT, schedule_ref("fine"))).paused
