"""Every SQL statement on jobs and job_events, one named function each, and the JobStore facade
that composes them into transactions.

Writes that change a job are a single statement: a guarded UPDATE (expected state AND attempt)
with its job_events row inserted by a data-modifying CTE, so the transition and its history
commit together or not at all. A guard that matches no row raises ConcurrentModification.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.dependencies import StoredJob, plan_dependencies
from scheduler.domain.errors import (
    ConcurrentModification,
    HasWaitingDependents,
    IdempotencyKeyReused,
    InvalidTransition,
    JobNotFound,
)
from scheduler.domain.jobs import (
    Dependency,
    JobEventRecord,
    JobRecord,
    NewJob,
    Progress,
    Submitted,
)
from scheduler.domain.label_filters import LabelFilter
from scheduler.domain.pagination import Cursor
from scheduler.domain.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from scheduler.domain.setting_sources import SETTINGS, Source
from scheduler.domain.setting_sources import decode as decode_sources
from scheduler.domain.states import Event, JobState, check_deletable, check_transition
from scheduler.domain.validation import DEFAULT_MAX_ATTEMPTS
from scheduler.store.database import Database

# Columns read by lists: everything but payload and result (projected, never the blobs). Every
# statement that makes JobRecords selects them first, in this order (row_to_job reads rows by
# position), and FULL_COLUMNS adds payload and result after them.
LIST_COLUMN_NAMES = (
    "id", "tenant", "queue", "type", "priority", "state", "attempt", "max_attempts", "run_at",
    "created_at", "updated_at", "started_at", "finished_at", "progress_percent", "progress_step",
    "progress_message", "progress_eta", "progress_updated_at", "last_error", "executor",
    "labels", "idempotency_key", "cancel_requested_at", "timeout", "event_seq",
    "retry_initial_backoff", "retry_multiplier", "retry_max_backoff", "retry_jitter",
    "pending_dependencies", "setting_sources", "trace_context",
)  # fmt: skip
LIST_COLUMNS = ", ".join(LIST_COLUMN_NAMES)
FULL_COLUMNS = LIST_COLUMNS + ", payload, result"
_WIDTH = len(LIST_COLUMN_NAMES)


def row_to_job(row: Row[Any], *, full: bool) -> JobRecord:
    """A JobRecord from a row that starts with LIST_COLUMNS (and then payload and result, when
    `full`). By position: in 0.72 of the time it took by name (100 claimed rows)."""
    (
        job_id, tenant, queue, job_type, priority, state, attempt, max_attempts, run_at,
        created_at, updated_at, started_at, finished_at, progress_percent, progress_step,
        progress_message, progress_eta, progress_updated_at, last_error, executor,
        labels, idempotency_key, cancel_requested_at, timeout, event_seq,
        retry_initial_backoff, retry_multiplier, retry_max_backoff, retry_jitter,
        pending_dependencies, setting_sources, trace_context,
    ) = row[:_WIDTH]  # fmt: skip
    if isinstance(labels, str):
        labels = json.loads(labels)
    result = row[_WIDTH + 1] if full else None
    return JobRecord(
        id=str(job_id),
        tenant=tenant,
        queue=queue,
        type=job_type,
        priority=priority,
        state=JobState(state),
        attempt=attempt,
        max_attempts=max_attempts,
        run_at=run_at,
        created_at=created_at,
        updated_at=updated_at,
        started_at=started_at,
        finished_at=finished_at,
        progress=_progress(
            progress_percent, progress_step, progress_message, progress_eta, progress_updated_at
        ),
        last_error=last_error,
        executor=executor,
        labels=dict(labels),
        idempotency_key=idempotency_key,
        cancel_requested=cancel_requested_at is not None,
        timeout=timeout,
        event_seq=event_seq,
        payload=bytes(row[_WIDTH]) if full else b"",
        result=bytes(result) if result is not None else None,
        retry_policy=_retry_policy(
            retry_initial_backoff, retry_multiplier, retry_max_backoff, retry_jitter
        ),
        pending_dependencies=pending_dependencies,
        setting_sources=decode_sources(setting_sources),
        trace_context=trace_context,
    )


# Rows become records by the hundred in every list page: the parts most rows share are built
# once (frozen dataclasses, so sharing them is safe).
_NO_PROGRESS = Progress(percent=0.0, step="", message="", eta=None, updated_at=None)


def _progress(
    percent: float,
    step: str,
    message: str,
    eta: datetime | None,
    updated_at: datetime | None,
) -> Progress:
    if updated_at is None and not percent and not step and not message and eta is None:
        return _NO_PROGRESS
    return Progress(percent=percent, step=step, message=message, eta=eta, updated_at=updated_at)


@functools.lru_cache(maxsize=1024)
def _retry_policy(
    initial: timedelta, multiplier: float, maximum: timedelta, jitter: float
) -> RetryPolicy:
    return RetryPolicy(initial=initial, multiplier=multiplier, maximum=maximum, jitter=jitter)


def _to_event(row: Row[Any]) -> JobEventRecord:
    m = row._mapping
    return JobEventRecord(
        job_id=str(m["job_id"]),
        seq=m["seq"],
        from_state=JobState(m["from_state"]) if m["from_state"] is not None else None,
        to_state=JobState(m["to_state"]),
        attempt=m["attempt"],
        executor=m["executor"],
        reason=m["reason"],
        actor=m["actor"],
        created_at=m["created_at"],
    )


# --- statements -------------------------------------------------------------------------------

# Where each setting comes from, as the letter stored in jobs.setting_sources: the first of
# (job, type, queue) that sets it, else the built-in default. One CASE per setting, in the
# order of scheduler/domain/setting_sources.py SETTINGS.
_SOURCED = (
    ("input.max_attempts", "t.max_attempts", "q.default_max_attempts"),
    ("input.timeout", "t.timeout", "q.default_timeout"),
    ("input.retry_initial", "t.retry_initial_backoff", "q.retry_initial_backoff"),
    ("input.retry_multiplier", "t.retry_multiplier", "q.retry_multiplier"),
    ("input.retry_maximum", "t.retry_max_backoff", "q.retry_max_backoff"),
    ("input.retry_jitter", "t.retry_jitter", "q.retry_jitter"),
)
assert len(_SOURCED) == len(SETTINGS)
_SOURCES_SQL = " || ".join(
    f"CASE WHEN {job} IS NOT NULL THEN '{Source.JOB.value}' "
    f"WHEN {job_type} IS NOT NULL THEN '{Source.TYPE.value}' "
    f"WHEN {queue} IS NOT NULL THEN '{Source.QUEUE.value}' ELSE '{Source.DEFAULT.value}' END"
    for job, job_type, queue in _SOURCED
)

# What an insert returns: the id and what the statement decided (the settings resolved from the
# job, its type and its queue, and the time); the rest of the new job's record is what was sent
# (inserted_record). Narrow on purpose: the wide list row cost ~30 us a job to decode (labels'
# JSON, 32 columns), most of a batch submit's CPU.
_RESOLVED_COLUMNS = (
    "max_attempts, timeout, retry_initial_backoff, retry_multiplier, retry_max_backoff, "
    "retry_jitter, setting_sources, created_at"
)

_INSERT_JOBS = text(f"""
WITH input AS (
    SELECT * FROM unnest(
        CAST(:ids AS uuid[]), CAST(:queues AS text[]), CAST(:types AS text[]),
        CAST(:payloads AS bytea[]), CAST(:priorities AS smallint[]), CAST(:states AS text[]),
        CAST(:max_attempts AS integer[]), CAST(:run_ats AS timestamptz[]),
        CAST(:labels AS text[]), CAST(:keys AS text[]), CAST(:timeouts AS interval[]),
        CAST(:retry_initials AS interval[]), CAST(:retry_multipliers AS double precision[]),
        CAST(:retry_maximums AS interval[]), CAST(:retry_jitters AS double precision[]),
        CAST(:pending AS integer[]), CAST(:trace_contexts AS text[])
    ) AS t(id, queue, type, payload, priority, state, max_attempts, run_at, labels,
           idempotency_key, timeout, retry_initial, retry_multiplier, retry_maximum,
           retry_jitter, pending_dependencies, trace_context)
), resolved AS (
    -- What the job leaves unset, its type's settings decide, then its queue's, then the
    -- global defaults; each setting on its own.
    SELECT input.id, input.queue, input.type, input.payload, input.priority, input.state,
           input.run_at, input.labels, input.idempotency_key, input.pending_dependencies,
           input.trace_context,
           COALESCE(input.max_attempts, t.max_attempts, q.default_max_attempts,
                    :default_max_attempts) AS max_attempts,
           COALESCE(input.timeout, t.timeout, q.default_timeout) AS timeout,
           COALESCE(input.retry_initial, t.retry_initial_backoff, q.retry_initial_backoff,
                    CAST(:default_initial AS interval)) AS initial,
           COALESCE(input.retry_multiplier, t.retry_multiplier, q.retry_multiplier,
                    :default_multiplier) AS multiplier,
           COALESCE(input.retry_maximum, t.retry_max_backoff, q.retry_max_backoff,
                    CAST(:default_maximum AS interval)) AS maximum,
           COALESCE(input.retry_jitter, t.retry_jitter, q.retry_jitter,
                    :default_jitter) AS jitter,
           {_SOURCES_SQL} AS setting_sources
    FROM input
    LEFT JOIN job_types t ON t.tenant = :tenant AND t.name = input.type
    LEFT JOIN queues q ON q.tenant = :tenant AND q.name = input.queue
), inserted AS (
    INSERT INTO jobs (id, tenant, queue, type, payload, priority, state, max_attempts, run_at,
                      labels, idempotency_key, timeout, retry_initial_backoff, retry_multiplier,
                      retry_max_backoff, retry_jitter, pending_dependencies, event_seq,
                      setting_sources, trace_context, created_at, updated_at)
    SELECT r.id, :tenant, r.queue, r.type, r.payload, r.priority, CAST(r.state AS job_state),
           r.max_attempts, r.run_at, CAST(r.labels AS jsonb), r.idempotency_key, r.timeout,
           r.initial, r.multiplier,
           -- A maximum below the initial backoff is raised to it.
           GREATEST(r.initial, r.maximum),
           r.jitter, r.pending_dependencies, 1, r.setting_sources, r.trace_context, now(), now()
    FROM resolved r
    -- A fixed lock order: batches sharing idempotency keys must not deadlock each other.
    ORDER BY r.idempotency_key NULLS LAST
    ON CONFLICT (tenant, idempotency_key) DO NOTHING
    RETURNING id, state, {_RESOLVED_COLUMNS}
), events AS (
    INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, reason, actor, created_at)
    SELECT id, 1, NULL, state, 0, 'submitted', :actor, created_at FROM inserted
)
SELECT id, {_RESOLVED_COLUMNS} FROM inserted
""")


async def insert_jobs(
    conn: AsyncConnection, tenant: str, jobs: Sequence[NewJob], actor: str
) -> dict[str, JobRecord]:
    """Insert a batch with one set-based statement. Returns the inserted jobs by id; jobs whose
    idempotency key already exists are skipped (ON CONFLICT DO NOTHING)."""
    ids = [str(uuid.uuid4()) for _ in jobs]
    result = await conn.execute(
        _INSERT_JOBS,
        {
            "tenant": tenant,
            "actor": actor,
            "ids": ids,
            "queues": [j.queue for j in jobs],
            "types": [j.type for j in jobs],
            "payloads": [j.payload for j in jobs],
            "priorities": [j.priority for j in jobs],
            "states": [j.state.value for j in jobs],
            "max_attempts": [j.max_attempts for j in jobs],
            "run_ats": [j.run_at for j in jobs],
            "labels": [json.dumps(j.labels) for j in jobs],
            "keys": [j.idempotency_key for j in jobs],
            "timeouts": [j.timeout for j in jobs],
            "retry_initials": [j.retry.initial for j in jobs],
            "retry_multipliers": [j.retry.multiplier for j in jobs],
            "retry_maximums": [j.retry.maximum for j in jobs],
            "retry_jitters": [j.retry.jitter for j in jobs],
            "pending": [j.pending_dependencies for j in jobs],
            "trace_contexts": [j.trace_context for j in jobs],
            "default_max_attempts": DEFAULT_MAX_ATTEMPTS,
            "default_initial": DEFAULT_RETRY_POLICY.initial,
            "default_multiplier": DEFAULT_RETRY_POLICY.multiplier,
            "default_maximum": DEFAULT_RETRY_POLICY.maximum,
            "default_jitter": DEFAULT_RETRY_POLICY.jitter,
        },
    )
    rows = {str(row[0]): row for row in result}
    # Ids were generated here, so request order maps to rows by id, whatever RETURNING's order.
    return {
        jid: inserted_record(tenant, jid, job, rows[jid])
        for jid, job in zip(ids, jobs, strict=True)
        if jid in rows
    }


def inserted_record(tenant: str, job_id: str, job: NewJob, row: Sequence[Any]) -> JobRecord:
    """The record of a job just inserted, as row_to_job(full=False) would read it back: what
    was sent, with what the insert decided (a row of id, then _RESOLVED_COLUMNS)."""
    (_, max_attempts, timeout, initial, multiplier, maximum, jitter, sources, created_at) = row
    return JobRecord(
        id=job_id,
        tenant=tenant,
        queue=job.queue,
        type=job.type,
        priority=job.priority,
        state=job.state,
        attempt=0,
        max_attempts=max_attempts,
        run_at=job.run_at,
        created_at=created_at,
        updated_at=created_at,
        started_at=None,
        finished_at=None,
        progress=_NO_PROGRESS,
        last_error=None,
        executor=None,
        labels=dict(job.labels),
        idempotency_key=job.idempotency_key,
        cancel_requested=False,
        timeout=timeout,
        event_seq=1,
        payload=b"",
        result=None,
        retry_policy=_retry_policy(initial, multiplier, maximum, jitter),
        pending_dependencies=job.pending_dependencies,
        setting_sources=decode_sources(sources),
        trace_context=job.trace_context,
    )


_SELECT_BY_KEYS = text(f"""
SELECT {FULL_COLUMNS} FROM jobs
WHERE tenant = :tenant AND idempotency_key = ANY(CAST(:keys AS text[]))
""")


async def select_jobs_by_idempotency_keys(
    conn: AsyncConnection, tenant: str, keys: Sequence[str]
) -> dict[str, JobRecord]:
    result = await conn.execute(_SELECT_BY_KEYS, {"tenant": tenant, "keys": list(keys)})
    jobs = [row_to_job(r, full=True) for r in result]
    return {j.idempotency_key: j for j in jobs if j.idempotency_key is not None}


# --- dependencies ---------------------------------------------------------------------------
# Resolving dependents when a job ends is the jobs_resolve_dependents trigger (migration 0006),
# so every path that ends a job does it in its own transaction.

# The dependencies a batch names by id, and the jobs its idempotency keys already name, locked
# FOR SHARE until the submit commits: a dependency cannot end (nor be deleted) between the
# moment its state is read here and the moment the new edges are visible to its trigger.
# Locked roughly in dependency order (a job is created no later than its dependents, and within
# a batch a job that runs has no pending dependency while its WAITING dependents have some), the
# order in which an ending job's trigger locks its dependents, so that the two rarely deadlock.
_LOCK_SUBMIT_DEPENDENCIES = text("""
SELECT id, state, idempotency_key, created_at FROM jobs
WHERE tenant = :tenant
  AND (id = ANY(CAST(:ids AS uuid[])) OR idempotency_key = ANY(CAST(:keys AS text[])))
ORDER BY created_at, pending_dependencies, id
FOR SHARE
""")


@dataclass(frozen=True, slots=True)
class LockedJobs:
    by_id: dict[str, StoredJob]
    by_key: dict[str, StoredJob]
    created_at: dict[str, datetime]


async def lock_submit_dependencies(
    conn: AsyncConnection, tenant: str, ids: Sequence[str], keys: Sequence[str]
) -> LockedJobs:
    rows = (
        await conn.execute(
            _LOCK_SUBMIT_DEPENDENCIES, {"tenant": tenant, "ids": list(ids), "keys": list(keys)}
        )
    ).all()
    wanted = set(ids)
    locked = LockedJobs({}, {}, {})
    for row in rows:
        job = StoredJob(str(row[0]), JobState(row[1]))
        locked.created_at[job.id] = row[3]
        if job.id in wanted:
            locked.by_id[job.id] = job
        if row[2] is not None:
            locked.by_key[row[2]] = job
    return locked


_INSERT_DEPENDENCIES = text("""
INSERT INTO job_dependencies (job_id, depends_on)
SELECT * FROM unnest(CAST(:job_ids AS uuid[]), CAST(:depends_on AS uuid[]))
""")


async def insert_dependencies(conn: AsyncConnection, edges: Sequence[tuple[str, str]]) -> None:
    """Every (job, dependency) edge of a batch with one statement."""
    if edges:
        await conn.execute(
            _INSERT_DEPENDENCIES,
            {"job_ids": [e[0] for e in edges], "depends_on": [e[1] for e in edges]},
        )


_SELECT_DEPENDS_ON = text("""
SELECT d.job_id, d.depends_on FROM job_dependencies d JOIN jobs j ON j.id = d.depends_on
WHERE d.job_id = ANY(CAST(:ids AS uuid[]))
ORDER BY d.job_id, j.created_at, j.id
""")


async def select_depends_on(
    conn: AsyncConnection, job_ids: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """The dependency ids of many jobs (in creation order), by job id."""
    found: dict[str, list[str]] = {}
    for row in await conn.execute(_SELECT_DEPENDS_ON, {"ids": list(job_ids)}):
        found.setdefault(str(row[0]), []).append(str(row[1]))
    return {job_id: tuple(ids) for job_id, ids in found.items()}


_LOCK_FOR_DELETE = text("""
SELECT id FROM jobs
WHERE tenant = :tenant AND id = :id AND state = CAST(:expected_state AS job_state)
  AND attempt = :expected_attempt
FOR UPDATE
""")

# Run after _LOCK_FOR_DELETE, as its own statement: its snapshot then includes the edges of any
# submit that held the job FOR SHARE while the lock waited.
_WAITING_DEPENDENTS = text("""
SELECT count(*), min(CAST(d.job_id AS text))
FROM job_dependencies d JOIN jobs j ON j.id = d.job_id
WHERE d.depends_on = :id AND j.state = 'waiting'
""")


async def check_no_waiting_dependents(conn: AsyncConnection, guard: Guard) -> None:
    """Refuse (FailedPrecondition) to delete a job that WAITING jobs still count on: it could
    never succeed, and they would wait forever. Locks the job for the delete that follows."""
    params = {
        "tenant": guard.tenant,
        "id": guard.job_id,
        "expected_state": guard.state.value,
        "expected_attempt": guard.attempt,
    }
    if (await conn.execute(_LOCK_FOR_DELETE, params)).first() is None:
        raise ConcurrentModification(f"job {guard.job_id} changed while being deleted")
    count, example = (await conn.execute(_WAITING_DEPENDENTS, {"id": guard.job_id})).one()
    if count:
        raise HasWaitingDependents(
            f"job {guard.job_id} has {count} dependent job(s) waiting for it to succeed "
            f"(for example {example}): cancel it instead, which cancels them, or delete them "
            "first"
        )


_SELECT_JOB = text(f"SELECT {FULL_COLUMNS} FROM jobs WHERE tenant = :tenant AND id = :id")


async def select_job(conn: AsyncConnection, tenant: str, job_id: str) -> JobRecord | None:
    row = (await conn.execute(_SELECT_JOB, {"tenant": tenant, "id": job_id})).first()
    return row_to_job(row, full=True) if row is not None else None


# The job and, in the same statement, the jobs it depends on with their states in creation
# order (GetJobStatus). A job without dependencies costs one probe of pk_job_dependencies.
_SELECT_JOB_WITH_DEPENDENCIES = text(f"""
SELECT {FULL_COLUMNS}, deps.ids AS dependency_ids, deps.states AS dependency_states
FROM jobs CROSS JOIN LATERAL (
    SELECT array_agg(d.depends_on ORDER BY j.created_at, j.id) AS ids,
           array_agg(CAST(j.state AS text) ORDER BY j.created_at, j.id) AS states
    FROM job_dependencies d JOIN jobs j ON j.id = d.depends_on
    WHERE d.job_id = jobs.id AND j.tenant = jobs.tenant
) AS deps
WHERE jobs.tenant = :tenant AND jobs.id = :id
""")


async def select_job_with_dependencies(
    conn: AsyncConnection, tenant: str, job_id: str
) -> tuple[JobRecord, list[Dependency]] | None:
    """The job and the jobs it depends on, with their current states in creation order."""
    row = (
        await conn.execute(_SELECT_JOB_WITH_DEPENDENCIES, {"tenant": tenant, "id": job_id})
    ).first()
    if row is None:
        return None
    m = row._mapping
    dependencies = [
        Dependency(str(dep_id), JobState(state))
        for dep_id, state in zip(
            m["dependency_ids"] or (), m["dependency_states"] or (), strict=True
        )
    ]
    return row_to_job(row, full=True), dependencies


_SELECT_EVENTS = text("""
SELECT job_id, seq, from_state, to_state, attempt, executor, reason, actor, created_at
FROM job_events WHERE job_id = :id AND seq > :after ORDER BY seq
""")


async def select_events(
    conn: AsyncConnection, job_id: str, after_seq: int = 0
) -> list[JobEventRecord]:
    result = await conn.execute(_SELECT_EVENTS, {"id": job_id, "after": after_seq})
    return [_to_event(r) for r in result]


def _states_sql(states: Sequence[JobState]) -> str:
    # Literal enum labels (from our own enum, never user text) let the planner match the partial
    # indexes, which a bound array parameter would hide from it.
    return ", ".join(f"'{JobState(s).value}'" for s in states)


def _list_filters(
    tenant: str,
    states: Sequence[JobState],
    queue: str | None,
    job_type: str | None,
    labels: Sequence[LabelFilter],
    limit: int,
) -> tuple[list[str], dict[str, Any]]:
    """The predicates and parameters both lists share. Label filters are checked on the rows
    the keyset walk reads (no index on labels): a label few jobs have, over a large backlog,
    reads many rows for a page."""
    where = ["tenant = :tenant", f"state IN ({_states_sql(states)})"]
    params: dict[str, Any] = {"tenant": tenant, "limit": limit}
    if queue is not None:
        where.append("queue = :queue")
        params["queue"] = queue
    if job_type is not None:
        where.append("type = :type")
        params["type"] = job_type
    for i, label in enumerate(labels):
        if label.value is None:
            where.append(f"labels ? :label_{i}")
            params[f"label_{i}"] = label.key
        else:
            where.append(f"labels @> CAST(:label_{i} AS jsonb)")
            params[f"label_{i}"] = json.dumps({label.key: label.value})
    return where, params


async def _select_page(
    conn: AsyncConnection, where: list[str], params: dict[str, Any], order_by: str
) -> list[JobRecord]:
    sql = (
        f"SELECT {LIST_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
        f"ORDER BY {order_by} LIMIT :limit"
    )
    return [row_to_job(r, full=False) for r in await conn.execute(text(sql), params)]


async def select_active_page(
    conn: AsyncConnection,
    tenant: str,
    *,
    states: Sequence[JobState],
    queue: str | None,
    job_type: str | None,
    after: Cursor | None,
    limit: int,
    labels: Sequence[LabelFilter] = (),
) -> list[JobRecord]:
    """One page of active jobs in (created_at, id) order, after the cursor."""
    # The second state predicate repeats the partial index's own, so the planner can use it.
    where, params = _list_filters(tenant, states, queue, job_type, labels, limit)
    where.append("state IN ('waiting', 'scheduled', 'queued', 'running')")
    if after is not None:
        where.append("(created_at, id) > (:after_at, CAST(:after_id AS uuid))")
        params |= {"after_at": after.at, "after_id": after.id}
    return await _select_page(conn, where, params, "created_at, id")


async def select_history_page(
    conn: AsyncConnection,
    tenant: str,
    *,
    states: Sequence[JobState],
    queue: str | None,
    job_type: str | None,
    finished_after: datetime | None,
    finished_before: datetime | None,
    after: Cursor | None,
    limit: int,
    labels: Sequence[LabelFilter] = (),
) -> list[JobRecord]:
    """One page of terminal jobs in (finished_at, id) descending order, after the cursor."""
    where, params = _list_filters(tenant, states, queue, job_type, labels, limit)
    where.append("finished_at IS NOT NULL")
    if finished_after is not None:
        where.append("finished_at >= :finished_after")
        params["finished_after"] = finished_after
    if finished_before is not None:
        where.append("finished_at < :finished_before")
        params["finished_before"] = finished_before
    if after is not None:
        where.append("(finished_at, id) < (:after_at, CAST(:after_id AS uuid))")
        params |= {"after_at": after.at, "after_id": after.id}
    return await _select_page(conn, where, params, "finished_at DESC, id DESC")


# A WatchJobs item lists at most this many transitions of its job; the stream says
# changes_dropped when a job had more since it was last read.
MAX_CHANGE_TRANSITIONS = 100


@dataclass(frozen=True, slots=True)
class ChangedJob:
    """A job WatchJobs read: its projected row, its transitions since the stream last read it
    (oldest first, the latest MAX_CHANGE_TRANSITIONS), whether older ones were cut, and whether
    one of them left a watched state."""

    job: JobRecord
    transitions: tuple[JobEventRecord, ...]
    truncated: bool
    left_states: bool


def _event_from_json(job_id: str, item: Sequence[Any]) -> JobEventRecord:
    seq, from_state, to_state, attempt, executor, reason, actor, created_at = item
    return JobEventRecord(
        job_id=job_id,
        seq=int(seq),
        from_state=JobState(from_state) if from_state is not None else None,
        to_state=JobState(to_state),
        attempt=int(attempt),
        executor=executor,
        reason=reason,
        actor=actor,
        created_at=datetime.fromisoformat(created_at),
    )


async def select_changed_jobs(
    conn: AsyncConnection,
    tenant: str,
    seen: Mapping[str, int],
    *,
    queue: str | None,
    job_type: str | None,
    left_states: Sequence[JobState],
    since: datetime,
) -> list[ChangedJob]:
    """The projected rows of the jobs in `seen` (job id -> the event_seq last seen of it, 0 for
    none) that belong to the tenant, queue and type, with their transitions made since (seq
    above the one seen, at or after `since`, the subscription's start), in one statement: one
    range scan of uq_job_events_job_id_seq per job, backwards from its latest event."""
    columns = ", ".join(f"j.{c}" for c in LIST_COLUMN_NAMES)
    where = ["j.tenant = :tenant"]
    params: dict[str, Any] = {
        "tenant": tenant,
        "ids": list(seen),
        "after": list(seen.values()),
        "since": since,
        "cap": MAX_CHANGE_TRANSITIONS + 1,
    }
    if queue is not None:
        where.append("j.queue = :queue")
        params["queue"] = queue
    if job_type is not None:
        where.append("j.type = :type")
        params["type"] = job_type
    sql = f"""
SELECT {columns}, ev.transitions
FROM unnest(CAST(:ids AS uuid[]), CAST(:after AS bigint[])) AS t(id, after_seq)
JOIN jobs j ON j.id = t.id
LEFT JOIN LATERAL (
    SELECT json_agg(json_build_array(e.seq, e.from_state, e.to_state, e.attempt, e.executor,
                                     e.reason, e.actor, e.created_at) ORDER BY e.seq)
           AS transitions
    FROM (SELECT * FROM job_events e
          WHERE e.job_id = j.id AND e.seq > t.after_seq AND e.created_at >= :since
          ORDER BY e.seq DESC LIMIT :cap) AS e
) AS ev ON TRUE
WHERE {" AND ".join(where)}
ORDER BY j.updated_at, j.id
"""
    watched = frozenset(JobState(s) for s in left_states)
    changed = []
    for row in await conn.execute(text(sql), params):
        job = row_to_job(row, full=False)
        raw = row._mapping["transitions"]
        items = (json.loads(raw) if isinstance(raw, str) else raw) or []
        transitions = [_event_from_json(job.id, item) for item in items]
        truncated = len(transitions) > MAX_CHANGE_TRANSITIONS
        if truncated:
            transitions = transitions[-MAX_CHANGE_TRANSITIONS:]
        left = any(t.from_state in watched for t in transitions)
        changed.append(ChangedJob(job, tuple(transitions), truncated, left))
    return changed


def transition_statement(assignments: str, condition: str = "") -> Any:
    """A guarded transition: UPDATE ... WHERE state AND attempt (AND `condition`), plus its event,
    in one statement."""
    extra = f" AND {condition}" if condition else ""
    return text(f"""
WITH updated AS (
    UPDATE jobs SET {assignments}, updated_at = :now, event_seq = event_seq + 1
    WHERE tenant = :tenant AND id = :id
      AND state = CAST(:expected_state AS job_state) AND attempt = :expected_attempt{extra}
    RETURNING {FULL_COLUMNS}
), events AS (
    INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, executor, reason, actor,
                            created_at)
    SELECT id, event_seq, CAST(:expected_state AS job_state), state, attempt, executor, :reason,
           :actor, :now
    FROM updated
)
SELECT {FULL_COLUMNS} FROM updated
""")


# Jobs that have not started may change priority; a priority that does not change writes nothing.
PRIORITY_STATES = frozenset({JobState.WAITING, JobState.SCHEDULED, JobState.QUEUED})
_UPDATE_PRIORITY = text(f"""
UPDATE jobs SET priority = :priority, updated_at = :now
WHERE tenant = :tenant AND id = :id AND state IN ('waiting', 'scheduled', 'queued')
  AND priority <> :priority
RETURNING {FULL_COLUMNS}
""")

_CANCEL = transition_statement("state = 'cancelled', finished_at = :now, lease_expires_at = NULL")

_RETRY = transition_statement(
    "state = 'queued', run_at = :now, finished_at = NULL, lease_expires_at = NULL, "
    "cancel_requested_at = NULL, result = NULL, max_attempts = GREATEST(max_attempts, attempt + 1), "
    "progress_percent = 0, progress_step = '', progress_message = '', progress_eta = NULL, "
    "progress_updated_at = NULL"
)


@dataclass(frozen=True, slots=True)
class Guard:
    """What the caller read: the transition applies only if the job is still exactly so."""

    tenant: str
    job_id: str
    state: JobState
    attempt: int


async def run_guarded(
    conn: AsyncConnection,
    statement: Any,
    guard: Guard,
    now: datetime,
    reason: str,
    actor: str,
    extra: Mapping[str, Any] | None = None,
) -> JobRecord:
    """Run a transition_statement for `guard`; `extra` binds the statement's own parameters."""
    params = {
        "tenant": guard.tenant,
        "id": guard.job_id,
        "expected_state": guard.state.value,
        "expected_attempt": guard.attempt,
        "now": now,
        "reason": reason,
        "actor": actor,
        **(extra or {}),
    }
    row = (await conn.execute(statement, params)).first()
    if row is None:
        raise ConcurrentModification(
            f"job {guard.job_id} is no longer {guard.state.name} at attempt {guard.attempt}"
        )
    return row_to_job(row, full=True)


async def cancel_job(
    conn: AsyncConnection, guard: Guard, now: datetime, reason: str, actor: str
) -> JobRecord:
    """WAITING/SCHEDULED/QUEUED -> CANCELLED (the caller checked the state machine)."""
    return await run_guarded(conn, _CANCEL, guard, now, reason, actor)


async def retry_job(
    conn: AsyncConnection, guard: Guard, now: datetime, reason: str, actor: str
) -> JobRecord:
    """DEAD/CANCELLED -> QUEUED, granting one more attempt when they were exhausted."""
    return await run_guarded(conn, _RETRY, guard, now, reason, actor)


# Bulk retry: the same assignments as _RETRY, for up to :limit terminal jobs picked oldest
# finished first (a backward scan of ix_jobs_history). One candidate more than the limit is
# locked to tell whether more match; it is left as it is.
_RETRY_MANY = """
WITH candidates AS (
    SELECT id AS candidate_id, state AS old_state, finished_at AS old_finished_at FROM jobs
    WHERE {where}
    ORDER BY finished_at, id
    LIMIT :fetch
    FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT candidate_id, old_state FROM candidates
    ORDER BY old_finished_at, candidate_id
    LIMIT :limit
), retried AS (
    UPDATE jobs SET state = 'queued', run_at = :now, finished_at = NULL, lease_expires_at = NULL,
        cancel_requested_at = NULL, result = NULL,
        max_attempts = GREATEST(jobs.max_attempts, jobs.attempt + 1),
        progress_percent = 0, progress_step = '', progress_message = '', progress_eta = NULL,
        progress_updated_at = NULL, updated_at = :now, event_seq = jobs.event_seq + 1
    FROM chosen WHERE jobs.id = chosen.candidate_id
    RETURNING jobs.id, jobs.event_seq, jobs.attempt, jobs.executor, chosen.old_state
), events AS (
    INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, executor, reason, actor,
                            created_at)
    SELECT id, event_seq, old_state, CAST('queued' AS job_state), attempt, executor, :reason,
           :actor, :now
    FROM retried
)
SELECT (SELECT coalesce(array_agg(id), '{{}}') FROM retried) AS ids,
       (SELECT count(*) FROM candidates) > :limit AS more
"""


@dataclass(frozen=True, slots=True)
class BulkRetry:
    job_ids: tuple[str, ...]  # the jobs moved back to QUEUED
    more: bool  # whether other jobs matched beyond the limit

    @property
    def retried(self) -> int:
        return len(self.job_ids)


async def retry_terminal_jobs(
    conn: AsyncConnection,
    tenant: str,
    *,
    states: Sequence[JobState],
    queue: str | None,
    job_type: str | None,
    finished_after: datetime | None,
    finished_before: datetime | None,
    limit: int,
    now: datetime,
    reason: str,
    actor: str,
) -> BulkRetry:
    """DEAD/CANCELLED -> QUEUED for up to `limit` matching jobs, oldest finished first, each with
    its event, in one statement (the caller checked the state machine). SKIP LOCKED: a job a
    concurrent writer holds is left for the next call."""
    if limit <= 0:
        return BulkRetry((), False)
    where, params = _list_filters(tenant, states, queue, job_type, (), limit)
    where.append("finished_at IS NOT NULL")  # the predicate of ix_jobs_history
    if finished_after is not None:
        where.append("finished_at >= :finished_after")
        params["finished_after"] = finished_after
    if finished_before is not None:
        where.append("finished_at < :finished_before")
        params["finished_before"] = finished_before
    params |= {"fetch": limit + 1, "now": now, "reason": reason, "actor": actor}
    sql = _RETRY_MANY.format(where=" AND ".join(where))
    row = (await conn.execute(text(sql), params)).one()
    return BulkRetry(tuple(str(i) for i in row._mapping["ids"]), bool(row._mapping["more"]))


_REQUEST_CANCEL = text(f"""
UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, :now), updated_at = :now
WHERE tenant = :tenant AND id = :id AND state = 'running' AND attempt = :expected_attempt
RETURNING {FULL_COLUMNS}
""")


async def request_cancel(conn: AsyncConnection, guard: Guard, now: datetime) -> JobRecord:
    """Mark a RUNNING attempt for cancellation; its executor ends it (no state change here)."""
    row = (
        await conn.execute(
            _REQUEST_CANCEL,
            {
                "tenant": guard.tenant,
                "id": guard.job_id,
                "expected_attempt": guard.attempt,
                "now": now,
            },
        )
    ).first()
    if row is None:
        raise ConcurrentModification(
            f"job {guard.job_id} is no longer running attempt {guard.attempt}"
        )
    return row_to_job(row, full=True)


_DELETE_JOB = text("""
DELETE FROM jobs
WHERE tenant = :tenant AND id = :id AND state = CAST(:expected_state AS job_state)
  AND attempt = :expected_attempt AND state <> 'running'
RETURNING id
""")


async def delete_job(conn: AsyncConnection, guard: Guard) -> None:
    """Delete a job that is not running; its history goes with it (ON DELETE CASCADE)."""
    row = (
        await conn.execute(
            _DELETE_JOB,
            {
                "tenant": guard.tenant,
                "id": guard.job_id,
                "expected_state": guard.state.value,
                "expected_attempt": guard.attempt,
            },
        )
    ).first()
    if row is None:
        raise ConcurrentModification(f"job {guard.job_id} changed while being deleted")


# --- the facade ------------------------------------------------------------------------------


def _same_job(existing: JobRecord, new: NewJob) -> bool:
    return (existing.queue, existing.type, existing.payload) == (new.queue, new.type, new.payload)


@dataclass(frozen=True, slots=True)
class _DependencyPlan:
    jobs: list[NewJob]  # with their initial state and pending count
    locked: LockedJobs
    existing: dict[int, StoredJob]  # positions whose idempotency key names a stored job
    checked: frozenset[int]  # positions whose being inserted or not the plan relied on


async def _plan_dependencies(
    conn: AsyncConnection, tenant: str, jobs: Sequence[NewJob], paths: Sequence[str]
) -> _DependencyPlan:
    """Read and lock the dependencies named by id and the jobs the batch's relevant idempotency
    keys already name (one statement), and decide each job's initial state."""
    targets = {p for j in jobs for p in j.depends_on_refs}
    checked = frozenset(
        i for i, j in enumerate(jobs) if j.depends_on or j.depends_on_refs or i in targets
    )
    ids = sorted({d for j in jobs for d in j.depends_on})
    keys = sorted({k for i in checked if (k := jobs[i].idempotency_key) is not None})
    locked = await lock_submit_dependencies(conn, tenant, ids, keys)
    existing = {
        i: locked.by_key[j.idempotency_key]
        for i, j in enumerate(jobs)
        if j.idempotency_key is not None and j.idempotency_key in locked.by_key
    }
    planned = plan_dependencies(jobs, paths, locked.by_id, existing)
    return _DependencyPlan(planned, locked, existing, checked)


async def _link_dependencies(
    conn: AsyncConnection, plan: _DependencyPlan, results: list[Submitted]
) -> list[Submitted]:
    """Insert the edges of the jobs just inserted (one statement) and fill their depends_on."""
    for i in plan.checked:
        if results[i].created == (i in plan.existing):
            # A job with the same idempotency key was stored concurrently (after the plan read
            # the keys): the plan does not hold; the client submits again.
            raise ConcurrentModification(
                f"job with idempotency key {results[i].job.idempotency_key!r} was submitted "
                "concurrently; submit again"
            )
    created_at = dict(plan.locked.created_at)
    created_at.update((r.job.id, r.job.created_at) for r in results)
    edges: list[tuple[str, str]] = []
    linked = list(results)
    for i, job in enumerate(plan.jobs):
        if not results[i].created or not (job.depends_on or job.depends_on_refs):
            continue
        record = results[i].job
        targets = dict.fromkeys(
            [*job.depends_on, *(results[p].job.id for p in job.depends_on_refs)]
        )
        depends_on = sorted(targets, key=lambda d: (created_at[d], d))
        edges.extend((record.id, d) for d in depends_on)
        linked[i] = Submitted(replace(record, depends_on=tuple(depends_on)), True)
    await insert_dependencies(conn, edges)
    return linked


class JobStore:
    """Transactions over the statements above. Raises domain errors only. Writes re-check the
    state machine for the guarded state, so a caller cannot ask for a transition it forbids."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def submit(
        self,
        tenant: str,
        jobs: Sequence[NewJob],
        actor: str = "client",
        *,
        fields: Sequence[str] | None = None,
    ) -> list[Submitted]:
        """Store the jobs atomically (all or none), in order. A repeated idempotency key yields the
        existing job, unless that job differs (queue, type or payload): IdempotencyKeyReused.

        Dependencies: the ones named by id are read and locked in one statement and checked
        (InvalidArgument naming the field, `fields[i]` or `jobs[i]`, for an unknown, other
        tenant's, DEAD or CANCELLED one); jobs with unmet ones are inserted WAITING with their
        count, and the edges with one more statement."""
        with_dependencies = any(j.depends_on or j.depends_on_refs for j in jobs)
        async with self.db.transaction() as conn:
            plan: _DependencyPlan | None = None
            if with_dependencies:
                paths = (
                    list(fields) if fields is not None else [f"jobs[{i}]" for i in range(len(jobs))]
                )
                plan = await _plan_dependencies(conn, tenant, jobs, paths)
                jobs = plan.jobs
            inserted = await insert_jobs(conn, tenant, jobs, actor)
            by_position: list[JobRecord | None] = [None] * len(jobs)
            leftover = iter(inserted.values())
            skipped_keys: list[str] = []
            # insert_jobs keeps request order among the inserted rows; a skipped row (existing
            # idempotency key) is filled from the existing job below.
            inserted_keys = {j.idempotency_key for j in inserted.values()}
            for i, job in enumerate(jobs):
                if job.idempotency_key is not None and job.idempotency_key not in inserted_keys:
                    skipped_keys.append(job.idempotency_key)
                else:
                    by_position[i] = next(leftover)
            existing: dict[str, JobRecord] = {}
            if skipped_keys:
                existing = await select_jobs_by_idempotency_keys(conn, tenant, skipped_keys)
            results: list[Submitted] = []
            for i, job in enumerate(jobs):
                record = by_position[i]
                if record is not None:
                    results.append(Submitted(job=record, created=True))
                    continue
                assert job.idempotency_key is not None
                found = existing.get(job.idempotency_key)
                if found is None:
                    # The conflicting row was deleted between our insert and select.
                    raise ConcurrentModification(
                        f"job with idempotency key {job.idempotency_key!r} changed concurrently"
                    )
                if not _same_job(found, job):
                    raise IdempotencyKeyReused(
                        f"idempotency key {job.idempotency_key!r} was used for job {found.id} "
                        "with a different queue, type or payload",
                        job_id=found.id,
                        key=job.idempotency_key,
                    )
                results.append(Submitted(job=found, created=False))
            if plan is not None:
                results = await _link_dependencies(conn, plan, results)
            repeated = [r.job.id for r in results if not r.created]
            if repeated:
                depends_on = await select_depends_on(conn, repeated)
                results = [
                    r
                    if r.created
                    else Submitted(replace(r.job, depends_on=depends_on.get(r.job.id, ())), False)
                    for r in results
                ]
            return results

    async def get(self, tenant: str, job_id: str) -> JobRecord:
        async with self.db.read() as conn:
            job = await select_job(conn, tenant, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def get_with_dependencies(
        self, tenant: str, job_id: str, *, events: bool = False
    ) -> tuple[JobRecord, list[Dependency], list[JobEventRecord]]:
        """The job with the jobs it depends on and their current states (creation order), read
        by one statement; with `events`, also all its events, read in the same snapshot."""
        if not events:
            async with self.db.read() as conn:
                found = await select_job_with_dependencies(conn, tenant, job_id)
            if found is None:
                raise JobNotFound(job_id)
            return found[0], found[1], []
        async with self.db.transaction() as conn:
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            found = await select_job_with_dependencies(conn, tenant, job_id)
            if found is None:
                raise JobNotFound(job_id)
            return found[0], found[1], await select_events(conn, job_id)

    async def get_with_events(
        self, tenant: str, job_id: str, after_seq: int = 0
    ) -> tuple[JobRecord, list[JobEventRecord]]:
        """The job and its events with seq > after_seq, read in one snapshot."""
        async with self.db.transaction() as conn:
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            job = await select_job(conn, tenant, job_id)
            if job is None:
                raise JobNotFound(job_id)
            return job, await select_events(conn, job_id, after_seq)

    async def get_changed(
        self, tenant: str, seen: Mapping[str, int], **filters: Any
    ) -> list[ChangedJob]:
        """See select_changed_jobs: many jobs by id, for WatchJobs, in one read."""
        if not seen:
            return []
        async with self.db.read() as conn:
            return await select_changed_jobs(conn, tenant, seen, **filters)

    async def list_active(self, tenant: str, **filters: Any) -> list[JobRecord]:
        async with self.db.read() as conn:
            return await select_active_page(conn, tenant, **filters)

    async def list_history(self, tenant: str, **filters: Any) -> list[JobRecord]:
        async with self.db.read() as conn:
            return await select_history_page(conn, tenant, **filters)

    async def cancel(self, guard: Guard, now: datetime, reason: str, actor: str) -> JobRecord:
        check_transition(guard.state, Event.CANCEL, JobState.CANCELLED)
        async with self.db.transaction() as conn:
            return await cancel_job(conn, guard, now, reason, actor)

    async def request_cancel(self, guard: Guard, now: datetime) -> JobRecord:
        async with self.db.transaction() as conn:
            return await request_cancel(conn, guard, now)

    async def update_priority(
        self, tenant: str, job_id: str, priority: int, now: datetime
    ) -> tuple[JobRecord, bool]:
        """Set the priority of a job that has not started; (job, changed). The same priority
        again writes nothing. A job that runs or has ended: FailedPrecondition."""
        async with self.db.transaction() as conn:
            row = (
                await conn.execute(
                    _UPDATE_PRIORITY,
                    {"tenant": tenant, "id": job_id, "priority": priority, "now": now},
                )
            ).first()
            if row is not None:
                return row_to_job(row, full=True), True
            job = await select_job(conn, tenant, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.state not in PRIORITY_STATES:
            raise InvalidTransition(
                f"job {job_id} is {job.state.name}: only WAITING, SCHEDULED or QUEUED jobs "
                "can change priority"
            )
        return job, False  # the same priority: nothing written

    async def retry(self, guard: Guard, now: datetime, reason: str, actor: str) -> JobRecord:
        check_transition(guard.state, Event.RETRY, JobState.QUEUED)
        async with self.db.transaction() as conn:
            return await retry_job(conn, guard, now, reason, actor)

    async def retry_many(
        self,
        tenant: str,
        *,
        states: Sequence[JobState],
        now: datetime,
        reason: str,
        actor: str,
        **filters: Any,
    ) -> BulkRetry:
        """See retry_terminal_jobs: one statement, whatever the number of jobs."""
        for state in states:
            check_transition(state, Event.RETRY, JobState.QUEUED)
        async with self.db.transaction() as conn:
            return await retry_terminal_jobs(
                conn, tenant, states=states, now=now, reason=reason, actor=actor, **filters
            )

    async def delete(self, guard: Guard) -> None:
        """Delete a job and its history. A job that has not succeeded and that WAITING jobs
        depend on is refused (FailedPrecondition): they would wait forever."""
        check_deletable(guard.state)
        async with self.db.transaction() as conn:
            if guard.state is not JobState.SUCCEEDED:
                await check_no_waiting_dependents(conn, guard)
            await delete_job(conn, guard)
