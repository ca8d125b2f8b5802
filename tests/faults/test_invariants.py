"""The invariant checker (tests/faults/invariants.py) catches each violation it names: a clean
history passes, and each forged breach of one invariant is reported under that invariant with
the job's id. Histories are forged with SQL on a real database (job_events only takes inserts)."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.store.database import Database
from scheduler.store.jobs import JobStore
from tests.faults.invariants import Observed, Violation, check_invariants
from tests.integration.test_store import execute, new_job

NOW = datetime(2026, 12, 4, tzinfo=UTC)


async def submit(db: Database, n: int = 1) -> list[str]:
    submitted = await JobStore(db).submit("acme", [new_job(NOW) for _ in range(n)])
    return [s.job.id for s in submitted]


async def add_event(
    db: Database, job_id: str, from_state: str, to_state: str, attempt: int, actor: str
) -> None:
    """Append one event (gapless) and put the row in its new state."""
    await execute(
        db,
        "INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, reason, actor, "
        "created_at) SELECT id, event_seq + 1, CAST(:f AS job_state), CAST(:t AS job_state), "
        ":a, 'forged', :actor, clock_timestamp() FROM jobs WHERE id = :id",
        id=job_id,
        f=from_state,
        t=to_state,
        a=attempt,
        actor=actor,
    )
    await execute(
        db,
        "UPDATE jobs SET event_seq = event_seq + 1, state = CAST(:t AS job_state), attempt = :a, "
        "lease_expires_at = CASE WHEN :t = 'running' THEN now() + interval '1 minute' END, "
        "finished_at = CASE WHEN :t IN ('succeeded', 'dead', 'cancelled') THEN now() END "
        "WHERE id = :id",
        id=job_id,
        t=to_state,
        a=attempt,
    )


def found(violations: list[Violation], invariant: int, job_id: str) -> bool:
    return any(v.invariant == invariant and job_id in v.job_ids for v in violations)


async def test_a_clean_run_keeps_every_invariant(db: Database) -> None:
    [done, pending, running] = await submit(db, 3)
    await add_event(db, done, "queued", "running", 1, "executor:a")
    await add_event(db, done, "running", "succeeded", 1, "executor:a")
    await add_event(db, running, "queued", "running", 1, "executor:a")
    observed = Observed(acknowledged={done, pending, running}, watched={done: "succeeded"})
    assert await check_invariants(db, observed) == []


async def test_each_breach_is_reported_under_its_invariant(db: Database) -> None:
    ids = await submit(db, 8)
    lost, stuck, reopened, overlap, twice, uncancelled, unseen, dependent = ids
    await execute(db, "DELETE FROM jobs WHERE id = :id", id=lost)
    # 2: RUNNING with an expired lease.
    await add_event(db, stuck, "queued", "running", 1, "executor:a")
    await execute(
        db,
        "UPDATE jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = :id",
        id=stuck,
    )
    # 3: SUCCEEDED left by an executor.
    await add_event(db, reopened, "queued", "running", 1, "executor:a")
    await add_event(db, reopened, "running", "succeeded", 1, "executor:a")
    await add_event(db, reopened, "succeeded", "queued", 1, "executor:a")
    # 4: a second attempt started before the first's outcome, and one attempt ended twice.
    await add_event(db, overlap, "queued", "running", 1, "executor:a")
    await add_event(db, overlap, "queued", "running", 2, "executor:b")
    await add_event(db, twice, "queued", "running", 1, "executor:a")
    await add_event(db, twice, "running", "queued", 1, "leader:r@1")
    await add_event(db, twice, "running", "dead", 1, "executor:a")
    # 5: cancelled (acknowledged) but succeeded long after.
    await execute(
        db,
        "UPDATE jobs SET cancel_requested_at = now() - interval '1 minute' WHERE id = :id",
        id=uncancelled,
    )
    await add_event(db, uncancelled, "queued", "running", 1, "executor:a")
    await add_event(db, uncancelled, "running", "succeeded", 1, "executor:a")
    # 6: a watcher that saw RUNNING last of a job that ended.
    await add_event(db, unseen, "queued", "running", 1, "executor:a")
    await add_event(db, unseen, "running", "succeeded", 1, "executor:a")
    # 8: a dependent that ran while its dependency was still queued.
    [dependency] = await submit(db)
    await execute(
        db,
        "INSERT INTO job_dependencies (job_id, depends_on) VALUES (:j, :d)",
        j=dependent,
        d=dependency,
    )
    await add_event(db, dependent, "queued", "running", 1, "executor:a")

    observed = Observed(acknowledged=set(ids), cancelled={uncancelled}, watched={unseen: "running"})
    violations = await check_invariants(db, observed)

    assert found(violations, 1, lost)
    assert found(violations, 2, stuck)
    assert found(violations, 3, reopened)
    assert found(violations, 4, overlap)
    assert found(violations, 4, twice)
    assert found(violations, 5, uncancelled)
    assert found(violations, 6, unseen)
    assert found(violations, 8, dependent)
    assert not [v for v in violations if v.invariant == 0]  # the forged histories are gapless


async def test_a_gap_in_a_history_is_reported(db: Database) -> None:
    [job] = await submit(db)
    await execute(db, "UPDATE jobs SET event_seq = 3 WHERE id = :id", id=job)
    assert found(await check_invariants(db), 0, job)


async def test_a_cron_job_without_its_fire_is_reported(db: Database) -> None:
    [job] = await submit(db)
    await execute(
        db,
        "INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, reason, actor, "
        "created_at) SELECT id, 2, state, state, 0, 'forged', 'client', now() FROM jobs "
        "WHERE id = :id",
        id=job,
    )
    await execute(db, "UPDATE jobs SET event_seq = 2 WHERE id = :id", id=job)
    assert not [v for v in await check_invariants(db) if v.invariant == 7]
    # A job whose creation the leader wrote (as cron does) with no schedule_fires row.
    [fired] = await JobStore(db).submit("acme", [new_job(NOW)], actor="leader:r@1")
    assert found(await check_invariants(db), 7, fired.job.id)
