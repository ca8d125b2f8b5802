"""Statements on running attempts: the batched claim, and the recorded outcome of an attempt.

The attempt number is the fencing token of a run: the claim increments it, and every outcome is
guarded by (state = running, attempt = the claimed one), so a result for a stale attempt matches
no row and changes nothing (ConcurrentModification).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.jobs import JobRecord, Progress, ProgressUpdate
from scheduler.domain.retry import FailureOutcome, RetryPolicy, after_failure
from scheduler.domain.states import Event, JobState, check_transition
from scheduler.store.jobs import (
    FULL_COLUMNS,
    Guard,
    row_to_job,
    run_guarded,
    transition_statement,
)
from scheduler.store.schema import TIMEOUT_DEADLINE_SQL

# Queues with a concurrency limit that are not paused, locked for the rest of the claim: claims
# touching them are serialised across all replicas, so the running count read next cannot go
# stale before the claim commits (no overshoot).
_LOCK_LIMITED_QUEUES = """
SELECT tenant, name, max_concurrency FROM queues
WHERE max_concurrency IS NOT NULL AND NOT paused {queues}
ORDER BY tenant, name
FOR UPDATE
"""

# The claim must read its indexes in order and stop after its LIMIT. With statistics taken while
# the table was small (a new database, or a burst of submits before autoanalyze catches up), the
# planner may instead expect a handful of QUEUED rows and read them all through a bitmap, then
# sort them: 20,000 QUEUED jobs took a claim of 100 from 15 to 85 ms (PostgreSQL 15). Bitmaps
# are off for the claim's transaction only; nothing in it gains from one.
_CLAIM_PLANNER = text("SELECT set_config('enable_bitmapscan', 'off', true)")

_RUNNING_IN = text("""
SELECT q.tenant, q.name, count(j.id)
FROM unnest(CAST(:tenants AS text[]), CAST(:names AS text[])) AS q(tenant, name)
LEFT JOIN jobs j ON j.state = 'running' AND j.tenant = q.tenant AND j.queue = q.name
GROUP BY q.tenant, q.name
""")

_ELIGIBLE = """
    SELECT id AS candidate_id, priority, run_at, run_at <= :starved_before AS starved FROM jobs
    WHERE state = 'queued' AND run_at <= :now AND attempt < max_attempts
      AND type = ANY(CAST(:types AS text[])) {queues} {where}
    ORDER BY {order}
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
"""
# Jobs of queues without settings that matter here (not paused, no limit).
_UNLIMITED = """AND NOT EXISTS (
        SELECT 1 FROM queues q WHERE q.tenant = jobs.tenant AND q.name = jobs.queue
          AND (q.paused OR q.max_concurrency IS NOT NULL))"""

_PRIORITY_ORDER = "priority DESC, run_at, id"
_STARVED = " AND run_at <= :starved_before"
_STARVED_ORDER = "run_at, id"
# The ranked order (see _CLAIM) over one limited queue's two parts, cut to its free slots.
_LIMITED = """
    SELECT * FROM (SELECT * FROM {priority} UNION SELECT * FROM {starved}) AS both_parts
    ORDER BY starved DESC, CASE WHEN starved THEN run_at END, priority DESC, run_at, candidate_id
    LIMIT {limit}
"""

_CLAIM = f"""
WITH {{parts}},
candidates AS (
    {{union}}
), chosen AS (
    SELECT DISTINCT ON (candidate_id) candidate_id, priority, run_at, starved FROM candidates
    ORDER BY candidate_id, starved DESC
), ranked AS (
    SELECT candidate_id FROM chosen
    -- the starved first, oldest first; then priority order
    ORDER BY starved DESC, CASE WHEN starved THEN run_at END, priority DESC, run_at, candidate_id
    LIMIT :limit
), claimed AS (
    UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, executor = :executor,
        started_at = :now, lease_expires_at = :lease_expires_at, updated_at = :now,
        cancel_requested_at = NULL, event_seq = jobs.event_seq + 1,
        progress_percent = 0, progress_step = '', progress_message = '', progress_eta = NULL,
        progress_updated_at = NULL
    FROM ranked WHERE jobs.id = ranked.candidate_id
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

DEFAULT_STARVATION_AFTER = timedelta(minutes=5)


async def claim_jobs(
    conn: AsyncConnection,
    *,
    executor: str,
    job_types: Sequence[str],
    queues: Sequence[str],
    limit: int,
    lease: timedelta,
    now: datetime,
    starvation_after: timedelta = DEFAULT_STARVATION_AFTER,
    avoid: Sequence[str] = (),
    tenants: Sequence[str] | None = None,
) -> list[JobRecord]:
    """Claim up to `limit` eligible QUEUED jobs and start their next attempt, in priority, run_at,
    id order — except that jobs QUEUED since `starvation_after` or longer go first, oldest first
    (low priority delays work, it never starves it).

    Paused queues are skipped. A queue with max_concurrency gets at most its free slots, counted
    under a lock on its settings row, so concurrent claimers on any replica never overshoot.
    SKIP LOCKED: concurrent claimers take disjoint jobs instead of waiting for each other. An
    empty `queues` means every queue; `avoid` lists job ids not to claim (jobs this executor
    failed to acknowledge, while others can take them); `tenants` (an executor's credential's)
    limits the claim to their jobs, None to none (a predicate of each part, no statement
    more). Three or four statements per call, in
    the caller's transaction (which keeps bitmap scans off until it ends)."""
    if limit <= 0 or not job_types:
        return []
    params: dict[str, Any] = {
        "executor": executor,
        "types": list(job_types),
        "limit": limit,
        "now": now,
        "starved_before": now - starvation_after,
        "lease_expires_at": now + lease,
        "actor": f"executor:{executor}",
    }
    queue_filter = ""
    if queues:
        queue_filter = "AND queue = ANY(CAST(:queues AS text[]))"
        params["queues"] = list(queues)
    if tenants is not None:
        # An executor credential's tenants: a predicate on the rows the index scans yield
        # (tenant is not in the claim indexes; the scans still stop after their LIMIT).
        queue_filter += " AND tenant = ANY(CAST(:tenants AS text[]))"
        params["tenants"] = list(tenants)
    if avoid:
        # Only then: the usual claim's text (and plan) stays the same.
        queue_filter += " AND id <> ALL(CAST(:avoid AS uuid[]))"
        params["avoid"] = list(avoid)
    await conn.execute(_CLAIM_PLANNER)
    limited = (
        await conn.execute(
            text(
                _LOCK_LIMITED_QUEUES.format(
                    queues=("AND name = ANY(CAST(:queues AS text[]))" if queues else "")
                    + (" AND tenant = ANY(CAST(:tenants AS text[]))" if tenants is not None else "")
                )
            ),
            params,
        )
    ).all()
    free: list[tuple[str, str, int]] = []
    if limited:
        running = {
            (row[0], row[1]): int(row[2])
            for row in await conn.execute(
                _RUNNING_IN,
                {"tenants": [r[0] for r in limited], "names": [r[1] for r in limited]},
            )
        }
        free = [
            (r[0], r[1], int(r[2]) - running.get((r[0], r[1]), 0))
            for r in limited
            if int(r[2]) > running.get((r[0], r[1]), 0)
        ]
    # Every part is an ordered scan of an index that stops after its LIMIT: the unlimited queues
    # through ix_jobs_claim_priority (priority DESC, run_at, id), the starved ones through
    # ix_jobs_claim_starved (run_at, id), a limited queue through ix_jobs_claim (queue, ...).
    parts = {
        "part0": _ELIGIBLE.format(
            queues=queue_filter, where=_UNLIMITED, order=_PRIORITY_ORDER, limit=":limit"
        ),
        # The starved ones, oldest first (they may repeat rows of the part above).
        "part1": _ELIGIBLE.format(
            queues=queue_filter, where=_UNLIMITED + _STARVED, order=_STARVED_ORDER, limit=":limit"
        ),
    }
    union = ["part0", "part1"]
    for i, (tenant, name, slots) in enumerate(free):
        params[f"lt{i}"], params[f"lq{i}"], params[f"ln{i}"] = tenant, name, min(slots, limit)
        where = f"AND tenant = :lt{i} AND queue = :lq{i}"
        # A limited queue gets at most its free slots: its best ones in the ranked order
        # (starved first, oldest first, then priority order), which are among its first ones
        # in priority order and its oldest starved ones. Both are locked, as in the unlimited
        # parts; the ones beyond its slots are not claimed.
        parts[f"limited{i}_priority"] = _ELIGIBLE.format(
            queues=queue_filter, where=where, order=_PRIORITY_ORDER, limit=f":ln{i}"
        )
        parts[f"limited{i}_starved"] = _ELIGIBLE.format(
            queues=queue_filter, where=where + _STARVED, order=_STARVED_ORDER, limit=f":ln{i}"
        )
        parts[f"limited{i}"] = _LIMITED.format(
            priority=f"limited{i}_priority", starved=f"limited{i}_starved", limit=f":ln{i}"
        )
        union.append(f"limited{i}")
    # Each part locks its rows in its own CTE: FOR UPDATE is not allowed in a UNION.
    sql = _CLAIM.format(
        parts=",\n".join(f"{name} AS ({p})" for name, p in parts.items()),
        union="\n    UNION ALL ".join(f"SELECT * FROM {name}" for name in union),
    )
    result = await conn.execute(text(sql), params)
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


@dataclass(frozen=True, slots=True)
class LostStream:
    """Extra guard for failing or releasing the attempts of a lost executor stream after its
    grace: the job must still be with that executor and its lease not renewed since the stream
    was lost (a re-attach, here or on another replica, renews it), so a job whose executor came
    back is left alone."""

    executor: str
    lease_limit: datetime


_LOST_CONDITION = "executor = :lost_executor AND lease_expires_at <= :lease_limit"
# An attempt that fails or is handed back while its cancellation is requested ends the job
# CANCELLED instead of trying again: an acknowledged cancel is honoured.
_UNLESS_CANCELLING = (
    "CASE WHEN cancel_requested_at IS NULL THEN CAST('{state}' AS job_state) "
    "ELSE CAST('cancelled' AS job_state) END"
)
_FINISHED_IF_CANCELLING = (
    "finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL "
    "ELSE CAST(:now AS timestamptz) END"
)
_SUCCEED_MANY = text("""
WITH t AS (
    SELECT * FROM unnest(
        CAST(:ids AS uuid[]), CAST(:attempts AS integer[]), CAST(:results AS bytea[]),
        CAST(:actors AS text[]), CAST(:reported AS boolean[]), CAST(:steps AS text[]),
        CAST(:messages AS text[]), CAST(:etas AS timestamptz[])
    ) AS t(job_id, job_attempt, result, actor, reported, step, message, eta)
), updated AS (
    UPDATE jobs SET state = 'succeeded', finished_at = :now, lease_expires_at = NULL,
        result = t.result, progress_percent = 100, progress_updated_at = :now,
        progress_step = CASE WHEN t.reported THEN t.step ELSE jobs.progress_step END,
        progress_message = CASE WHEN t.reported THEN t.message ELSE jobs.progress_message END,
        progress_eta = CASE WHEN t.reported THEN t.eta ELSE jobs.progress_eta END,
        updated_at = :now, event_seq = jobs.event_seq + 1
    FROM t
    WHERE jobs.id = t.job_id AND jobs.state = 'running' AND jobs.attempt = t.job_attempt
    RETURNING jobs.id, jobs.event_seq, jobs.attempt, jobs.executor, t.actor
), events AS (
    INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, executor, reason, actor,
                            created_at)
    SELECT id, event_seq, CAST('running' AS job_state), CAST('succeeded' AS job_state), attempt,
           executor, 'succeeded', actor, :now
    FROM updated
)
SELECT id FROM updated
""")


@dataclass(frozen=True, slots=True)
class Success:
    job_id: str
    attempt: int
    result: bytes
    actor: str
    # The last progress the attempt reported and that may not be stored yet: its step, message
    # and eta are kept (at 100 %); None keeps the stored ones.
    progress: Progress | None = None


async def succeed_attempts(
    conn: AsyncConnection, successes: Sequence[Success], now: datetime
) -> set[str]:
    """RUNNING -> SUCCEEDED for many attempts in one statement, each guarded by (running, its
    attempt) like succeed_attempt; returns the ids that succeeded (the others were stale)."""
    if not successes:
        return set()
    check_transition(JobState.RUNNING, Event.SUCCEED, JobState.SUCCEEDED)
    result = await conn.execute(
        _SUCCEED_MANY,
        {
            "ids": [s.job_id for s in successes],
            "attempts": [s.attempt for s in successes],
            "results": [s.result for s in successes],
            "actors": [s.actor for s in successes],
            "reported": [s.progress is not None for s in successes],
            "steps": [s.progress.step if s.progress else None for s in successes],
            "messages": [s.progress.message if s.progress else None for s in successes],
            "etas": [s.progress.eta if s.progress else None for s in successes],
            "now": now,
        },
    )
    return {str(row[0]) for row in result}


_FAIL_RETRY_SET = (
    f"state = {_UNLESS_CANCELLING.format(state='scheduled')}, {_FINISHED_IF_CANCELLING}, "
    "run_at = :run_at, last_error = :error, lease_expires_at = NULL"
)
_FAIL_FINAL_SET = "state = 'dead', finished_at = :now, last_error = :error, lease_expires_at = NULL"
_FAIL_RETRY = transition_statement(_FAIL_RETRY_SET)
_FAIL_FINAL = transition_statement(_FAIL_FINAL_SET)
_FAIL_RETRY_LOST = transition_statement(_FAIL_RETRY_SET, _LOST_CONDITION)
_FAIL_FINAL_LOST = transition_statement(_FAIL_FINAL_SET, _LOST_CONDITION)


def _lost_params(lost: LostStream | None) -> dict[str, Any]:
    if lost is None:
        return {}
    return {"lost_executor": lost.executor, "lease_limit": lost.lease_limit}


async def fail_attempt(
    conn: AsyncConnection,
    guard: Guard,
    outcome: FailureOutcome,
    error: str,
    now: datetime,
    actor: str,
    lost: LostStream | None = None,
) -> JobRecord:
    """RUNNING -> SCHEDULED (retry at outcome.run_at) or DEAD, keeping the error."""
    check_transition(guard.state, outcome.event, outcome.state)
    extra = {"error": error, **_lost_params(lost)}
    if outcome.state is JobState.SCHEDULED:
        statement = _FAIL_RETRY if lost is None else _FAIL_RETRY_LOST
        return await run_guarded(
            conn,
            statement,
            guard,
            now,
            f"failed: {error}",
            actor,
            extra={**extra, "run_at": outcome.run_at},
        )
    statement = _FAIL_FINAL if lost is None else _FAIL_FINAL_LOST
    return await run_guarded(conn, statement, guard, now, f"dead: {error}", actor, extra=extra)


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
SELECT (SELECT coalesce(array_agg(id), '{}') FROM promoted),
       (SELECT min(run_at) FROM jobs WHERE state = 'scheduled' AND run_at > :now)
""")


@dataclass(frozen=True, slots=True)
class Promotion:
    job_ids: tuple[str, ...]  # the jobs promoted
    # run_at of the next SCHEDULED job that is not due yet, if any (for the dispatcher's timer)
    next_run_at: datetime | None

    @property
    def promoted(self) -> int:
        return len(self.job_ids)


async def promote_due_jobs(conn: AsyncConnection, now: datetime, limit: int = 1000) -> Promotion:
    """SCHEDULED jobs whose run_at has come become QUEUED (set-based, with their events), and
    the run_at of the next one to come, in one statement."""
    row = (await conn.execute(_PROMOTE_DUE, {"now": now, "limit": limit})).one()
    return Promotion(tuple(str(job_id) for job_id in row[0]), row[1])


_ANY_QUEUED = text("SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued')")


async def any_queued(conn: AsyncConnection) -> bool:
    """Whether any job is QUEUED (one probe of a partial index on QUEUED jobs)."""
    return bool((await conn.execute(_ANY_QUEUED)).scalar_one())


_RENEW_LEASES = text("""
WITH renewed AS (
    UPDATE jobs SET lease_expires_at = :lease_expires_at
    WHERE state = 'running' AND executor = :executor AND id = ANY(CAST(:ids AS uuid[]))
      AND lease_expires_at < :renew_before
)
SELECT id, attempt FROM jobs
WHERE state = 'running' AND executor = :executor AND id = ANY(CAST(:ids AS uuid[]))
  AND cancel_requested_at IS NOT NULL
""")


async def renew_leases(
    conn: AsyncConnection,
    executor: str,
    job_ids: Sequence[str],
    lease: timedelta,
    now: datetime,
    renew_within: timedelta | None = None,
) -> list[tuple[str, int]]:
    """One statement per executor per heartbeat renews the leases of the running jobs its
    stream holds (`job_ids`: a job the scheduler let go of keeps no lease, so rescue can move it
    on, even if the executor still heartbeats) that end within `renew_within` (None: all of
    them). Each renewal rewrites the row and an entry in every index of `jobs` (the lease is
    indexed), so a lease is renewed when it runs low, not at every heartbeat. Returns the (job
    id, attempt) pairs among them whose cancellation was requested, so that a cancel requested
    through another replica reaches the executor at the latest by its next heartbeat."""
    result = await conn.execute(
        _RENEW_LEASES,
        {
            "executor": executor,
            "ids": list(job_ids),
            "lease_expires_at": now + lease,
            "renew_before": now + (lease if renew_within is None else renew_within),
        },
    )
    return [(str(row[0]), int(row[1])) for row in result]


_REATTACH = text(f"""
UPDATE jobs SET lease_expires_at = :lease_expires_at
FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS integer[])) AS t(job_id, job_attempt)
WHERE jobs.id = t.job_id AND jobs.attempt = t.job_attempt AND jobs.state = 'running'
  AND jobs.executor = :executor
  AND (CAST(:tenants AS text[]) IS NULL OR jobs.tenant = ANY(CAST(:tenants AS text[])))
RETURNING {FULL_COLUMNS}
""")


async def reattach_attempts(
    conn: AsyncConnection,
    executor: str,
    attempts: Sequence[tuple[str, int]],
    lease: timedelta,
    now: datetime,
    tenants: Sequence[str] | None = None,
) -> list[JobRecord]:
    """The attempts a reconnecting executor still holds that are still its own (RUNNING, same
    attempt, same executor, and of its credential's `tenants` unless None: a session token
    names an executor, not what its new key may run), with their leases renewed; the others
    were moved on meanwhile."""
    if not attempts:
        return []
    result = await conn.execute(
        _REATTACH,
        {
            "executor": executor,
            "ids": [job_id for job_id, _ in attempts],
            "attempts": [attempt for _, attempt in attempts],
            "lease_expires_at": now + lease,
            "tenants": None if tenants is None else list(tenants),
        },
    )
    return [row_to_job(r, full=True) for r in result]


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


DEFAULT_MAX_RELEASES = 10

# A release (RUNNING -> QUEUED, handed back without running) grows max_attempts by one instead of
# burning the attempt, and counts in `releases`; the release past `max_releases` ends the job DEAD
# instead, with an error saying why (without the bound an executor that never acknowledges kept a
# job alive forever). A job whose cancel was requested ends CANCELLED, as for a failure. SET
# expressions all read the row as it was, so `releases` below is the count before this one.
_HANDED_BACK_TOO_OFTEN = "cancel_requested_at IS NULL AND releases >= :max_releases"
_RELEASE_SET = f"""
    state = CASE WHEN cancel_requested_at IS NOT NULL THEN CAST('cancelled' AS job_state)
                 WHEN releases >= :max_releases THEN CAST('dead' AS job_state)
                 ELSE CAST('queued' AS job_state) END,
    finished_at = CASE WHEN cancel_requested_at IS NOT NULL OR releases >= :max_releases
                       THEN CAST(:now AS timestamptz) END,
    last_error = CASE WHEN {_HANDED_BACK_TOO_OFTEN}
        THEN format('handed back %s times without running (ack timeouts or releases); limit %s',
                    releases + 1, CAST(:max_releases AS integer))
        ELSE last_error END,
    max_attempts = CASE WHEN {_HANDED_BACK_TOO_OFTEN} THEN max_attempts
                        ELSE max_attempts + 1 END,
    releases = releases + 1, started_at = NULL, lease_expires_at = NULL"""
# transition_statement's shape, with the event's reason saying why a release ended the job DEAD.
_RELEASE_STATEMENT = """
WITH updated AS (
    UPDATE jobs SET {assignments}, updated_at = :now, event_seq = event_seq + 1
    WHERE tenant = :tenant AND id = :id
      AND state = CAST(:expected_state AS job_state) AND attempt = :expected_attempt{extra}
    RETURNING {columns}
), events AS (
    INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, executor, reason, actor,
                            created_at)
    SELECT id, event_seq, CAST(:expected_state AS job_state), state, attempt, executor,
           CASE WHEN state = 'dead' THEN 'dead: ' || last_error ELSE :reason END, :actor, :now
    FROM updated
)
SELECT {columns} FROM updated
"""
_RELEASE = text(_RELEASE_STATEMENT.format(assignments=_RELEASE_SET, extra="", columns=FULL_COLUMNS))
_RELEASE_LOST = text(
    _RELEASE_STATEMENT.format(
        assignments=_RELEASE_SET, extra=f" AND {_LOST_CONDITION}", columns=FULL_COLUMNS
    )
)


async def release_attempt(
    conn: AsyncConnection,
    guard: Guard,
    now: datetime,
    reason: str,
    actor: str,
    lost: LostStream | None = None,
    max_releases: int = DEFAULT_MAX_RELEASES,
) -> JobRecord:
    """RUNNING -> QUEUED for an attempt that never started (its assignment was not
    acknowledged, or its executor handed it back): the attempt is not burned. The attempt
    number is the fencing token of a run and never goes back; instead max_attempts grows by
    one, so the released attempt does not count against the limit. The release after
    `max_releases` of them ends the job DEAD (the returned record says which)."""
    check_transition(guard.state, Event.RELEASE, JobState.QUEUED)
    check_transition(guard.state, Event.FAIL_FINAL, JobState.DEAD)
    statement = _RELEASE if lost is None else _RELEASE_LOST
    extra = {"max_releases": max_releases, **_lost_params(lost)}
    return await run_guarded(conn, statement, guard, now, reason, actor, extra=extra)


# Why a RUNNING attempt is rescued: its lease expired (the executor vanished or stalled), or it
# outlived its timeout plus a grace (the executor failed to stop it: the scheduler's backstop).
# Both are range scans of a partial index on RUNNING jobs (ix_jobs_lease_expiry,
# ix_jobs_timeout_deadline), in the index's order, that stop after the batch: the deadline is
# written exactly as the index expression (computed in UTC, see TIMEOUT_DEADLINE_SQL) and
# compared with now - grace, computed by the caller.
_LEASE_EXPIRED = "lease_expires_at < :now"
_TIMED_OUT = f"timeout IS NOT NULL AND {TIMEOUT_DEADLINE_SQL} < :timed_out_before"

_SELECT_RESCUE = """
SELECT id, attempt, max_attempts, timeout, retry_initial_backoff, retry_multiplier,
       retry_max_backoff, retry_jitter
FROM jobs
WHERE state = 'running' AND {condition}
ORDER BY {order}
LIMIT :limit
FOR UPDATE SKIP LOCKED
"""

_RESCUE = """
WITH t AS (
    SELECT * FROM unnest(
        CAST(:ids AS uuid[]), CAST(:attempts AS integer[]), CAST(:states AS job_state[]),
        CAST(:run_ats AS timestamptz[]), CAST(:errors AS text[])
    ) AS t(job_id, job_attempt, next_state, next_run_at, error)
), updated AS (
    UPDATE jobs SET
        state = CASE WHEN jobs.cancel_requested_at IS NULL THEN t.next_state
                     ELSE CAST('cancelled' AS job_state) END,
        run_at = COALESCE(t.next_run_at, jobs.run_at),
        finished_at = CASE WHEN t.next_state = 'dead' OR jobs.cancel_requested_at IS NOT NULL
                           THEN CAST(:now AS timestamptz) END,
        last_error = t.error, lease_expires_at = NULL, updated_at = :now,
        event_seq = jobs.event_seq + 1
    FROM t
    WHERE jobs.id = t.job_id AND jobs.state = 'running' AND jobs.attempt = t.job_attempt
      AND {condition}
    RETURNING jobs.id, jobs.event_seq, jobs.state, jobs.attempt, jobs.executor, jobs.run_at,
              t.error
), events AS (
    INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, executor, reason, actor,
                            created_at)
    SELECT id, event_seq, CAST('running' AS job_state), state, attempt, executor,
           'failed: ' || error, :actor, :now
    FROM updated
)
SELECT id, state, run_at FROM updated
"""
_CONDITIONS = {
    "lease": (_LEASE_EXPIRED, "lease_expires_at"),
    "timeout": (_TIMED_OUT, TIMEOUT_DEADLINE_SQL),
}
_STATEMENTS = {
    kind: (
        text(_SELECT_RESCUE.format(condition=condition, order=order)),
        text(_RESCUE.format(condition=condition)),
    )
    for kind, (condition, order) in _CONDITIONS.items()
}


@dataclass(frozen=True, slots=True)
class Rescued:
    job_id: str
    state: JobState
    run_at: datetime


async def _rescue(
    conn: AsyncConnection,
    kind: str,
    now: datetime,
    limit: int,
    grace: timedelta,
    actor: str,
) -> list[Rescued]:
    select, update = _STATEMENTS[kind]
    params: dict[str, Any] = {"now": now, "limit": limit}
    if kind == "timeout":
        params["timed_out_before"] = now - grace
    rows = (await conn.execute(select, params)).all()
    if not rows:
        return []
    outcomes = [
        after_failure(
            attempt=int(row[1]),
            max_attempts=int(row[2]),
            retryable=True,
            now=now,
            policy=RetryPolicy(initial=row[4], multiplier=row[5], maximum=row[6], jitter=row[7]),
        )
        for row in rows
    ]
    for outcome in outcomes:
        check_transition(JobState.RUNNING, outcome.event, outcome.state)
    if kind == "lease":
        errors = ["lease expired" for _ in rows]
    else:
        errors = [f"timed out after {row[3].total_seconds():g}s" for row in rows]
    result = await conn.execute(
        update,
        {
            "ids": [str(row[0]) for row in rows],
            "attempts": [int(row[1]) for row in rows],
            "states": [o.state.value for o in outcomes],
            "run_ats": [o.run_at for o in outcomes],
            "errors": errors,
            "actor": actor,
            **params,
        },
    )
    return [Rescued(str(r[0]), JobState(r[1]), r[2]) for r in result]


async def rescue_expired_leases(
    conn: AsyncConnection,
    now: datetime,
    limit: int = 1000,
    actor: str = "scheduler",
) -> list[Rescued]:
    """RUNNING jobs whose lease expired fail as retryable: SCHEDULED after their policy's
    backoff, or DEAD when
    it was the last attempt. The expired rows are locked (FOR UPDATE SKIP LOCKED) and the UPDATE
    is guarded by (running, attempt, lease still expired), so a job that completes concurrently
    is either not selected or keeps its outcome: the completion always wins."""
    return await _rescue(conn, "lease", now, limit, timedelta(0), actor)


async def rescue_timed_out(
    conn: AsyncConnection,
    now: datetime,
    grace: timedelta,
    limit: int = 1000,
    actor: str = "scheduler",
) -> list[Rescued]:
    """The scheduler's timeout backstop: RUNNING jobs still running `grace` after started_at +
    timeout (their executor did not stop them) fail as retryable ("timed out after Ns"), with
    the same locking and guards as rescue_expired_leases."""
    return await _rescue(conn, "timeout", now, limit, grace, actor)
