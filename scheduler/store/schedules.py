"""Every SQL statement on schedules and schedule_fires, one named function each, the fire itself
(shared by the leader's cron loop and TriggerSchedule) and the ScheduleStore facade.

Exactly once: a fire first inserts its (schedule_id, fire_time) row — the primary key — with ON
CONFLICT DO NOTHING, and submits its job only if that insert made the row, in the same
transaction. A second firer of the same time (a deposed leader, a race) finds the row and does
nothing; a rolled-back fire leaves neither row nor job. The job's idempotency key
(`schedule:<id>:<fire time>`) is the belt to those braces. Jobs go in through the submit
statement (`insert_jobs`), so queue defaults apply as for SubmitJob.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.errors import ConcurrentModification, ScheduleNameTaken, ScheduleNotFound
from scheduler.domain.jobs import JobRecord, NewJob
from scheduler.domain.schedules import (
    CatchupPolicy,
    NewSchedule,
    OverlapAction,
    OverlapPolicy,
    ScheduleRecord,
    ScheduleRef,
    fire_idempotency_key,
    overlap_action,
)
from scheduler.domain.states import CancelAction, JobState, cancel_action
from scheduler.store.database import Database
from scheduler.store.jobs import (
    Guard,
    cancel_job,
    insert_jobs,
    request_cancel,
    select_job,
    select_jobs_by_idempotency_keys,
)

_COLUMNS = """id, tenant, name, cron, time_zone, job_template, overlap_policy, catchup_policy,
    catchup_window, paused, next_fire_at, last_fire_at, last_job_id, created_at, updated_at"""

# A cancel of the previous job that lost a race re-reads it this many times.
_CANCEL_RETRIES = 3


def _record(row: Row[Any]) -> ScheduleRecord:
    m = row._mapping
    return ScheduleRecord(
        id=str(m["id"]),
        tenant=m["tenant"],
        name=m["name"],
        cron=m["cron"],
        time_zone=m["time_zone"],
        job_template=bytes(m["job_template"]),
        overlap=OverlapPolicy(m["overlap_policy"]),
        catchup=CatchupPolicy(m["catchup_policy"]),
        catchup_window=m["catchup_window"],
        paused=m["paused"],
        next_fire_at=m["next_fire_at"],
        last_fire_at=m["last_fire_at"],
        last_job_id=str(m["last_job_id"]) if m["last_job_id"] is not None else None,
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _by_ref(sql: str) -> dict[bool, Any]:
    """The statement for a schedule named by id (True) and by name (False): `{ref}` in `sql`
    becomes the predicate, on the unique (tenant, name) index or the primary key."""
    return {
        True: text(sql.format(ref="id = CAST(:ref AS uuid)")),
        False: text(sql.format(ref="name = :ref")),
    }


def _ref_params(tenant: str, ref: ScheduleRef) -> dict[str, Any]:
    return {"tenant": tenant, "ref": ref.value}


# --- statements -------------------------------------------------------------------------------

_INSERT_SCHEDULE = text(f"""
INSERT INTO schedules (id, tenant, name, cron, time_zone, job_template, overlap_policy,
                       catchup_policy, catchup_window, next_fire_at, created_at, updated_at)
VALUES (:id, :tenant, :name, :cron, :time_zone, :job_template, :overlap,
        :catchup, :catchup_window, :next_fire_at, :now, :now)
ON CONFLICT (tenant, name) DO NOTHING
RETURNING {_COLUMNS}
""")


async def insert_schedule(
    conn: AsyncConnection, tenant: str, schedule: NewSchedule, now: datetime
) -> ScheduleRecord:
    """Store a new schedule; ScheduleNameTaken if the tenant has one of that name."""
    row = (
        await conn.execute(
            _INSERT_SCHEDULE,
            {
                "id": str(uuid.uuid4()),
                "tenant": tenant,
                "name": schedule.name,
                "cron": schedule.cron,
                "time_zone": schedule.time_zone,
                "job_template": schedule.job_template,
                "overlap": schedule.overlap.value,
                "catchup": schedule.catchup.value,
                "catchup_window": schedule.catchup_window,
                "next_fire_at": schedule.next_fire_at,
                "now": now,
            },
        )
    ).first()
    if row is None:
        raise ScheduleNameTaken(schedule.name)
    return _record(row)


_SELECT_SCHEDULE = _by_ref(f"SELECT {_COLUMNS} FROM schedules WHERE tenant = :tenant AND {{ref}}")
_LOCK_SCHEDULE = _by_ref(
    f"SELECT {_COLUMNS} FROM schedules WHERE tenant = :tenant AND {{ref}} FOR UPDATE"
)


async def select_schedule(
    conn: AsyncConnection, tenant: str, ref: ScheduleRef, *, lock: bool = False
) -> ScheduleRecord:
    """One schedule of the tenant (locked FOR UPDATE with `lock`); ScheduleNotFound otherwise."""
    statement = (_LOCK_SCHEDULE if lock else _SELECT_SCHEDULE)[ref.by_id]
    row = (await conn.execute(statement, _ref_params(tenant, ref))).first()
    if row is None:
        raise ScheduleNotFound(ref.value)
    return _record(row)


_SELECT_FIRST_PAGE = text(f"""
SELECT {_COLUMNS} FROM schedules WHERE tenant = :tenant ORDER BY name LIMIT :limit
""")
_SELECT_PAGE_AFTER = text(f"""
SELECT {_COLUMNS} FROM schedules WHERE tenant = :tenant AND name > :after ORDER BY name
LIMIT :limit
""")


async def select_schedule_page(
    conn: AsyncConnection, tenant: str, after: str | None, limit: int
) -> list[ScheduleRecord]:
    """Schedules by name after `after` (keyset on the unique (tenant, name) index)."""
    params: dict[str, Any] = {"tenant": tenant, "limit": limit}
    if after is None:
        result = await conn.execute(_SELECT_FIRST_PAGE, params)
    else:
        result = await conn.execute(_SELECT_PAGE_AFTER, {**params, "after": after})
    return [_record(r) for r in result]


_PAUSE_SCHEDULE = _by_ref(f"""
UPDATE schedules SET paused = true, updated_at = :now
WHERE tenant = :tenant AND {{ref}} AND NOT paused
RETURNING {_COLUMNS}
""")


async def pause_schedule(
    conn: AsyncConnection, tenant: str, ref: ScheduleRef, now: datetime
) -> ScheduleRecord | None:
    """Pause a running schedule; None if it is paused already or does not exist."""
    row = (
        await conn.execute(_PAUSE_SCHEDULE[ref.by_id], {**_ref_params(tenant, ref), "now": now})
    ).first()
    return _record(row) if row is not None else None


_RESUME_SCHEDULE = text(f"""
UPDATE schedules SET paused = false, next_fire_at = :next_fire_at, updated_at = :now
WHERE id = :id AND paused
RETURNING {_COLUMNS}
""")


async def resume_schedule(
    conn: AsyncConnection, schedule_id: str, next_fire_at: datetime, now: datetime
) -> ScheduleRecord | None:
    """Resume a paused schedule from `next_fire_at`; None if it is not paused."""
    row = (
        await conn.execute(
            _RESUME_SCHEDULE, {"id": schedule_id, "next_fire_at": next_fire_at, "now": now}
        )
    ).first()
    return _record(row) if row is not None else None


_DELETE_SCHEDULE = _by_ref("DELETE FROM schedules WHERE tenant = :tenant AND {ref} RETURNING id")


async def delete_schedule(conn: AsyncConnection, tenant: str, ref: ScheduleRef) -> None:
    """Delete a schedule and its fire rows (the jobs it submitted stay)."""
    row = (await conn.execute(_DELETE_SCHEDULE[ref.by_id], _ref_params(tenant, ref))).first()
    if row is None:
        raise ScheduleNotFound(ref.value)


# The leader's pick: due schedules of every tenant, by the partial index ix_schedules_due. SKIP
# LOCKED leaves a schedule being triggered or fired by someone else for the next round.
_LOCK_DUE_SCHEDULES = text(f"""
SELECT {_COLUMNS} FROM schedules
WHERE NOT paused AND next_fire_at <= :now
ORDER BY next_fire_at
LIMIT :limit
FOR UPDATE SKIP LOCKED
""")


async def lock_due_schedules(
    conn: AsyncConnection, now: datetime, limit: int
) -> list[ScheduleRecord]:
    result = await conn.execute(_LOCK_DUE_SCHEDULES, {"now": now, "limit": limit})
    return [_record(r) for r in result]


_NEXT_DUE = text("SELECT min(next_fire_at) FROM schedules WHERE NOT paused")


async def select_next_due(conn: AsyncConnection) -> datetime | None:
    """The earliest next fire time of the schedules that are not paused (the index's first)."""
    value: datetime | None = (await conn.execute(_NEXT_DUE)).scalar_one()
    return value


_CLAIM_FIRE = text("""
INSERT INTO schedule_fires (schedule_id, fire_time, outcome, created_at)
VALUES (:schedule_id, :fire_time, :outcome, :now)
ON CONFLICT (schedule_id, fire_time) DO NOTHING
RETURNING fire_time
""")


async def claim_fire(
    conn: AsyncConnection, schedule_id: str, fire_time: datetime, outcome: str, now: datetime
) -> bool:
    """Record the fire (outcome 'submitted', 'skipped' or 'triggered'); False if it was recorded
    before: then it happened already and must not happen again."""
    row = (
        await conn.execute(
            _CLAIM_FIRE,
            {"schedule_id": schedule_id, "fire_time": fire_time, "outcome": outcome, "now": now},
        )
    ).first()
    return row is not None


_SET_FIRE_JOB = text("""
UPDATE schedule_fires SET job_id = :job_id WHERE schedule_id = :schedule_id AND fire_time = :fire_time
""")


async def set_fire_job(
    conn: AsyncConnection, schedule_id: str, fire_time: datetime, job_id: str
) -> None:
    await conn.execute(
        _SET_FIRE_JOB, {"schedule_id": schedule_id, "fire_time": fire_time, "job_id": job_id}
    )


_AFTER_FIRES = text(f"""
UPDATE schedules
SET next_fire_at = COALESCE(:next_fire_at, next_fire_at),
    last_fire_at = COALESCE(:last_fire_at, last_fire_at),
    last_job_id = COALESCE(CAST(:last_job_id AS uuid), last_job_id),
    updated_at = :now
WHERE id = :id
RETURNING {_COLUMNS}
""")


async def update_after_fires(
    conn: AsyncConnection,
    schedule_id: str,
    *,
    next_fire_at: datetime | None,
    last_fire_at: datetime | None,
    last_job_id: str | None,
    now: datetime,
) -> ScheduleRecord:
    """Advance the next fire time (None: keep it) and record the last submitted fire (None:
    keep the previous one)."""
    row = (
        await conn.execute(
            _AFTER_FIRES,
            {
                "id": schedule_id,
                "next_fire_at": next_fire_at,
                "last_fire_at": last_fire_at,
                "last_job_id": last_job_id,
                "now": now,
            },
        )
    ).one()
    return _record(row)


_PAUSE_BROKEN = text("UPDATE schedules SET paused = true, updated_at = :now WHERE id = :id")


async def pause_broken_schedule(conn: AsyncConnection, schedule_id: str, now: datetime) -> None:
    """Pause a schedule whose stored cron or template no longer validates (it cannot fire)."""
    await conn.execute(_PAUSE_BROKEN, {"id": schedule_id, "now": now})


# --- one fire ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fired:
    """What one fire did."""

    schedule_id: str
    fire_time: datetime
    job: JobRecord | None = None  # the job submitted (None: skipped, or fired before)
    skipped: bool = False  # the overlap policy SKIP skipped it
    duplicate: bool = False  # this fire had happened already: nothing was done
    # The previous fire's job, cancelled (or, RUNNING, asked to stop) by CANCEL_PREVIOUS.
    cancelled: JobRecord | None = None


async def _cancel_previous(
    conn: AsyncConnection, job: JobRecord | None, now: datetime, reason: str, actor: str
) -> JobRecord | None:
    """Cancel a job that has not ended (RUNNING: ask its executor), guarded by what was read;
    a lost race reads it again."""
    for _ in range(_CANCEL_RETRIES):
        if job is None or job.state.is_terminal:
            return None
        guard = Guard(job.tenant, job.id, job.state, job.attempt)
        try:
            if cancel_action(job.state) is CancelAction.REQUEST:
                return await request_cancel(conn, guard, now)
            return await cancel_job(conn, guard, now, reason, actor)
        except ConcurrentModification:
            job = await select_job(conn, job.tenant, job.id)
    raise ConcurrentModification(f"job {job.id if job else ''} kept changing while cancelled")


async def _submit(
    conn: AsyncConnection,
    schedule: ScheduleRecord,
    template: NewJob,
    fire_time: datetime,
    now: datetime,
    actor: str,
) -> JobRecord:
    key = fire_idempotency_key(schedule.id, fire_time)
    job = replace(template, idempotency_key=key, run_at=now, state=JobState.QUEUED)
    inserted = await insert_jobs(conn, schedule.tenant, [job], actor)
    if inserted:
        return next(iter(inserted.values()))
    existing = await select_jobs_by_idempotency_keys(conn, schedule.tenant, [key])
    if key not in existing:
        raise ConcurrentModification(f"job with idempotency key {key!r} changed concurrently")
    return existing[key]


async def fire(
    conn: AsyncConnection,
    schedule: ScheduleRecord,
    fire_time: datetime,
    template: NewJob,
    *,
    previous_job_id: str | None,
    now: datetime,
    actor: str,
    outcome: str = "submitted",
) -> Fired:
    """Fire `schedule` at `fire_time` in the caller's transaction (which holds the schedule's
    row lock): apply the overlap policy to the previous fire's job, record the fire, submit the
    template's job. Nothing at all if this fire was recorded before."""
    previous: JobRecord | None = None
    action = OverlapAction.SUBMIT
    if previous_job_id is not None and schedule.overlap is not OverlapPolicy.ALLOW:
        previous = await select_job(conn, schedule.tenant, previous_job_id)
        action = overlap_action(schedule.overlap, previous.state if previous else None)
    skipped = action is OverlapAction.SKIP
    if not await claim_fire(conn, schedule.id, fire_time, "skipped" if skipped else outcome, now):
        return Fired(schedule.id, fire_time, duplicate=True)
    if skipped:
        return Fired(schedule.id, fire_time, skipped=True)
    cancelled = None
    if action is OverlapAction.CANCEL_PREVIOUS:
        reason = f"cancelled by schedule {schedule.name}: its next run started"
        cancelled = await _cancel_previous(conn, previous, now, reason, actor)
    job = await _submit(conn, schedule, template, fire_time, now, actor)
    await set_fire_job(conn, schedule.id, fire_time, job.id)
    return Fired(schedule.id, fire_time, job=job, cancelled=cancelled)


# --- the facade -------------------------------------------------------------------------------


class ScheduleStore:
    """Transactions of ScheduleService. Raises domain errors only."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, tenant: str, schedule: NewSchedule, now: datetime) -> ScheduleRecord:
        async with self.db.transaction() as conn:
            return await insert_schedule(conn, tenant, schedule, now)

    async def get(self, tenant: str, ref: ScheduleRef) -> ScheduleRecord:
        async with self.db.read() as conn:
            return await select_schedule(conn, tenant, ref)

    async def list_page(self, tenant: str, after: str | None, limit: int) -> list[ScheduleRecord]:
        async with self.db.read() as conn:
            return await select_schedule_page(conn, tenant, after, limit)

    async def pause(self, tenant: str, ref: ScheduleRef, now: datetime) -> ScheduleRecord:
        """Idempotent: a paused schedule is returned unchanged (nothing written)."""
        async with self.db.transaction() as conn:
            paused = await pause_schedule(conn, tenant, ref, now)
            return paused if paused is not None else await select_schedule(conn, tenant, ref)

    async def resume(
        self, tenant: str, ref: ScheduleRef, now: datetime
    ) -> tuple[ScheduleRecord, bool]:
        """(schedule, resumed): a paused schedule fires again from its next fire time after
        `now` (those missed while paused are not caught up); one not paused is unchanged."""
        async with self.db.transaction() as conn:
            current = await select_schedule(conn, tenant, ref, lock=True)
            if not current.paused:
                return current, False
            resumed = await resume_schedule(conn, current.id, current.rule.next_after(now), now)
            assert resumed is not None  # the row is locked and paused
            return resumed, True

    async def delete(self, tenant: str, ref: ScheduleRef) -> None:
        async with self.db.transaction() as conn:
            await delete_schedule(conn, tenant, ref)

    async def trigger(
        self,
        tenant: str,
        ref: ScheduleRef,
        now: datetime,
        template_of: Callable[[ScheduleRecord], NewJob],
        actor: str,
    ) -> tuple[ScheduleRecord, Fired]:
        """Fire the schedule now, outside its cron rhythm (its next fire time is unchanged).
        Waits for a fire of the same schedule in progress (row lock)."""
        async with self.db.transaction() as conn:
            schedule = await select_schedule(conn, tenant, ref, lock=True)
            fired = await fire(
                conn,
                schedule,
                now,
                template_of(schedule),
                previous_job_id=schedule.last_job_id,
                now=now,
                actor=actor,
                outcome="triggered",
            )
            if fired.duplicate:
                # Another trigger (or a fire) recorded this very instant: try again.
                raise ConcurrentModification(f"schedule {schedule.name} fired at {now}; retry")
            if fired.job is not None:
                schedule = await update_after_fires(
                    conn,
                    schedule.id,
                    next_fire_at=None,
                    last_fire_at=now,
                    last_job_id=fired.job.id,
                    now=now,
                )
            return schedule, fired
