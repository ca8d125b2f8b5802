"""The job store against a real PostgreSQL: set-based idempotent submit, guarded transitions with
their gapless history, the guardrails PostgreSQL enforces by itself, keyset lists, and the
translation of an unreachable database into DatabaseUnavailable."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from scheduler.domain.errors import (
    ConcurrentModification,
    DatabaseUnavailable,
    IdempotencyKeyReused,
    InvalidTransition,
    JobNotFound,
    JobschedError,
)
from scheduler.domain.jobs import JobRecord, NewJob, Submitted
from scheduler.domain.pagination import Cursor
from scheduler.domain.states import ACTIVE_STATES, TERMINAL_STATES, JobState
from scheduler.domain.validation import JobSpecInput, validate_job
from scheduler.store.database import Database
from scheduler.store.jobs import Guard, JobStore, delete_job, insert_jobs
from tests.helpers import assert_eventually

TENANT = "acme"
ACTIVE = sorted(ACTIVE_STATES)
TERMINAL = sorted(TERMINAL_STATES)


# --- helpers ----------------------------------------------------------------------------------


def new_job(
    now: datetime,
    *,
    queue: str = "default",
    job_type: str = "email.send",
    payload: bytes = b"payload",
    key: str = "",
    run_at: datetime | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    labels: dict[str, str] | None = None,
    timeout: timedelta | None = None,
) -> NewJob:
    """A job as the servicer hands it to the store: validated and normalised."""
    return validate_job(
        JobSpecInput(
            queue=queue,
            type=job_type,
            payload=payload,
            priority=priority,
            max_attempts=max_attempts,
            run_at=run_at,
            labels=labels or {},
            idempotency_key=key,
            timeout=timeout,
        ),
        now,
    )


async def submit_one(
    store: JobStore, now: datetime, tenant: str = TENANT, **spec: Any
) -> JobRecord:
    [submitted] = await store.submit(tenant, [new_job(now, **spec)])
    assert submitted.created
    return submitted.job


async def execute(db: Database, sql: str, **params: Any) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text(sql), params)


async def scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.engine.begin() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def counts(db: Database) -> tuple[int, int]:
    """(rows in jobs, rows in job_events)."""
    async with db.engine.begin() as conn:
        row = (
            await conn.execute(
                text("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_events)")
            )
        ).one()
    return int(row[0]), int(row[1])


async def snapshot(db: Database, job_id: str) -> tuple[Any, list[Any]]:
    """The whole row (every column, lease included) and its history, to prove nothing changed."""
    async with db.engine.begin() as conn:
        row = (
            await conn.execute(
                text("SELECT to_jsonb(j) FROM jobs j WHERE id = :id"), {"id": job_id}
            )
        ).scalar_one_or_none()
        events = (
            await conn.execute(
                text("SELECT to_jsonb(e) FROM job_events e WHERE job_id = :id ORDER BY seq"),
                {"id": job_id},
            )
        ).scalars()
        return row, list(events)


async def make_running(db: Database, job_id: str) -> None:
    await execute(
        db,
        "UPDATE jobs SET state = 'running', attempt = 1, started_at = now(), executor = 'x', "
        "lease_expires_at = now() + interval '1 minute' WHERE id = :id",
        id=job_id,
    )


async def make_dead(db: Database, job_id: str) -> None:
    """Exhausted attempts, with progress, error and result left over from the last run."""
    await execute(
        db,
        "UPDATE jobs SET state = 'dead', attempt = max_attempts, started_at = now(), "
        "finished_at = now(), executor = 'x', last_error = 'boom', progress_percent = 40, "
        "progress_step = 'step', progress_message = 'msg', progress_eta = now(), "
        "progress_updated_at = now(), result = :result WHERE id = :id",
        id=job_id,
        result=b"partial",
    )


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


def by_created(job: JobRecord) -> tuple[datetime, uuid.UUID]:
    return job.created_at, uuid.UUID(job.id)


def by_finished(job: JobRecord) -> tuple[datetime, uuid.UUID]:
    assert job.finished_at is not None
    return job.finished_at, uuid.UUID(job.id)


async def all_pages(
    fetch: Callable[[Cursor | None], Awaitable[list[JobRecord]]],
    key: Callable[[JobRecord], datetime | None],
) -> list[list[JobRecord]]:
    pages: list[list[JobRecord]] = []
    after: Cursor | None = None
    while True:
        page = await fetch(after)
        if not page:
            return pages
        pages.append(page)
        at = key(page[-1])
        assert at is not None
        after = Cursor(at=at, id=page[-1].id)
        assert len(pages) < 100, "pagination does not terminate"


def ids(jobs: Iterable[JobRecord]) -> list[str]:
    return [j.id for j in jobs]


# --- submit -----------------------------------------------------------------------------------


async def test_submit_stores_each_job_with_its_creation_event(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    jobs = [
        new_job(
            now,
            queue="Reports",
            job_type="pdf.render",
            payload=b"\x00\x01binary",
            priority=7,
            max_attempts=5,
            labels={"team": "ops"},
            key="render-1",
            timeout=timedelta(minutes=3),
        ),
        new_job(now, job_type="email.send", payload=b""),
    ]

    submitted = await store.submit(TENANT, jobs, actor="alice")

    assert [s.created for s in submitted] == [True, True]
    assert await counts(db) == (2, 2)
    first, events = await store.get_with_events(TENANT, submitted[0].job.id)
    assert first.id == submitted[0].job.id
    assert (first.tenant, first.queue, first.type, first.payload) == (
        TENANT,
        "reports",
        "pdf.render",
        b"\x00\x01binary",
    )
    assert (first.priority, first.max_attempts, first.attempt) == (7, 5, 0)
    assert first.labels == {"team": "ops"}
    assert first.idempotency_key == "render-1"
    assert first.timeout == timedelta(minutes=3)
    assert first.state is JobState.QUEUED
    assert first.run_at == now
    assert first.finished_at is None
    assert first.started_at is None
    assert first.result is None
    assert first.event_seq == 1
    [created] = events
    assert created.job_id == first.id
    assert (created.seq, created.from_state, created.to_state) == (1, None, JobState.QUEUED)
    assert (created.attempt, created.actor, created.reason) == (0, "alice", "submitted")
    # now() is the transaction's start: the same instant proves one transaction wrote both rows.
    assert created.created_at == first.created_at

    second, second_events = await store.get_with_events(TENANT, submitted[1].job.id)
    assert (second.type, second.payload, second.idempotency_key) == ("email.send", b"", None)
    assert [(e.seq, e.from_state, e.to_state) for e in second_events] == [
        (1, None, JobState.QUEUED)
    ]


async def test_submit_returns_jobs_in_request_order(store: JobStore) -> None:
    now = datetime.now(UTC)
    jobs = [new_job(now, job_type=f"t{i}", payload=str(i).encode()) for i in range(60)]

    submitted = await store.submit(TENANT, jobs)

    assert [s.job.type for s in submitted] == [f"t{i}" for i in range(60)]
    assert len(set(ids([s.job for s in submitted]))) == 60
    for s in submitted[::7]:
        assert (await store.get(TENANT, s.job.id)).type == s.job.type


async def test_submit_interleaves_existing_and_new_jobs_in_request_order(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    existing_b = await submit_one(store, now, job_type="b", key="kb")
    existing_d = await submit_one(store, now, job_type="d", key="kd")

    submitted = await store.submit(
        TENANT,
        [
            new_job(now, job_type="a", key="ka"),
            new_job(now, job_type="b", key="kb"),
            new_job(now, job_type="c"),
            new_job(now, job_type="d", key="kd"),
            new_job(now, job_type="e", key="ke"),
        ],
    )

    assert [s.job.type for s in submitted] == ["a", "b", "c", "d", "e"]
    assert [s.created for s in submitted] == [True, False, True, False, True]
    assert submitted[1].job.id == existing_b.id
    assert submitted[3].job.id == existing_d.id
    assert await counts(db) == (5, 5)


@pytest.mark.parametrize(
    ("run_in", "state"),
    [
        (timedelta(hours=1), JobState.SCHEDULED),
        (None, JobState.QUEUED),
        (-timedelta(hours=1), JobState.QUEUED),
    ],
    ids=["future-scheduled", "absent-queued", "past-queued"],
)
async def test_submit_state_follows_run_at(
    store: JobStore, run_in: timedelta | None, state: JobState
) -> None:
    now = datetime.now(UTC)
    run_at = None if run_in is None else now + run_in

    job = await submit_one(store, now, run_at=run_at)

    stored, [created] = await store.get_with_events(TENANT, job.id)
    assert stored.state is state
    assert created.to_state is state
    assert stored.run_at == (now + run_in if state is JobState.SCHEDULED and run_in else now)


async def test_get_is_tenant_scoped_and_unknown_ids_are_not_found(store: JobStore) -> None:
    job = await submit_one(store, datetime.now(UTC))

    assert (await store.get(TENANT, job.id)).id == job.id
    with pytest.raises(JobNotFound):
        await store.get("other", job.id)
    with pytest.raises(JobNotFound):
        await store.get_with_events("other", job.id)
    with pytest.raises(JobNotFound):
        await store.get(TENANT, str(uuid.uuid4()))


# --- idempotency ------------------------------------------------------------------------------


async def test_repeated_key_returns_existing_job_and_writes_nothing(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    [first] = await store.submit(TENANT, [new_job(now, key="order-42", payload=b"p")])
    before = await snapshot(db, first.job.id)

    [again] = await store.submit(
        TENANT, [new_job(now + timedelta(seconds=5), key="order-42", payload=b"p")]
    )

    assert first.created
    assert not again.created
    assert again.job.id == first.job.id
    assert again.job.payload == b"p"
    assert await counts(db) == (1, 1)
    assert await snapshot(db, first.job.id) == before


@pytest.mark.parametrize(
    "changes",
    [{"payload": b"other"}, {"queue": "elsewhere"}, {"job_type": "other.type"}],
    ids=["payload", "queue", "type"],
)
async def test_same_key_for_a_different_job_is_refused_and_writes_nothing(
    store: JobStore, db: Database, changes: dict[str, Any]
) -> None:
    now = datetime.now(UTC)
    original = await submit_one(store, now, key="order-42", payload=b"p")
    before = await snapshot(db, original.id)

    with pytest.raises(IdempotencyKeyReused):
        await store.submit(TENANT, [new_job(now, key="order-42", **({"payload": b"p"} | changes))])

    assert await counts(db) == (1, 1)
    assert await snapshot(db, original.id) == before


async def test_idempotency_keys_are_per_tenant(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    [a] = await store.submit("tenant-a", [new_job(now, key="shared")])
    [b] = await store.submit("tenant-b", [new_job(now, key="shared", payload=b"different")])

    assert a.created
    assert b.created
    assert a.job.id != b.job.id
    assert (a.job.tenant, b.job.tenant) == ("tenant-a", "tenant-b")
    assert await counts(db) == (2, 2)
    with pytest.raises(JobNotFound):
        await store.get("tenant-a", b.job.id)


async def test_concurrent_submits_of_one_key_create_exactly_one_job(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)

    results = await asyncio.gather(
        *(store.submit(TENANT, [new_job(now, key="once", payload=b"p")]) for _ in range(10))
    )

    outcomes = [s for [s] in results]
    assert sum(s.created for s in outcomes) == 1
    assert len({s.job.id for s in outcomes}) == 1
    assert await counts(db) == (1, 1)


async def test_concurrent_submits_of_one_key_with_different_payloads(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)

    outcomes = await asyncio.gather(
        *(store.submit(TENANT, [new_job(now, key="once", payload=bytes([i]))]) for i in range(6)),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if isinstance(o, list)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, IdempotencyKeyReused) for o in outcomes if o is not winners[0])
    [won] = winners[0]
    assert won.created
    assert (await store.get(TENANT, won.job.id)).payload == bytes([outcomes.index(winners[0])])
    assert await counts(db) == (1, 1)


async def test_empty_batch_writes_nothing(store: JobStore, db: Database) -> None:
    assert await store.submit(TENANT, []) == []
    assert await counts(db) == (0, 0)


async def test_concurrent_batches_sharing_keys_in_opposite_orders(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    keys = [f"k{i:02}" for i in range(21)]
    forward = [new_job(now, key=k) for k in keys]

    async def waiting_on_locks() -> None:
        waiting = await scalar(
            db,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        assert waiting >= 2

    # A third submit of the middle key holds its row uncommitted, so both batches stop there
    # having inserted their first halves; committing it lets them run into each other.
    async with db.engine.connect() as gate:
        tx = await gate.begin()
        await insert_jobs(gate, TENANT, [forward[10]], "gate")
        a = asyncio.create_task(store.submit(TENANT, forward))
        b = asyncio.create_task(store.submit(TENANT, forward[::-1]))
        await assert_eventually(waiting_on_locks, within=10)
        await tx.commit()
        outcomes = await asyncio.gather(a, b, return_exceptions=True)

    leaked = [
        o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, JobschedError)
    ]
    assert leaked == []
    assert await counts(db) == (21, 21)


# --- batches ----------------------------------------------------------------------------------


async def test_batch_of_1000_is_set_based(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    await db.ping()  # connect first: the dialect's first-connect queries are not the submit's
    small = [new_job(now, job_type=f"s{i}") for i in range(10)]
    large = [
        new_job(now, job_type=f"t{i}", key=f"key-{i}", payload=i.to_bytes(4, "big"))
        for i in range(1000)
    ]

    with count_statements(db) as small_statements:
        await store.submit(TENANT, small)
    with count_statements(db) as statements:
        submitted = await store.submit(TENANT, large)

    assert len(statements) <= 3, statements
    assert len(statements) == len(small_statements)
    assert any("unnest" in s for s in statements)
    assert [s.job.type for s in submitted] == [f"t{i}" for i in range(1000)]
    assert all(s.created for s in submitted)
    assert await counts(db) == (1010, 1010)
    assert (await store.get(TENANT, submitted[999].job.id)).payload == (999).to_bytes(4, "big")


@pytest.mark.parametrize("position", [0, 57, 99])
async def test_batch_with_one_reused_key_stores_nothing(
    store: JobStore, db: Database, position: int
) -> None:
    now = datetime.now(UTC)
    existing = await submit_one(store, now, key="taken", payload=b"original")
    batch = [new_job(now, job_type=f"t{i}", key=f"fresh-{i}") for i in range(100)]
    batch[position] = new_job(now, key="taken", payload=b"something else")

    with pytest.raises(IdempotencyKeyReused):
        await store.submit(TENANT, batch)

    assert await counts(db) == (1, 1)
    assert (await store.get(TENANT, existing.id)).payload == b"original"
    # The fresh keys are still free: the batch left no trace.
    fresh = await store.submit(TENANT, [new_job(now, job_type="t1", key="fresh-1")])
    assert fresh[0].created


# --- guarded transitions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "stale",
    [
        {"state": JobState.SCHEDULED},
        {"state": JobState.RUNNING},
        {"attempt": 1},
        {"tenant": "other"},
        {"job_id": "00000000-0000-4000-8000-000000000000"},
    ],
    ids=["wrong-state", "running-state", "wrong-attempt", "wrong-tenant", "wrong-id"],
)
async def test_cancel_with_stale_guard_changes_nothing(
    store: JobStore, db: Database, stale: dict[str, Any]
) -> None:
    now = datetime.now(UTC)
    job = await submit_one(store, now)
    guard = Guard(tenant=TENANT, job_id=job.id, state=JobState.QUEUED, attempt=0)
    stale_guard = dataclasses.replace(guard, **stale)
    before = await snapshot(db, job.id)

    with pytest.raises(ConcurrentModification):
        await store.cancel(stale_guard, now + timedelta(seconds=1), "stale", "bob")

    assert await snapshot(db, job.id) == before
    assert await counts(db) == (1, 1)
    # The matching guard still works: the stale one really left the job untouched.
    assert (await store.cancel(guard, now, "ok", "bob")).state is JobState.CANCELLED


async def test_cancel_finishes_the_job_and_appends_an_event(store: JobStore) -> None:
    now = datetime.now(UTC)
    job = await submit_one(store, now, run_at=now + timedelta(hours=1))
    cancel_at = now + timedelta(seconds=2)

    cancelled = await store.cancel(
        Guard(TENANT, job.id, JobState.SCHEDULED, 0), cancel_at, "not needed", "bob"
    )

    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at == cancel_at
    assert cancelled.updated_at == cancel_at
    assert not cancelled.cancel_requested  # only a RUNNING job is asked to stop
    assert cancelled.event_seq == 2
    assert cancelled.payload == b"payload"
    stored, events = await store.get_with_events(TENANT, job.id)
    assert stored == cancelled
    assert [(e.seq, e.from_state, e.to_state) for e in events] == [
        (1, None, JobState.SCHEDULED),
        (2, JobState.SCHEDULED, JobState.CANCELLED),
    ]
    assert (events[1].attempt, events[1].reason, events[1].actor) == (0, "not needed", "bob")
    assert events[1].created_at == cancel_at


async def test_retry_from_cancelled_requeues_without_extra_attempts(store: JobStore) -> None:
    now = datetime.now(UTC)
    job = await submit_one(store, now, max_attempts=3)
    await store.cancel(Guard(TENANT, job.id, JobState.QUEUED, 0), now, "oops", "bob")
    retry_at = now + timedelta(minutes=1)

    retried = await store.retry(
        Guard(TENANT, job.id, JobState.CANCELLED, 0), retry_at, "again", "bob"
    )

    assert retried.state is JobState.QUEUED
    assert (retried.attempt, retried.max_attempts) == (0, 3)
    assert retried.finished_at is None
    assert retried.run_at == retry_at
    assert not retried.cancel_requested
    assert retried.event_seq == 3
    _, events = await store.get_with_events(TENANT, job.id)
    assert [(e.seq, e.from_state, e.to_state, e.reason) for e in events] == [
        (1, None, JobState.QUEUED, "submitted"),
        (2, JobState.QUEUED, JobState.CANCELLED, "oops"),
        (3, JobState.CANCELLED, JobState.QUEUED, "again"),
    ]


async def test_retry_from_dead_grants_one_more_attempt_and_resets_progress(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    job = await submit_one(store, now, max_attempts=3)
    await make_dead(db, job.id)
    dead = await store.get(TENANT, job.id)
    assert (dead.state, dead.attempt, dead.progress.percent) == (JobState.DEAD, 3, 40)
    retry_at = now + timedelta(minutes=1)

    with pytest.raises(ConcurrentModification):
        await store.retry(Guard(TENANT, job.id, JobState.DEAD, 2), retry_at, "stale", "bob")
    retried = await store.retry(Guard(TENANT, job.id, JobState.DEAD, 3), retry_at, "again", "bob")

    assert retried.state is JobState.QUEUED
    assert (retried.attempt, retried.max_attempts) == (3, 4)
    assert retried.finished_at is None
    assert retried.result is None
    assert retried.run_at == retry_at
    assert retried.progress.percent == 0
    assert (retried.progress.step, retried.progress.message) == ("", "")
    assert retried.progress.eta is None
    assert retried.progress.updated_at is None
    assert await scalar(db, "SELECT lease_expires_at FROM jobs WHERE id = :id", id=job.id) is None
    assert retried == await store.get(TENANT, job.id)
    _, events = await store.get_with_events(TENANT, job.id)
    assert [(e.seq, e.from_state, e.to_state, e.attempt) for e in events] == [
        (1, None, JobState.QUEUED, 0),
        (2, JobState.DEAD, JobState.QUEUED, 3),
    ]


async def test_retry_from_dead_keeps_max_attempts_when_attempts_remain(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    job = await submit_one(store, now, max_attempts=3)
    await make_dead(db, job.id)
    await execute(db, "UPDATE jobs SET attempt = 1 WHERE id = :id", id=job.id)  # non-retryable

    retried = await store.retry(Guard(TENANT, job.id, JobState.DEAD, 1), now, "again", "bob")

    assert (retried.state, retried.attempt, retried.max_attempts) == (JobState.QUEUED, 1, 3)


async def test_request_cancel_only_marks_the_guarded_running_attempt(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    job = await submit_one(store, now)

    with pytest.raises(ConcurrentModification):
        await store.request_cancel(Guard(TENANT, job.id, JobState.QUEUED, 0), now)
    assert not (await store.get(TENANT, job.id)).cancel_requested

    await make_running(db, job.id)
    before = await snapshot(db, job.id)
    with pytest.raises(ConcurrentModification):
        await store.request_cancel(Guard(TENANT, job.id, JobState.RUNNING, 2), now)
    with pytest.raises(ConcurrentModification):
        await store.request_cancel(Guard("other", job.id, JobState.RUNNING, 1), now)
    assert await snapshot(db, job.id) == before

    marked = await store.request_cancel(Guard(TENANT, job.id, JobState.RUNNING, 1), now)
    again = await store.request_cancel(
        Guard(TENANT, job.id, JobState.RUNNING, 1), now + timedelta(seconds=9)
    )

    assert marked.cancel_requested
    assert again.cancel_requested
    assert (marked.state, marked.attempt, marked.executor) == (JobState.RUNNING, 1, "x")
    assert marked.updated_at == now
    assert marked.finished_at is None
    # The first request's time stands; no transition, so no event.
    requested_at = await scalar(
        db, "SELECT cancel_requested_at FROM jobs WHERE id = :id", id=job.id
    )
    assert requested_at == now
    assert again.event_seq == 1
    assert await counts(db) == (1, 1)


async def test_concurrent_cancels_exactly_one_wins(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    job = await submit_one(store, now)
    guard = Guard(TENANT, job.id, JobState.QUEUED, 0)

    outcomes = await asyncio.gather(
        *(store.cancel(guard, now, f"cancel {i}", "bob") for i in range(5)),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if isinstance(o, JobRecord)]
    losers = [o for o in outcomes if isinstance(o, ConcurrentModification)]
    assert (len(winners), len(losers)) == (1, 4), outcomes
    _, events = await store.get_with_events(TENANT, job.id)
    assert [(e.seq, e.to_state) for e in events] == [
        (1, JobState.QUEUED),
        (2, JobState.CANCELLED),
    ]
    assert events[1].reason == f"cancel {outcomes.index(winners[0])}"


async def test_event_sequence_is_gapless_across_transitions(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    job = await submit_one(store, now)
    at = now
    for _ in range(3):
        at += timedelta(seconds=1)
        await store.cancel(Guard(TENANT, job.id, JobState.QUEUED, 0), at, "stop", "bob")
        with pytest.raises(ConcurrentModification):  # a loser does not consume a number
            await store.cancel(Guard(TENANT, job.id, JobState.QUEUED, 0), at, "late", "eve")
        at += timedelta(seconds=1)
        await store.retry(Guard(TENANT, job.id, JobState.CANCELLED, 0), at, "go", "bob")

    stored, events = await store.get_with_events(TENANT, job.id)
    assert [e.seq for e in events] == list(range(1, 8))
    assert stored.event_seq == 7
    for previous, current in itertools.pairwise(events):
        assert current.from_state is previous.to_state
    assert [e.created_at for e in events[1:]] == sorted(e.created_at for e in events[1:])
    assert await counts(db) == (1, 7)


# --- delete -----------------------------------------------------------------------------------


async def test_delete_removes_the_job_and_its_history(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    doomed = await submit_one(store, now)
    kept = await submit_one(store, now)
    await store.cancel(Guard(TENANT, doomed.id, JobState.QUEUED, 0), now, "x", "bob")
    assert await counts(db) == (2, 3)

    await store.delete(Guard(TENANT, doomed.id, JobState.CANCELLED, 0))

    with pytest.raises(JobNotFound):
        await store.get(TENANT, doomed.id)
    assert await counts(db) == (1, 1)
    assert await scalar(db, "SELECT count(*) FROM job_events WHERE job_id = :id", id=doomed.id) == 0
    assert (await store.get(TENANT, kept.id)).event_seq == 1


async def test_delete_refuses_a_running_job(store: JobStore, db: Database) -> None:
    job = await submit_one(store, datetime.now(UTC))
    await make_running(db, job.id)
    before = await snapshot(db, job.id)

    guard = Guard(TENANT, job.id, JobState.RUNNING, 1)
    # The store checks the state machine first...
    with pytest.raises(InvalidTransition):
        await store.delete(guard)
    # ...and even a guard that matches the row cannot delete it: the statement refuses too.
    with pytest.raises(ConcurrentModification):
        async with db.transaction() as conn:
            await delete_job(conn, guard)

    assert await snapshot(db, job.id) == before
    assert await counts(db) == (1, 1)


@pytest.mark.parametrize(
    "stale",
    [{"state": JobState.SCHEDULED}, {"attempt": 1}, {"tenant": "other"}],
    ids=["wrong-state", "wrong-attempt", "wrong-tenant"],
)
async def test_delete_with_stale_guard_changes_nothing(
    store: JobStore, db: Database, stale: dict[str, Any]
) -> None:
    job = await submit_one(store, datetime.now(UTC))
    before = await snapshot(db, job.id)
    guard = Guard(TENANT, job.id, JobState.QUEUED, 0)

    with pytest.raises(ConcurrentModification):
        await store.delete(dataclasses.replace(guard, **stale))

    assert await snapshot(db, job.id) == before
    await store.delete(guard)
    assert await counts(db) == (0, 0)


# --- guardrails enforced by PostgreSQL ----------------------------------------------------------

_VALID_ROW = {
    "id": "gen_random_uuid()",
    "tenant": "'acme'",
    "queue": "'default'",
    "type": "'t'",
    "priority": "50",
    "state": "'queued'",
    "attempt": "0",
    "max_attempts": "3",
    "run_at": "now()",
    "progress_percent": "0",
    "finished_at": "NULL",
}


def insert_row_sql(**overrides: str) -> str:
    row = _VALID_ROW | overrides
    return f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join(row.values())})"


async def test_the_reference_rows_are_accepted(db: Database) -> None:
    """The rejected rows below differ from these in one respect only."""
    await execute(db, insert_row_sql())
    await execute(db, insert_row_sql(state="'succeeded'", attempt="3", finished_at="now()"))
    await execute(db, insert_row_sql(priority="100", progress_percent="100", max_attempts="1"))
    await execute(db, insert_row_sql(priority="0", attempt="1", max_attempts="1"))
    assert await scalar(db, "SELECT count(*) FROM jobs") == 4


@pytest.mark.parametrize(
    ("overrides", "violated"),
    [
        ({"attempt": "-1"}, "ck_jobs_attempt_non_negative"),
        ({"max_attempts": "0"}, "ck_jobs_max_attempts_positive"),
        ({"priority": "101"}, "ck_jobs_priority_range"),
        ({"priority": "-1"}, "ck_jobs_priority_range"),
        ({"progress_percent": "101"}, "ck_jobs_progress_range"),
        ({"progress_percent": "-0.5"}, "ck_jobs_progress_range"),
        ({"attempt": "4", "max_attempts": "3"}, "ck_jobs_attempt_within_max"),
        ({"state": "'succeeded'"}, "ck_jobs_finished_iff_terminal"),
        ({"state": "'dead'"}, "ck_jobs_finished_iff_terminal"),
        ({"state": "'cancelled'"}, "ck_jobs_finished_iff_terminal"),
        ({"finished_at": "now()"}, "ck_jobs_finished_iff_terminal"),
        ({"tenant": "NULL"}, "tenant"),
        ({"max_attempts": "NULL"}, "max_attempts"),
    ],
    ids=[
        "attempt<0",
        "max_attempts=0",
        "priority=101",
        "priority=-1",
        "progress=101",
        "progress<0",
        "attempt>max",
        "succeeded-unfinished",
        "dead-unfinished",
        "cancelled-unfinished",
        "queued-finished",
        "tenant-null",
        "max_attempts-null",
    ],
)
async def test_database_rejects_invalid_jobs(
    db: Database, overrides: dict[str, str], violated: str
) -> None:
    with pytest.raises(IntegrityError, match=violated):
        await execute(db, insert_row_sql(**overrides))

    assert await counts(db) == (0, 0)


async def test_database_rejects_unknown_states(db: Database) -> None:
    with pytest.raises(DBAPIError, match="job_state"):
        await execute(db, insert_row_sql(state="'paused'"))

    assert await counts(db) == (0, 0)


async def test_database_rejects_invalid_updates(store: JobStore, db: Database) -> None:
    job = await submit_one(store, datetime.now(UTC), max_attempts=2)
    before = await snapshot(db, job.id)

    for assignment, violated in [
        ("state = 'dead'", "ck_jobs_finished_iff_terminal"),
        ("attempt = 3", "ck_jobs_attempt_within_max"),
        ("progress_percent = 100.5", "ck_jobs_progress_range"),
        ("event_seq = -1", "ck_jobs_event_seq_non_negative"),
    ]:
        with pytest.raises(IntegrityError, match=violated):
            await execute(db, f"UPDATE jobs SET {assignment} WHERE id = :id", id=job.id)

    assert await snapshot(db, job.id) == before


async def test_idempotency_key_is_unique_per_tenant_in_the_database(db: Database) -> None:
    await execute(db, insert_row_sql(idempotency_key="'k'"))
    await execute(db, insert_row_sql(tenant="'other'", idempotency_key="'k'"))
    # Jobs without a key never collide (NULLs are distinct).
    await execute(db, insert_row_sql())
    await execute(db, insert_row_sql())

    with pytest.raises(IntegrityError, match="uq_jobs_tenant_idempotency_key"):
        await execute(db, insert_row_sql(idempotency_key="'k'"))
    assert await scalar(db, "SELECT count(*) FROM jobs") == 4


@pytest.mark.parametrize(
    "assignment", ["reason = 'tampered'", "to_state = 'succeeded'", "seq = seq + 100"]
)
async def test_job_events_refuse_updates(store: JobStore, db: Database, assignment: str) -> None:
    job = await submit_one(store, datetime.now(UTC))
    before = await snapshot(db, job.id)

    with pytest.raises(IntegrityError, match="append-only"):
        await execute(db, f"UPDATE job_events SET {assignment} WHERE job_id = :id", id=job.id)

    assert await snapshot(db, job.id) == before


@pytest.mark.parametrize(
    "statement",
    ["DELETE FROM job_events WHERE job_id = :id", "TRUNCATE job_events"],
    ids=["delete", "truncate"],
)
async def test_job_events_refuse_removal_except_with_their_job(
    store: JobStore, db: Database, statement: str
) -> None:
    job = await submit_one(store, datetime.now(UTC))
    before = await snapshot(db, job.id)

    with pytest.raises(IntegrityError, match="append-only"):
        await execute(db, statement, id=job.id)
    assert await snapshot(db, job.id) == before

    # Deleting the job itself still takes its history along (the cascade is allowed).
    await execute(db, "DELETE FROM jobs WHERE id = :id", id=job.id)
    assert await counts(db) == (0, 0)


@pytest.mark.parametrize(
    ("seq", "job", "violated"),
    [
        (1, "existing", "uq_job_events_job_id_seq"),
        (0, "existing", "ck_job_events_seq_positive"),
        (2, "missing", "fk_job_events_job_id_jobs"),
    ],
    ids=["duplicate-seq", "seq-zero", "unknown-job"],
)
async def test_job_events_guardrails(
    store: JobStore, db: Database, seq: int, job: str, violated: str
) -> None:
    existing = await submit_one(store, datetime.now(UTC))
    job_id = existing.id if job == "existing" else str(uuid.uuid4())

    with pytest.raises(IntegrityError, match=violated):
        await execute(
            db,
            "INSERT INTO job_events (job_id, seq, to_state, attempt, actor) "
            "VALUES (:id, :seq, 'queued', 0, 'x')",
            id=job_id,
            seq=seq,
        )

    assert await counts(db) == (1, 1)


async def test_deleting_a_job_cascades_to_its_events(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    doomed = await submit_one(store, now)
    kept = await submit_one(store, now)
    await store.cancel(Guard(TENANT, doomed.id, JobState.QUEUED, 0), now, "x", "bob")

    await execute(db, "DELETE FROM jobs WHERE id = :id", id=doomed.id)

    assert await scalar(db, "SELECT count(*) FROM job_events WHERE job_id = :id", id=doomed.id) == 0
    assert await scalar(db, "SELECT count(*) FROM job_events WHERE job_id = :id", id=kept.id) == 1


# --- lists ------------------------------------------------------------------------------------


async def test_list_active_order_projection_filters_and_tenants(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    a = await submit_one(store, now, queue="q1", job_type="a")
    scheduled = await submit_one(
        store, now, queue="q2", job_type="b", run_at=now + timedelta(hours=1)
    )
    # One transaction: equal created_at, so the id breaks the tie.
    batch = [
        s.job
        for s in await store.submit(
            TENANT, [new_job(now, queue="q1", job_type="b", key=f"b{i}") for i in range(5)]
        )
    ]
    running = await submit_one(store, now, queue="q2", job_type="a")
    await make_running(db, running.id)
    cancelled = await submit_one(store, now, queue="q1", job_type="a")
    await store.cancel(Guard(TENANT, cancelled.id, JobState.QUEUED, 0), now, "x", "bob")
    await submit_one(store, now, tenant="other", queue="q1", job_type="a")
    expected = sorted([a, scheduled, *batch, running], key=by_created)

    async def active(**filters: Any) -> list[JobRecord]:
        args: dict[str, Any] = {
            "states": ACTIVE,
            "queue": None,
            "job_type": None,
            "after": None,
            "limit": 100,
        }
        return await store.list_active(TENANT, **(args | filters))

    everything = await active()
    assert ids(everything) == ids(expected)
    assert all(j.payload == b"" and j.result is None for j in everything)
    assert all(j.tenant == TENANT for j in everything)
    assert next(j for j in everything if j.id == running.id).state is JobState.RUNNING
    assert ids(await active(queue="q1")) == ids(j for j in expected if j.queue == "q1")
    assert ids(await active(job_type="a")) == [a.id, running.id]
    assert ids(await active(states=[JobState.SCHEDULED])) == [scheduled.id]
    assert ids(await active(states=[JobState.RUNNING, JobState.QUEUED], queue="q2")) == [running.id]
    assert ids(await active(queue="q1", job_type="b")) == ids(sorted(batch, key=by_created))
    # A terminal state asked of the active list still yields active jobs only.
    assert await active(states=[JobState.CANCELLED]) == []
    [others] = await store.list_active(
        "other", states=ACTIVE, queue=None, job_type=None, after=None, limit=100
    )
    assert others.tenant == "other"


async def test_list_active_keyset_pages_continue_after_the_last_row(store: JobStore) -> None:
    now = datetime.now(UTC)
    singles = [await submit_one(store, now, job_type=f"s{i}") for i in range(4)]
    batch = [
        s.job for s in await store.submit(TENANT, [new_job(now, job_type="b") for _ in range(7)])
    ]
    expected = sorted([*singles, *batch], key=by_created)

    async def fetch(after: Cursor | None) -> list[JobRecord]:
        return await store.list_active(
            TENANT, states=ACTIVE, queue=None, job_type=None, after=after, limit=3
        )

    pages = await all_pages(fetch, lambda j: j.created_at)

    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert [j.id for p in pages for j in p] == ids(expected)
    # Explicitly: a cursor at row 5 (inside the equal-created_at batch) starts at row 6.
    fifth = expected[4]
    assert ids(await fetch(Cursor(at=fifth.created_at, id=fifth.id))) == ids(expected[5:8])


async def test_list_history_order_projection_filters_and_pages(
    store: JobStore, db: Database
) -> None:
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    now = datetime.now(UTC)
    jobs = [
        await submit_one(store, now, queue="q1" if i % 2 else "q2", job_type=f"t{i % 3}")
        for i in range(6)
    ]
    finish_offsets = [1, 2, 2, 2, 3]  # seconds after t0; three jobs tie at t0+2s
    for job, offset in zip(jobs[:5], finish_offsets, strict=True):
        await store.cancel(
            Guard(TENANT, job.id, JobState.QUEUED, 0), t0 + timedelta(seconds=offset), "x", "bob"
        )
    succeeded = jobs[5]
    await execute(
        db,
        "UPDATE jobs SET state = 'succeeded', attempt = 1, started_at = :at, finished_at = :at, "
        "result = :result WHERE id = :id",
        id=succeeded.id,
        at=t0 + timedelta(seconds=4),
        result=b"output",
    )
    dead = await submit_one(store, now, queue="q1", job_type="t0")
    await make_dead(db, dead.id)
    await execute(db, "UPDATE jobs SET finished_at = :at WHERE id = :id", id=dead.id, at=t0)
    still_active = await submit_one(store, now)
    other = await submit_one(store, now, tenant="other")
    await store.cancel(Guard("other", other.id, JobState.QUEUED, 0), t0, "x", "bob")
    finished = [await store.get(TENANT, j.id) for j in [*jobs, dead]]
    assert (await store.get(TENANT, succeeded.id)).result == b"output"
    expected = sorted(finished, key=by_finished, reverse=True)

    async def history(**filters: Any) -> list[JobRecord]:
        args: dict[str, Any] = {
            "states": TERMINAL,
            "queue": None,
            "job_type": None,
            "finished_after": None,
            "finished_before": None,
            "after": None,
            "limit": 100,
        }
        return await store.list_history(TENANT, **(args | filters))

    everything = await history()
    assert ids(everything) == ids(expected)
    assert still_active.id not in ids(everything)
    assert other.id not in ids(everything)
    assert ids(everything)[0] == succeeded.id
    assert ids(everything)[-1] == dead.id
    assert all(j.payload == b"" and j.result is None for j in everything)
    assert ids(await history(states=[JobState.CANCELLED])) == ids(
        j for j in expected if j.state is JobState.CANCELLED
    )
    assert ids(await history(states=[JobState.DEAD])) == [dead.id]
    assert ids(await history(queue="q1")) == ids(j for j in expected if j.queue == "q1")
    assert ids(await history(job_type="t0")) == ids(j for j in expected if j.type == "t0")
    window = await history(
        finished_after=t0 + timedelta(seconds=2), finished_before=t0 + timedelta(seconds=4)
    )
    assert ids(window) == ids(
        j
        for j in expected
        if j.finished_at is not None
        and t0 + timedelta(seconds=2) <= j.finished_at < t0 + timedelta(seconds=4)
    )
    assert len(window) == 4

    async def fetch(after: Cursor | None) -> list[JobRecord]:
        return await history(after=after, limit=2)

    pages = await all_pages(fetch, lambda j: j.finished_at)
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert [j.id for p in pages for j in p] == ids(expected)


async def test_one_page_is_one_statement(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    submitted = await store.submit(TENANT, [new_job(now, job_type=f"t{i}") for i in range(30)])
    for s in submitted[:20]:
        await store.cancel(Guard(TENANT, s.job.id, JobState.QUEUED, 0), now, "x", "bob")

    with count_statements(db) as active_statements:
        active = await store.list_active(
            TENANT, states=ACTIVE, queue=None, job_type=None, after=None, limit=100
        )
    with count_statements(db) as history_statements:
        history = await store.list_history(
            TENANT,
            states=TERMINAL,
            queue=None,
            job_type=None,
            finished_after=None,
            finished_before=None,
            after=None,
            limit=100,
        )

    assert (len(active), len(history)) == (10, 20)
    assert len(active_statements) == 1, active_statements
    assert len(history_statements) == 1, history_statements
    assert "payload" not in active_statements[0]
    assert "payload" not in history_statements[0]


# --- the database boundary --------------------------------------------------------------------

CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/x"


async def run_in_transaction(db: Database, sql: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(text(sql))


async def test_unreachable_database_is_database_unavailable() -> None:
    db = Database.from_url(CLOSED_PORT_URL)
    try:
        with pytest.raises(DatabaseUnavailable):
            await run_in_transaction(db, "SELECT 1")
        with pytest.raises(DatabaseUnavailable):
            await db.ping()
        with pytest.raises(DatabaseUnavailable):
            await JobStore(db).get(TENANT, str(uuid.uuid4()))
        with pytest.raises(DatabaseUnavailable):
            await JobStore(db).submit(TENANT, [new_job(datetime.now(UTC))])
    finally:
        await db.dispose()


async def test_statement_errors_are_not_mistaken_for_unavailability(db: Database) -> None:
    await db.ping()
    with pytest.raises(IntegrityError):
        await run_in_transaction(db, insert_row_sql(priority="101"))
    with pytest.raises(DBAPIError) as raised:
        await run_in_transaction(db, "SELECT * FROM no_such_table")
    assert not isinstance(raised.value, DatabaseUnavailable)


async def test_transaction_rolls_back_when_the_block_raises(db: Database) -> None:
    async def insert_then_fail() -> None:
        async with db.transaction() as conn:
            await conn.execute(text(insert_row_sql()))
            raise ConcurrentModification("the caller lost a race")

    with pytest.raises(ConcurrentModification):
        await insert_then_fail()

    assert await counts(db) == (0, 0)


async def test_submitted_records_match_what_get_returns(store: JobStore) -> None:
    now = datetime.now(UTC)
    submitted: list[Submitted] = await store.submit(
        TENANT, [new_job(now, key="k", labels={"a": "1"}, timeout=timedelta(seconds=30))]
    )
    stored = await store.get(TENANT, submitted[0].job.id)

    # The insert returns projected columns only: everything but the payload matches.
    assert submitted[0].job.payload == b""
    assert submitted[0].job == dataclasses.replace(stored, payload=b"")


async def test_a_submitted_record_is_the_row_as_it_reads_back(
    store: JobStore, db: Database
) -> None:
    """store.submit builds a new job's record from what it sent and what the insert decided
    (the settings resolved from the job, its type and its queue): every field equals the row
    read back, for jobs that set everything, nothing, or leave settings to their type and
    queue."""
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "INSERT INTO queues (tenant, name, default_max_attempts, retry_multiplier,"
                " updated_at) VALUES (:t, 'slow', 7, 3.5, now())"
            ),
            {"t": TENANT},
        )
        await conn.execute(
            text(
                "INSERT INTO job_types (tenant, name, timeout, retry_jitter, updated_at)"
                " VALUES (:t, 'typed', interval '90 seconds', 0.25, now())"
            ),
            {"t": TENANT},
        )
    now = datetime.now(UTC)
    jobs = [
        new_job(now),
        new_job(now, queue="slow", job_type="typed", labels={"a": "1", "b": "two"}),
        new_job(
            now,
            queue="slow",
            key="k-1",
            priority=9,
            max_attempts=2,
            timeout=timedelta(seconds=5),
            run_at=now + timedelta(hours=1),
            payload=b"\x00\xff",
        ),
        dataclasses.replace(
            new_job(now, job_type="typed"), trace_context="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        ),
    ]
    submitted = await store.submit(TENANT, jobs)
    assert [s.created for s in submitted] == [True] * len(jobs)
    for s in submitted:
        stored = await store.get(TENANT, s.job.id)
        assert s.job == dataclasses.replace(stored, payload=b"", result=None)
