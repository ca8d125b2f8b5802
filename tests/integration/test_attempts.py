"""Running attempts in the store: the batched SKIP LOCKED claim and fenced outcomes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from scheduler.domain.errors import ConcurrentModification, InvalidTransition
from scheduler.domain.jobs import JobRecord
from scheduler.domain.retry import RetryPolicy, after_failure
from scheduler.domain.states import JobState
from scheduler.domain.validation import JobSpecInput, validate_batch
from scheduler.store.attempts import claim_jobs, fail_attempt, succeed_attempt
from scheduler.store.database import Database
from scheduler.store.jobs import Guard, JobStore

TENANT = "default"
LEASE = timedelta(seconds=30)
POLICY = RetryPolicy(initial=timedelta(seconds=5), multiplier=2, jitter=0)


async def submit(store: JobStore, now: datetime, *specs: JobSpecInput) -> list[JobRecord]:
    submitted = await store.submit(TENANT, validate_batch(list(specs), now))
    return [s.job for s in submitted]


async def claim(db: Database, now: datetime, **kwargs: object) -> list[JobRecord]:
    options: dict[str, object] = {
        "executor": "ex-1",
        "job_types": ["work"],
        "queues": [],
        "limit": 100,
        "lease": LEASE,
        "now": now,
    }
    options.update(kwargs)
    async with db.transaction() as conn:
        return await claim_jobs(conn, **options)  # type: ignore[arg-type]


async def events(db: Database, job_id: str) -> list[tuple[str | None, str, int]]:
    async with db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT from_state::text, to_state::text, attempt FROM job_events "
                "WHERE job_id = :id ORDER BY seq"
            ),
            {"id": job_id},
        )
        return [(r[0], r[1], r[2]) for r in rows]


def guard(job: JobRecord) -> Guard:
    return Guard(job.tenant, job.id, job.state, job.attempt)


async def test_claim_takes_priority_then_run_at_then_id_and_starts_a_new_attempt(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    low, high, medium = await submit(
        store,
        now,
        JobSpecInput(type="work", priority=10),
        JobSpecInput(type="work", priority=90),
        JobSpecInput(type="work", priority=50),
    )
    claimed_at = now + timedelta(seconds=1)
    claimed = await claim(db, claimed_at, limit=2)
    assert [j.id for j in claimed] == [high.id, medium.id]
    async with db.read() as conn:
        lease = await conn.scalar(
            text("SELECT lease_expires_at FROM jobs WHERE id = :id"), {"id": high.id}
        )
    assert lease == claimed_at + LEASE
    for job in claimed:
        assert job.state is JobState.RUNNING
        assert job.attempt == 1
        assert job.executor == "ex-1"
    assert await events(db, high.id) == [(None, "queued", 0), ("queued", "running", 1)]
    assert (await store.get(TENANT, low.id)).state is JobState.QUEUED


async def test_claim_matches_job_types_and_queues_and_skips_future_jobs(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    mail, other_type, report, later = await submit(
        store,
        now,
        JobSpecInput(type="work", queue="mail"),
        JobSpecInput(type="other", queue="mail"),
        JobSpecInput(type="work", queue="reports"),
        JobSpecInput(type="work", queue="mail", run_at=now + timedelta(hours=1)),
    )
    claimed = await claim(db, now + timedelta(seconds=1), queues=["mail"])
    assert [j.id for j in claimed] == [mail.id]
    assert await claim(db, now, job_types=[]) == []
    assert await claim(db, now, limit=0) == []
    assert {j.id for j in await claim(db, now + timedelta(seconds=1))} == {report.id}
    assert (await store.get(TENANT, later.id)).state is JobState.SCHEDULED
    assert (await store.get(TENANT, other_type.id)).state is JobState.QUEUED


async def test_concurrent_claims_never_hand_out_a_job_twice(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    jobs = await submit(store, now, *[JobSpecInput(type="work") for _ in range(300)])
    later = now + timedelta(seconds=1)
    batches = await asyncio.gather(
        *[claim(db, later, executor=f"ex-{i}", limit=40) for i in range(10)]
    )
    claimed = [j.id for batch in batches for j in batch]
    assert len(claimed) == len(set(claimed))  # disjoint
    assert len(claimed) == min(300, 10 * 40)
    assert set(claimed) <= {j.id for j in jobs}


async def test_success_is_recorded_once_for_the_claimed_attempt_only(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    [job] = await submit(store, now, JobSpecInput(type="work"))
    [running] = await claim(db, now + timedelta(seconds=1))

    stale = Guard(TENANT, job.id, JobState.RUNNING, running.attempt - 1)
    with pytest.raises(ConcurrentModification):
        async with db.transaction() as conn:
            await succeed_attempt(conn, stale, b"old", now, "executor:ex-0")

    async with db.transaction() as conn:
        done = await succeed_attempt(conn, guard(running), b"ok", now, "executor:ex-1")
    assert done.state is JobState.SUCCEEDED
    assert done.result == b"ok"
    assert done.finished_at == now

    # A second outcome for the same attempt is refused and changes nothing.
    with pytest.raises(ConcurrentModification):
        async with db.transaction() as conn:
            await succeed_attempt(conn, guard(running), b"again", now, "executor:ex-1")
    assert (await store.get(TENANT, job.id)).result == b"ok"
    assert [e[1] for e in await events(db, job.id)] == ["queued", "running", "succeeded"]


async def test_failure_with_attempts_left_is_scheduled_after_backoff_then_dead(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    [job] = await submit(store, now, JobSpecInput(type="work", max_attempts=2))
    [first] = await claim(db, now + timedelta(seconds=1))

    outcome = after_failure(attempt=1, max_attempts=2, retryable=True, now=now, policy=POLICY)
    async with db.transaction() as conn:
        retrying = await fail_attempt(conn, guard(first), outcome, "boom", now, "executor:ex-1")
    assert retrying.state is JobState.SCHEDULED
    assert retrying.run_at == now + timedelta(seconds=5)
    assert retrying.last_error == "boom"
    assert retrying.finished_at is None

    # Promote as the scheduler will (run_at reached), claim the second and last attempt.
    async with db.transaction() as conn:
        await conn.execute(text("UPDATE jobs SET state = 'queued' WHERE id = :id"), {"id": job.id})
    [second] = await claim(db, now + timedelta(seconds=10))
    assert second.attempt == 2

    final = after_failure(attempt=2, max_attempts=2, retryable=True, now=now, policy=POLICY)
    async with db.transaction() as conn:
        dead = await fail_attempt(conn, guard(second), final, "boom again", now, "executor:ex-1")
    assert dead.state is JobState.DEAD
    assert dead.finished_at == now
    assert dead.last_error == "boom again"
    history = await events(db, job.id)
    assert [(e[1], e[2]) for e in history] == [
        ("queued", 0),
        ("running", 1),
        ("scheduled", 1),
        ("running", 2),
        ("dead", 2),
    ]


async def test_outcomes_for_a_job_that_is_not_running_are_invalid(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    [job] = await submit(store, now, JobSpecInput(type="work"))
    with pytest.raises(InvalidTransition):
        async with db.transaction() as conn:
            await succeed_attempt(conn, guard(job), b"", now, "executor:ex-1")
    assert (await store.get(TENANT, job.id)).state is JobState.QUEUED
