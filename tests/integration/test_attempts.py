"""Running attempts in the store: the batched SKIP LOCKED claim and fenced outcomes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from scheduler.domain.errors import ConcurrentModification, InvalidTransition
from scheduler.domain.jobs import JobRecord
from scheduler.domain.retry import RetryOverrides, RetryPolicy, after_failure
from scheduler.domain.states import JobState
from scheduler.domain.validation import JobSpecInput, validate_batch
from scheduler.store.attempts import (
    LostStream,
    Promotion,
    Success,
    claim_jobs,
    fail_attempt,
    promote_due_jobs,
    reattach_attempts,
    release_attempt,
    renew_leases,
    rescue_expired_leases,
    rescue_timed_out,
    succeed_attempt,
    succeed_attempts,
)
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


async def lease_of(db: Database, job_id: str) -> datetime | None:
    async with db.read() as conn:
        result = await conn.execute(
            text("SELECT lease_expires_at FROM jobs WHERE id = :id"), {"id": job_id}
        )
        value: datetime | None = result.scalar_one()
        return value


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


async def test_a_released_attempt_keeps_its_number_and_is_not_counted(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    await submit(store, now, JobSpecInput(type="work", max_attempts=1))
    [running] = await claim(db, now)
    async with db.transaction() as conn:
        released = await release_attempt(conn, guard(running), now, "not acknowledged", "test")
    assert released.state is JobState.QUEUED
    assert released.attempt == 1  # the fencing token never goes back
    assert released.max_attempts == 2  # ...and the released attempt does not count
    [again] = await claim(db, now)
    assert again.attempt == 2
    with pytest.raises(ConcurrentModification):  # the released attempt is fenced off
        async with db.transaction() as conn:
            await succeed_attempt(conn, guard(running), b"", now, "test")


async def test_a_lost_stream_guard_spares_a_job_whose_lease_was_renewed_since(
    store: JobStore, db: Database
) -> None:
    lost_at = datetime.now(UTC)
    await submit(store, lost_at, JobSpecInput(type="work"))
    [running] = await claim(db, lost_at)
    outcome = after_failure(attempt=1, max_attempts=3, retryable=True, now=lost_at, policy=POLICY)
    lost = LostStream("ex-1", lost_at + LEASE)

    # Re-attached (here or on another replica) after the loss: its lease moved past the limit.
    async with db.transaction() as conn:
        [kept] = await reattach_attempts(
            conn, "ex-1", [(running.id, 1)], LEASE, lost_at + timedelta(seconds=5)
        )
    assert kept.id == running.id
    with pytest.raises(ConcurrentModification):
        async with db.transaction() as conn:
            await fail_attempt(conn, guard(running), outcome, "gone", lost_at, "test", lost)
    with pytest.raises(ConcurrentModification):  # another executor's stream is not ours
        async with db.transaction() as conn:
            await fail_attempt(
                conn,
                guard(running),
                outcome,
                "gone",
                lost_at,
                "test",
                LostStream("ex-2", lost_at + timedelta(hours=1)),
            )
    # Not renewed since: the lost stream's attempt fails.
    async with db.transaction() as conn:
        failed = await fail_attempt(
            conn,
            guard(running),
            outcome,
            "gone",
            lost_at,
            "test",
            LostStream("ex-1", lost_at + timedelta(seconds=5) + LEASE),
        )
    assert failed.state is JobState.SCHEDULED


async def test_reattach_keeps_only_attempts_still_running_on_that_executor(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    await submit(store, now, *(JobSpecInput(type="work") for _ in range(3)))
    mine, finished, other = await claim(db, now, limit=3)
    async with db.transaction() as conn:
        await succeed_attempt(conn, guard(finished), b"", now, "test")
        await conn.execute(
            text("UPDATE jobs SET executor = 'ex-2' WHERE id = :id"), {"id": other.id}
        )
        kept = await reattach_attempts(
            conn,
            "ex-1",
            [(mine.id, 1), (mine.id, 2), (finished.id, 1), (other.id, 1)],
            LEASE,
            now + timedelta(seconds=10),
        )
    assert [(j.id, j.attempt) for j in kept] == [(mine.id, 1)]
    assert await lease_of(db, mine.id) == now + timedelta(seconds=10) + LEASE
    assert await lease_of(db, other.id) == now + LEASE


async def test_lease_renewal_covers_the_streams_attempts_and_reports_requested_cancels(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    await submit(store, now, *(JobSpecInput(type="work") for _ in range(3)))
    a, b, c = await claim(db, now, limit=3)
    await store.request_cancel(guard(b), now)
    later = now + timedelta(seconds=3)
    async with db.transaction() as conn:
        cancelling = await renew_leases(conn, "ex-1", [a.id, b.id], LEASE, later)
    assert cancelling == [(b.id, 1)]
    for job in (a, b):
        assert await lease_of(db, job.id) == later + LEASE
    # Not held by the stream any more (the scheduler let go of it): its lease runs out.
    assert await lease_of(db, c.id) == now + LEASE


async def test_a_heartbeat_renews_only_the_leases_that_run_low(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    await submit(store, now, *(JobSpecInput(type="work") for _ in range(2)))
    early, late = await claim(db, now, limit=2)
    async with db.transaction() as conn:  # `late` was renewed since: its lease ends later
        await conn.execute(
            text("UPDATE jobs SET lease_expires_at = :at WHERE id = :id"),
            {"at": now + timedelta(seconds=20) + LEASE, "id": late.id},
        )
    await store.request_cancel(guard(late), now)
    # 20 s on, `early` has 10 s left and `late` 30 s: only `early` is within the 15 s.
    heartbeat = now + timedelta(seconds=20)
    async with db.transaction() as conn:
        cancelling = await renew_leases(
            conn, "ex-1", [early.id, late.id], LEASE, heartbeat, timedelta(seconds=15)
        )
    assert await lease_of(db, early.id) == heartbeat + LEASE
    assert await lease_of(db, late.id) == now + timedelta(seconds=20) + LEASE
    # A cancel is reported whether or not the job's lease was renewed.
    assert cancelling == [(late.id, 1)]


async def test_promotion_reports_the_next_run_at_to_come(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    soon, later = now + timedelta(seconds=2), now + timedelta(seconds=9)
    jobs = await submit(
        store,
        now,
        JobSpecInput(type="work", run_at=later),
        JobSpecInput(type="work", run_at=soon),
    )
    first, second = sorted(jobs, key=lambda j: j.run_at)
    async with db.transaction() as conn:
        assert await promote_due_jobs(conn, now) == Promotion((), soon)
    async with db.transaction() as conn:
        assert await promote_due_jobs(conn, soon) == Promotion((first.id,), later)
    async with db.transaction() as conn:
        assert await promote_due_jobs(conn, later) == Promotion((second.id,), None)


async def test_rescue_fails_expired_leases_and_keeps_live_ones(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    own_policy = RetryOverrides(initial=timedelta(seconds=5), jitter=0)
    await submit(
        store,
        now,
        JobSpecInput(type="work", retry=own_policy),
        JobSpecInput(type="work", max_attempts=1),
    )
    claimed = await claim(db, now, limit=2)
    [retried] = [j for j in claimed if j.max_attempts == 3]
    [last] = [j for j in claimed if j.max_attempts == 1]
    await submit(store, now, JobSpecInput(type="work"))
    [live] = await claim(db, now + LEASE)  # its lease ends later
    later = now + LEASE + timedelta(seconds=1)
    async with db.transaction() as conn:
        rescued = await rescue_expired_leases(conn, later)
    assert {(r.job_id, r.state) for r in rescued} == {
        (retried.id, JobState.SCHEDULED),
        (last.id, JobState.DEAD),
    }
    after = await store.get(TENANT, retried.id)
    assert after.last_error == "lease expired"
    assert after.run_at == later + timedelta(seconds=5)  # its own policy: 5 s, no jitter
    assert (await store.get(TENANT, last.id)).finished_at == later
    assert (await store.get(TENANT, live.id)).state is JobState.RUNNING


async def test_a_completion_racing_the_rescuer_wins_either_way(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    await submit(store, now, JobSpecInput(type="work"), JobSpecInput(type="work"))
    first, second = await claim(db, now, limit=2)
    later = now + LEASE + timedelta(seconds=1)

    # The completion holds the row when the rescuer looks: the rescuer skips it.
    async with db.transaction() as completing:
        await succeed_attempt(completing, guard(first), b"done", later, "test")
        async with db.transaction() as rescuing:
            rescued = await rescue_expired_leases(rescuing, later)
        assert [r.job_id for r in rescued] == [second.id]
    assert (await store.get(TENANT, first.id)).state is JobState.SUCCEEDED

    # The rescuer holds the row first: the completion waits, then finds the attempt fenced off
    # and changes nothing (the executor's result is stale).
    await submit(store, now, JobSpecInput(type="work"))
    [third] = await claim(db, now)
    async with db.transaction() as rescuing:
        await rescue_expired_leases(rescuing, later)

    with pytest.raises(ConcurrentModification):
        async with db.transaction() as completing:
            await succeed_attempt(completing, guard(third), b"late", later, "test")
    assert (await store.get(TENANT, third.id)).state is JobState.SCHEDULED


async def test_the_timeout_backstop_fails_attempts_past_timeout_and_grace(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    await submit(
        store,
        now,
        JobSpecInput(type="work", timeout=timedelta(seconds=60)),
        JobSpecInput(type="work"),  # no timeout: never timed out
    )
    claimed = await claim(db, now, limit=2)
    [timed] = [j for j in claimed if j.timeout is not None]
    grace = timedelta(seconds=10)
    async with db.transaction() as conn:  # within timeout + grace: left alone
        assert await rescue_timed_out(conn, now + timedelta(seconds=69), grace) == []
    later = now + timedelta(seconds=71)
    async with db.transaction() as conn:
        rescued = await rescue_timed_out(conn, later, grace)
    assert [(r.job_id, r.state) for r in rescued] == [(timed.id, JobState.SCHEDULED)]
    job = await store.get(TENANT, timed.id)
    assert job.last_error == "timed out after 60s"
    assert ("running", "scheduled", 1) in await events(db, timed.id)


async def test_an_attempt_ending_while_its_cancel_is_requested_cancels_the_job(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    await submit(store, now, *(JobSpecInput(type="work") for _ in range(3)))
    failing, released, expired = await claim(db, now, limit=3)
    for job in (failing, released, expired):
        await store.request_cancel(guard(job), now)
    outcome = after_failure(attempt=1, max_attempts=3, retryable=True, now=now, policy=POLICY)
    async with db.transaction() as conn:
        await fail_attempt(conn, guard(failing), outcome, "boom", now, "test")
        await release_attempt(conn, guard(released), now, "handed back", "test")
        await rescue_expired_leases(conn, now + LEASE + timedelta(seconds=1))
    for job in (failing, released, expired):
        after = await store.get(TENANT, job.id)
        assert after.state is JobState.CANCELLED  # not tried again: the cancel is honoured
        assert after.finished_at is not None


async def test_many_successes_are_recorded_in_one_statement_and_stale_ones_change_nothing(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    await submit(store, now, *(JobSpecInput(type="work") for _ in range(3)))
    a, b, c = await claim(db, now, limit=3)
    async with db.transaction() as conn:
        await succeed_attempt(conn, guard(c), b"first", now, "test")  # c is done already
        succeeded = await succeed_attempts(
            conn,
            [
                Success(a.id, 1, b"A", "executor:x"),
                Success(b.id, 2, b"B", "executor:x"),  # not its attempt: stale
                Success(c.id, 1, b"C", "executor:x"),  # no longer running: stale
            ],
            now,
        )
    assert succeeded == {a.id}
    done = await store.get(TENANT, a.id)
    assert (done.state, done.result) == (JobState.SUCCEEDED, b"A")
    assert (await store.get(TENANT, b.id)).state is JobState.RUNNING
    assert (await store.get(TENANT, c.id)).result == b"first"
    assert ("running", "succeeded", 1) in await events(db, a.id)


async def test_a_reattach_keeps_only_attempts_of_the_sessions_tenants(
    store: JobStore, db: Database
) -> None:
    """A session token proves the executor's name, not what its (new) key may run."""
    now = datetime.now(UTC)
    [job] = await submit(store, now, JobSpecInput(type="work"))
    [claimed] = await claim(db, now)
    held = [(claimed.id, claimed.attempt)]
    async with db.transaction() as conn:
        assert await reattach_attempts(conn, "ex-1", held, LEASE, now, ["other"]) == []
        kept = await reattach_attempts(conn, "ex-1", held, LEASE, now, [TENANT, "other"])
        assert [j.id for j in kept] == [job.id]
        assert [j.id for j in await reattach_attempts(conn, "ex-1", held, LEASE, now)] == [job.id]
