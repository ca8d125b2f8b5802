"""Bulk retry in the store: one set-based statement moves up to `limit` DEAD/CANCELLED jobs back to
QUEUED with their events, oldest finished first, and says whether more match.

DEAD jobs are made the way the dispatcher makes them: submitted with max_attempts=1, claimed, and
failed through the store's outcome statement with a non-retryable (final) outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from scheduler.domain.errors import InvalidTransition
from scheduler.domain.jobs import JobRecord
from scheduler.domain.retry import FailureOutcome
from scheduler.domain.states import Event, JobState
from scheduler.domain.validation import JobSpecInput, validate_batch
from scheduler.store.attempts import claim_jobs, fail_attempt
from scheduler.store.database import Database
from scheduler.store.jobs import BulkRetry, Guard, JobStore

TENANT = "acme"
DEAD_OUTCOME = FailureOutcome(Event.FAIL_FINAL, JobState.DEAD, None)
T0 = datetime(2030, 1, 1, tzinfo=UTC)  # submit/claim time; finish times are T0 + n seconds
REASON = "retried by client (bulk)"


async def submit(
    store: JobStore, n: int, *, tenant: str = TENANT, queue: str = "q", job_type: str = "work"
) -> list[JobRecord]:
    specs = [JobSpecInput(queue=queue, type=job_type, max_attempts=1) for _ in range(n)]
    submitted = await store.submit(tenant, validate_batch(specs, T0 - timedelta(minutes=1)))
    return [s.job for s in submitted]


async def make_dead(
    store: JobStore,
    db: Database,
    n: int,
    *,
    finished: Sequence[datetime] | None = None,
    **spec: Any,
) -> list[JobRecord]:
    """Submit n jobs and run each one's only attempt to a non-retryable failure (DEAD), finished
    at finished[i] (default T0 + i seconds). No other QUEUED job of that queue and type may exist."""
    jobs = await submit(store, n, **spec)
    finish_times = list(finished or [T0 + timedelta(seconds=i) for i in range(n)])
    async with db.transaction() as conn:
        claimed = await claim_jobs(
            conn,
            executor="ex-1",
            job_types=[jobs[0].type],
            queues=[jobs[0].queue],
            limit=n,
            lease=timedelta(seconds=30),
            now=T0,
        )
        assert {j.id for j in claimed} == {j.id for j in jobs}
        by_id = {j.id: j for j in claimed}
        dead = []
        for job, finished_at in zip(jobs, finish_times, strict=True):
            running = by_id[job.id]
            guard = Guard(running.tenant, running.id, running.state, running.attempt)
            dead.append(
                await fail_attempt(conn, guard, DEAD_OUTCOME, "boom", finished_at, "executor:ex-1")
            )
    return dead


async def retry(store: JobStore, tenant: str = TENANT, **filters: Any) -> BulkRetry:
    options: dict[str, Any] = {
        "states": [JobState.DEAD],
        "queue": None,
        "job_type": None,
        "finished_after": None,
        "finished_before": None,
        "limit": 1000,
        "now": T0 + timedelta(hours=1),
        "reason": REASON,
        "actor": "client",
    }
    options.update(filters)
    return await store.retry_many(tenant, **options)


async def states_of(db: Database, ids: Sequence[str]) -> dict[str, str]:
    async with db.read() as conn:
        rows = await conn.execute(
            text("SELECT id::text, state::text FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": list(ids)},
        )
        return {r[0]: r[1] for r in rows}


async def last_event(db: Database, job_id: str) -> dict[str, Any]:
    async with db.read() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT seq, from_state::text, to_state::text, attempt, reason, actor, "
                    "created_at FROM job_events WHERE job_id = :id ORDER BY seq DESC LIMIT 1"
                ),
                {"id": job_id},
            )
        ).one()
        return dict(row._mapping)


async def event_count(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM job_events"))).scalar_one())


@contextlib.contextmanager
def count_statements(db: Database) -> Iterator[list[str]]:
    """Every statement sent to the server while the block runs."""
    statements: list[str] = []

    def on_execute(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", on_execute)


# --- tests ------------------------------------------------------------------------------------


async def test_retried_jobs_are_queued_like_a_single_retry_with_one_event_each(
    store: JobStore, db: Database
) -> None:
    dead = await make_dead(store, db, 3)
    # Leftovers of the failed run that a retry clears: progress and a pending cancel request.
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "UPDATE jobs SET progress_percent = 40, progress_step = 's', "
                "progress_message = 'm', progress_eta = :t, progress_updated_at = :t, "
                "cancel_requested_at = :t WHERE id = :id"
            ),
            {"t": T0, "id": dead[0].id},
        )
    now = T0 + timedelta(hours=1)

    result = await retry(store, now=now)

    assert sorted(result.job_ids) == sorted(j.id for j in dead)
    assert result.retried == 3
    assert result.more is False
    for before in dead:
        job = await store.get(TENANT, before.id)
        assert job.state is JobState.QUEUED
        assert job.run_at == now
        assert job.finished_at is None
        assert job.result is None
        assert job.cancel_requested is False
        assert (job.progress.percent, job.progress.step, job.progress.message) == (0, "", "")
        assert job.progress.eta is None
        assert job.progress.updated_at is None
        assert job.attempt == 1
        assert job.max_attempts == 2  # the exhausted job gets one more attempt
        assert job.event_seq == before.event_seq + 1
        assert job.last_error == "boom"  # kept, as RetryJob keeps it
        assert await last_event(db, job.id) == {
            "seq": before.event_seq + 1,
            "from_state": "dead",
            "to_state": "queued",
            "attempt": 1,
            "reason": REASON,
            "actor": "client",
            "created_at": now,
        }
    # The new attempt can be claimed.
    async with db.transaction() as conn:
        claimed = await claim_jobs(
            conn,
            executor="ex-2",
            job_types=["work"],
            queues=[],
            limit=10,
            lease=timedelta(seconds=30),
            now=now,
        )
    assert sorted(j.id for j in claimed) == sorted(j.id for j in dead)
    assert {j.attempt for j in claimed} == {2}


async def test_only_matching_terminal_jobs_of_the_tenant_are_retried(
    store: JobStore, db: Database
) -> None:
    dead_q1 = await make_dead(store, db, 2, queue="q1")
    dead_q2 = await make_dead(store, db, 2, queue="q2")
    dead_other_type = await make_dead(store, db, 1, queue="q1", job_type="other")
    dead_other_tenant = await make_dead(store, db, 1, queue="q1", tenant="globex")
    [cancelled] = await submit(store, 1, queue="q1")
    cancelled = await store.cancel(
        Guard(TENANT, cancelled.id, JobState.QUEUED, 0), T0, "no", "client"
    )
    [queued] = await submit(store, 1, queue="q1")
    all_ids = [
        j.id for j in (*dead_q1, *dead_q2, *dead_other_type, *dead_other_tenant, cancelled, queued)
    ]

    result = await retry(store, queue="q1", job_type="work")
    assert sorted(result.job_ids) == sorted(j.id for j in dead_q1)
    states = await states_of(db, all_ids)
    assert [states[j.id] for j in dead_q2] == ["dead", "dead"]
    assert states[dead_other_type[0].id] == "dead"
    assert states[dead_other_tenant[0].id] == "dead"
    assert states[cancelled.id] == "cancelled"  # DEAD only unless asked
    assert states[queued.id] == "queued"

    assert (await retry(store, states=[JobState.CANCELLED])).job_ids == (cancelled.id,)
    assert (await last_event(db, cancelled.id))["from_state"] == "cancelled"

    both = await retry(store, tenant="globex", states=[JobState.DEAD, JobState.CANCELLED])
    assert both.job_ids == (dead_other_tenant[0].id,)
    rest = await retry(store)
    assert sorted(rest.job_ids) == sorted(j.id for j in (*dead_q2, *dead_other_type))
    assert (await retry(store)).retried == 0


async def test_finish_time_window_is_inclusive_then_exclusive(
    store: JobStore, db: Database
) -> None:
    dead = await make_dead(store, db, 6)  # finished at T0 + 0..5 s
    result = await retry(
        store,
        finished_after=T0 + timedelta(seconds=1),
        finished_before=T0 + timedelta(seconds=4),
    )
    assert sorted(result.job_ids) == sorted(j.id for j in dead[1:4])
    assert sorted((await retry(store, finished_before=T0 + timedelta(seconds=1))).job_ids) == [
        dead[0].id
    ]
    assert sorted((await retry(store, finished_after=T0 + timedelta(seconds=5))).job_ids) == [
        dead[5].id
    ]
    assert (await states_of(db, [dead[4].id])) == {dead[4].id: "dead"}


async def test_limit_takes_the_oldest_finished_first_and_tells_whether_more_match(
    store: JobStore, db: Database
) -> None:
    # Finish times out of submit order, one tie (broken by id).
    offsets = [5, 1, 3, 0, 3, 2, 4]
    dead = await make_dead(store, db, 7, finished=[T0 + timedelta(seconds=s) for s in offsets])
    oldest_first = [
        j.id for j in sorted(dead, key=lambda j: (j.finished_at or T0, j.id.replace("-", "")))
    ]
    first = await retry(store, limit=3)
    assert sorted(first.job_ids) == sorted(oldest_first[:3])
    assert first.more is True
    second = await retry(store, limit=3)
    assert sorted(second.job_ids) == sorted(oldest_first[3:6])
    assert second.more is True
    exact = await retry(store, limit=1)
    assert exact.job_ids == (oldest_first[6],)
    assert exact.more is False  # exactly `limit` matched: nothing more
    assert await retry(store, limit=3) == BulkRetry((), False)


async def test_5000_dead_jobs_in_5_calls_of_1000_one_statement_each(
    store: JobStore, db: Database
) -> None:
    dead = await make_dead(
        store, db, 5000, finished=[T0 + timedelta(milliseconds=i) for i in range(5000)]
    )
    events_before = await event_count(db)
    retried: list[str] = []
    for call in range(5):
        with count_statements(db) as statements:
            result = await retry(store, limit=1000)
        assert len(statements) == 1, statements  # one statement, whatever the number of jobs
        assert result.retried == 1000
        assert result.more is (call < 4)
        # Oldest finished first: this call took the next 1000 in finish order.
        assert sorted(result.job_ids) == sorted(j.id for j in dead[call * 1000 : (call + 1) * 1000])
        retried.extend(result.job_ids)
    assert len(set(retried)) == 5000
    assert await event_count(db) == events_before + 5000
    with count_statements(db) as statements:
        assert await retry(store, limit=1000) == BulkRetry((), False)
    assert len(statements) == 1
    states = await states_of(db, [j.id for j in dead])
    assert set(states.values()) == {"queued"}


async def test_concurrent_bulk_retries_take_disjoint_jobs(store: JobStore, db: Database) -> None:
    dead = await make_dead(store, db, 600)
    results = await asyncio.gather(*[retry(store, limit=100) for _ in range(8)])
    ids = [i for r in results for i in r.job_ids]
    assert len(ids) == len(set(ids))  # no job retried twice
    # SKIP LOCKED: a call skips what the others hold, including the one candidate beyond its
    # limit that each locks to answer `more`; such a job is left only by a call that said more.
    assert 600 - len(ids) <= sum(r.more for r in results)
    rest = await retry(store, limit=1000)
    assert rest.more is False
    assert len(set(ids) | set(rest.job_ids)) == len(ids) + rest.retried == 600
    async with db.read() as conn:
        events = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM job_events WHERE reason = :r "
                    "AND job_id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"r": REASON, "ids": [j.id for j in dead]},
            )
        ).scalar_one()
    assert events == 600


async def test_a_job_locked_by_another_transaction_is_skipped(
    store: JobStore, db: Database
) -> None:
    locked, free = await make_dead(store, db, 2)
    async with db.transaction() as holder:
        await holder.execute(
            text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": locked.id}
        )
        result = await retry(store)  # does not wait for the lock
        assert result.job_ids == (free.id,)
    assert (await states_of(db, [locked.id])) == {locked.id: "dead"}
    assert (await retry(store)).job_ids == (locked.id,)


async def test_states_the_state_machine_cannot_retry_are_refused(
    store: JobStore, db: Database
) -> None:
    [dead] = await make_dead(store, db, 1)
    events_before = await event_count(db)
    for state in (JobState.SUCCEEDED, JobState.QUEUED, JobState.RUNNING):
        with pytest.raises(InvalidTransition):
            await retry(store, states=[JobState.DEAD, state])
    assert await event_count(db) == events_before
    assert (await states_of(db, [dead.id])) == {dead.id: "dead"}


async def test_the_statement_scans_the_history_index_without_sorting(
    store: JobStore, db: Database
) -> None:
    await make_dead(store, db, 3000, finished=[T0 + timedelta(milliseconds=i) for i in range(3000)])
    async with db.transaction() as conn:
        await conn.execute(text("ANALYZE jobs"))
    with count_statements_and_parameters(db) as executed:
        await retry(store, limit=1000, queue="q", job_type="work")
    [(statement, parameters)] = executed
    async with db.transaction() as conn:
        rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        plan = "\n".join(r[0] for r in rows)
    # The candidates: the index gives the order, so the scan stops after limit + 1 matches
    # instead of reading and sorting every one. (How the UPDATE then finds those rows by id is
    # the planner's choice: a hash join on a table this small, the primary key on a large one.)
    candidates = plan.partition("CTE candidates")[2].partition("CTE ")[0]
    assert "Index Scan Backward using ix_jobs_history" in candidates, plan
    assert "Sort" not in candidates, plan
    assert "Seq Scan" not in candidates, plan


@contextlib.contextmanager
def count_statements_and_parameters(db: Database) -> Iterator[list[tuple[str, Any]]]:
    executed: list[tuple[str, Any]] = []

    def on_execute(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        executed.append((statement, params))

    event.listen(db.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield executed
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", on_execute)
