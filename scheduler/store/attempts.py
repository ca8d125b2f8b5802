"""Statements on running attempts: the batched claim, and the recorded outcome of an attempt.

The attempt number is the fencing token of a run: the claim increments it, and every outcome is
guarded by (state = running, attempt = the claimed one), so a result for a stale attempt matches
no row and changes nothing (ConcurrentModification).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.jobs import JobRecord, ProgressUpdate
from scheduler.domain.retry import FailureOutcome
from scheduler.domain.states import Event, JobState, check_transition
from scheduler.store.jobs import FULL_COLUMNS, Guard, row_to_job, run_guarded, transition_statement

_CLAIM = f"""
WITH candidates AS (
    SELECT id AS candidate_id FROM jobs
    WHERE state = 'queued' AND run_at <= :now AND attempt < max_attempts
      AND type = ANY(CAST(:types AS text[])) {{queues}}
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, executor = :executor,
        started_at = :now, lease_expires_at = :lease_expires_at, updated_at = :now,
        cancel_requested_at = NULL, event_seq = jobs.event_seq + 1,
        progress_percent = 0, progress_step = '', progress_message = '', progress_eta = NULL,
        progress_updated_at = NULL
    FROM candidates WHERE jobs.id = candidates.candidate_id
    RETURNING {FULL_COLUMNS}
), events AS (
    INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, executor, reason, actor,
                            created_at)
    SELECT id, event_seq, CAST('queued' AS job_state), CAST('running' AS job_state), attempt,
           executor, 'claimed', :actor, :now
    FROM claimed
)
SELECT * FROM claimed ORDER BY priority DESC, run_at, id
"""


async def claim_jobs(
    conn: AsyncConnection,
    *,
    executor: str,
    job_types: Sequence[str],
    queues: Sequence[str],
    limit: int,
    lease: timedelta,
    now: datetime,
) -> list[JobRecord]:
    """Claim up to `limit` eligible QUEUED jobs in priority, run_at, id order, in one statement.

    SKIP LOCKED: concurrent claimers (other dispatchers, other replicas) take disjoint jobs
    instead of waiting for each other. An empty `queues` means every queue."""
    if limit <= 0 or not job_types:
        return []
    params: dict[str, Any] = {
        "executor": executor,
        "types": list(job_types),
        "limit": limit,
        "now": now,
        "lease_expires_at": now + lease,
        "actor": f"executor:{executor}",
    }
    queue_filter = ""
    if queues:
        queue_filter = "AND queue = ANY(CAST(:queues AS text[]))"
        params["queues"] = list(queues)
    result = await conn.execute(text(_CLAIM.format(queues=queue_filter)), params)
    return [row_to_job(r, full=True) for r in result]


_SUCCEED = transition_statement(
    "state = 'succeeded', finished_at = :now, lease_expires_at = NULL, result = :result, "
    "progress_percent = 100, progress_updated_at = :now"
)


async def succeed_attempt(
    conn: AsyncConnection, guard: Guard, result: bytes, now: datetime, actor: str
) -> JobRecord:
    """RUNNING -> SUCCEEDED for exactly the guarded attempt."""
    check_transition(guard.state, Event.SUCCEED, JobState.SUCCEEDED)
    return await run_guarded(
        conn, _SUCCEED, guard, now, "succeeded", actor, extra={"result": result}
    )


_FAIL_RETRY = transition_statement(
    "state = 'scheduled', run_at = :run_at, last_error = :error, lease_expires_at = NULL"
)
_FAIL_FINAL = transition_statement(
    "state = 'dead', finished_at = :now, last_error = :error, lease_expires_at = NULL"
)


async def fail_attempt(
    conn: AsyncConnection,
    guard: Guard,
    outcome: FailureOutcome,
    error: str,
    now: datetime,
    actor: str,
) -> JobRecord:
    """RUNNING -> SCHEDULED (retry at outcome.run_at) or DEAD, keeping the error."""
    check_transition(guard.state, outcome.event, outcome.state)
    if outcome.state is JobState.SCHEDULED:
        return await run_guarded(
            conn,
            _FAIL_RETRY,
            guard,
            now,
            f"failed: {error}",
            actor,
            extra={"error": error, "run_at": outcome.run_at},
        )
    return await run_guarded(
        conn, _FAIL_FINAL, guard, now, f"dead: {error}", actor, extra={"error": error}
    )


_PROMOTE_DUE = text("""
WITH due AS (
    SELECT id AS due_id FROM jobs
    WHERE state = 'scheduled' AND run_at <= :now
    ORDER BY run_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), promoted AS (
    UPDATE jobs SET state = 'queued', updated_at = :now, event_seq = jobs.event_seq + 1
    FROM due WHERE jobs.id = due.due_id
    RETURNING jobs.id, jobs.event_seq, jobs.attempt
), events AS (
    INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, reason, actor, created_at)
    SELECT id, event_seq, CAST('scheduled' AS job_state), CAST('queued' AS job_state), attempt,
           'run_at reached', 'scheduler', :now
    FROM promoted
)
SELECT count(*) FROM promoted
""")


async def promote_due_jobs(conn: AsyncConnection, now: datetime, limit: int = 1000) -> int:
    """SCHEDULED jobs whose run_at has come become QUEUED (set-based, with their events)."""
    return int((await conn.execute(_PROMOTE_DUE, {"now": now, "limit": limit})).scalar_one())


_RENEW_LEASES = text("""
UPDATE jobs SET lease_expires_at = :lease_expires_at
WHERE state = 'running' AND executor = :executor
""")


async def renew_leases(
    conn: AsyncConnection, executor: str, lease: timedelta, now: datetime
) -> int:
    """One statement per executor per heartbeat renews the leases of all its running jobs."""
    result = await conn.execute(
        _RENEW_LEASES, {"executor": executor, "lease_expires_at": now + lease}
    )
    return int(getattr(result, "rowcount", 0))


_WRITE_PROGRESS = text("""
UPDATE jobs SET progress_percent = t.percent, progress_step = t.step,
    progress_message = t.message, progress_eta = t.eta, progress_updated_at = t.reported_at
FROM unnest(
    CAST(:ids AS uuid[]), CAST(:attempts AS integer[]), CAST(:percents AS double precision[]),
    CAST(:steps AS text[]), CAST(:messages AS text[]), CAST(:etas AS timestamptz[]),
    CAST(:reported AS timestamptz[])
) AS t(id, attempt, percent, step, message, eta, reported_at)
WHERE jobs.id = t.id AND jobs.state = 'running' AND jobs.attempt = t.attempt
""")


async def write_progress(conn: AsyncConnection, updates: Sequence[ProgressUpdate]) -> int:
    """Store the latest progress of many running attempts in one statement; an update for an
    attempt that is no longer running matches nothing."""
    if not updates:
        return 0
    result = await conn.execute(
        _WRITE_PROGRESS,
        {
            "ids": [u.job_id for u in updates],
            "attempts": [u.attempt for u in updates],
            "percents": [min(100.0, max(0.0, u.progress.percent)) for u in updates],
            "steps": [u.progress.step for u in updates],
            "messages": [u.progress.message for u in updates],
            "etas": [u.progress.eta for u in updates],
            "reported": [u.progress.updated_at for u in updates],
        },
    )
    return int(getattr(result, "rowcount", 0))


_RELEASE = transition_statement(
    "state = 'queued', attempt = attempt - 1, started_at = NULL, lease_expires_at = NULL"
)


async def release_attempt(
    conn: AsyncConnection, guard: Guard, now: datetime, reason: str, actor: str
) -> JobRecord:
    """RUNNING -> QUEUED for an attempt that never started (its assignment was not
    acknowledged): the attempt is handed back, not burned."""
    check_transition(guard.state, Event.RELEASE, JobState.QUEUED)
    return await run_guarded(conn, _RELEASE, guard, now, reason, actor)
