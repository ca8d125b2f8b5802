"""Log lines in the store: the set-based insert (re-sent lines ignored), keyset pages in
(attempt, line_number) order, the tenant check, and the table's guardrails."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from scheduler.domain.errors import JobNotFound
from scheduler.domain.jobs import JobRecord
from scheduler.domain.log_lines import LineCursor, LogLine
from scheduler.domain.validation import JobSpecInput, validate_batch
from scheduler.store.attempts import claim_jobs
from scheduler.store.database import Database
from scheduler.store.jobs import Guard, JobStore
from scheduler.store.logs import (
    JobLogStore,
    insert_log_lines,
    select_log_lines,
    select_log_page,
)

TENANT = "default"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def submit(store: JobStore, count: int = 1) -> list[JobRecord]:
    specs = [JobSpecInput(type="work") for _ in range(count)]
    return [s.job for s in await store.submit(TENANT, validate_batch(specs, NOW))]


def lines(job_id: str, attempt: int, numbers: range, text_: str = "line") -> list[LogLine]:
    return [
        LogLine(job_id, attempt, n, f"{text_} {attempt}.{n}", NOW + timedelta(milliseconds=n))
        for n in numbers
    ]


async def insert(db: Database, batch: list[LogLine]) -> int:
    async with db.transaction() as conn:
        return await insert_log_lines(conn, batch)


async def stored(db: Database, job_id: str) -> list[tuple[int, int, str]]:
    async with db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT attempt, line_number, line FROM job_logs WHERE job_id = :id "
                "ORDER BY attempt, line_number"
            ),
            {"id": job_id},
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_one_statement_stores_lines_of_many_attempts_of_many_jobs(
    store: JobStore, db: Database
) -> None:
    first, second = await submit(store, 2)
    batch = lines(second.id, 1, range(1, 4)) + lines(first.id, 2, range(5, 7))
    batch += lines(first.id, 1, range(1, 3))

    assert await insert(db, batch) == 7

    assert await stored(db, first.id) == [
        (1, 1, "line 1.1"),
        (1, 2, "line 1.2"),
        (2, 5, "line 2.5"),
        (2, 6, "line 2.6"),
    ]
    assert [n for _, n, _ in await stored(db, second.id)] == [1, 2, 3]
    async with db.read() as conn:
        created = await conn.scalar(
            text("SELECT created_at FROM job_logs WHERE job_id = :id AND line_number = 2"),
            {"id": second.id},
        )
    assert created == NOW + timedelta(milliseconds=2)


async def test_re_sent_line_numbers_keep_their_first_text(store: JobStore, db: Database) -> None:
    [job] = await submit(store)
    assert await insert(db, lines(job.id, 1, range(1, 4), "first")) == 3

    # Lines 2 and 3 again with other text, and a duplicate inside the same batch.
    again = lines(job.id, 1, range(2, 6), "again") + lines(job.id, 1, range(5, 6), "dup")
    assert await insert(db, again) == 2

    assert await stored(db, job.id) == [
        (1, 1, "first 1.1"),
        (1, 2, "first 1.2"),
        (1, 3, "first 1.3"),
        (1, 4, "again 1.4"),
        (1, 5, "again 1.5"),
    ]


async def test_lines_of_a_job_that_no_longer_exists_are_dropped_not_failing_the_batch(
    store: JobStore, db: Database
) -> None:
    [job] = await submit(store)
    missing = str(uuid.uuid4())
    assert await insert(db, lines(missing, 1, range(1, 3)) + lines(job.id, 1, range(1, 3))) == 2
    assert len(await stored(db, job.id)) == 2
    assert await stored(db, missing) == []
    assert await insert(db, []) == 0


async def test_pages_follow_attempt_then_line_number_with_an_optional_attempt_filter(
    store: JobStore, db: Database
) -> None:
    [job] = await submit(store)
    await insert(db, lines(job.id, 2, range(1, 4)) + lines(job.id, 1, range(1, 5)))
    logs = JobLogStore(db)

    walked: list[tuple[int, int]] = []
    cursor: LineCursor | None = None
    while True:
        page = await logs.list_lines(TENANT, job.id, after=cursor, limit=3)
        walked += [(line.attempt, line.line_number) for line in page]
        if len(page) < 3:
            break
        cursor = LineCursor(page[-1].attempt, page[-1].line_number)
    assert walked == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3)]

    only_two = await logs.list_lines(TENANT, job.id, attempt=2, limit=100)
    assert [(x.attempt, x.line_number, x.line) for x in only_two] == [
        (2, 1, "line 2.1"),
        (2, 2, "line 2.2"),
        (2, 3, "line 2.3"),
    ]
    after = await logs.list_lines(TENANT, job.id, attempt=1, after=LineCursor(1, 2), limit=100)
    assert [x.line_number for x in after] == [3, 4]
    assert await logs.list_lines(TENANT, job.id, attempt=3, limit=100) == []


async def test_a_job_of_another_tenant_or_none_at_all_is_not_found(
    store: JobStore, db: Database
) -> None:
    [job] = await submit(store)
    async with db.read() as conn:
        assert await select_log_page(conn, TENANT, job.id, attempt=None, after=None, limit=10) == []
        assert (
            await select_log_page(conn, "other", job.id, attempt=None, after=None, limit=10) is None
        )
    logs = JobLogStore(db)
    with pytest.raises(JobNotFound):
        await logs.list_lines("other", job.id, limit=10)
    with pytest.raises(JobNotFound):
        await logs.list_lines(TENANT, str(uuid.uuid4()), limit=10)


async def test_the_watch_read_starts_at_the_current_attempt_in_one_snapshot(
    store: JobStore, db: Database
) -> None:
    [job] = await submit(store)
    async with db.transaction() as conn:
        [claimed] = await claim_jobs(
            conn,
            executor="ex-1",
            job_types=["work"],
            queues=[],
            limit=1,
            lease=timedelta(seconds=30),
            now=datetime.now(UTC),
        )
    assert claimed.attempt == 1
    # A line of an earlier attempt cannot exist here; lines of attempt 1 and (later) 2 can.
    await insert(db, lines(job.id, 1, range(1, 4)))
    logs = JobLogStore(db)

    read, events, page = await logs.get_with_events_and_lines(TENANT, job.id, 1, None, 2)
    assert read.attempt == 1
    assert [e.seq for e in events] == [2]
    assert [(x.attempt, x.line_number) for x in page] == [(1, 1), (1, 2)]

    _, events, page = await logs.get_with_events_and_lines(
        TENANT, job.id, read.event_seq, LineCursor(1, 2), 100
    )
    assert events == []
    assert [(x.attempt, x.line_number) for x in page] == [(1, 3)]

    async with db.read() as conn:
        assert await select_log_lines(conn, job.id, after=LineCursor(2, 0), limit=10) == []
    with pytest.raises(JobNotFound):
        await logs.get_with_events_and_lines("other", job.id, 0, None, 10)


async def test_lines_go_with_their_job_and_the_table_refuses_numbers_below_one(
    store: JobStore, db: Database
) -> None:
    [job] = await submit(store)
    await insert(db, lines(job.id, 1, range(1, 3)))
    await store.delete(Guard(TENANT, job.id, job.state, job.attempt))
    assert await stored(db, job.id) == []

    [other] = await submit(store)
    for attempt, number in ((0, 1), (1, 0)):
        with pytest.raises(IntegrityError, match="ck_job_logs_"):
            await insert(db, [LogLine(other.id, attempt, number, "x", NOW)])
