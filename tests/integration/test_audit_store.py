"""The audit log's table on real PostgreSQL: append-only (the trigger refuses UPDATE, DELETE
and TRUNCATE; only the retention sweep's DELETE of rows past its cutoff goes through), the
retention sweep with an injected clock, keyset pages with filters, and the writer's group
commit."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from scheduler.auth.audit_writer import AuditWriter
from scheduler.domain.audit import AuditEvent, AuditFilters
from scheduler.domain.pagination import Cursor
from scheduler.maintenance.retention import RetentionSweeper
from scheduler.store.audit import AuditStore
from scheduler.store.database import Database
from tests.helpers import utc
from tests.integration.test_retention import FakeLeader

NOW = utc(2026, 6, 1, 12)
DAY = timedelta(days=1)


def event(at: object = NOW, **fields: str) -> AuditEvent:
    values = {
        "principal": "api_key:7d3a1c7e-0000-4000-8000-000000000001",
        "principal_name": "ops",
        "tenant": "acme",
        "action": "CancelJob",
        "target": "7d3a1c7e-0000-4000-8000-00000000000a",
        "code": "OK",
        "reason": "",
        "peer": "ipv4:127.0.0.1:5000",
        "request_id": "0123456789abcdef",
        **fields,
    }
    return AuditEvent(occurred_at=at, **values)  # type: ignore[arg-type]


async def count(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar_one())


@pytest.fixture
async def leadership(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "INSERT INTO leadership (id, epoch, leader, since, renewed_at, backend_pid) "
                "VALUES (1, 1, 'replica-a', now(), now(), 0)"
            )
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET code = 'NOT_FOUND'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        # The sweep's setting admits only rows older than its cutoff.
        "SELECT set_config('jobsched.audit_cutoff', '2026-01-01T00:00:00+00:00', true);"
        " DELETE FROM audit_events",
    ],
)
async def test_the_audit_log_is_append_only(db: Database, statement: str) -> None:
    await AuditStore(db).insert([event()])

    async def run() -> None:
        async with db.transaction() as conn:
            for part in statement.split(";"):
                await conn.execute(text(part))

    with pytest.raises(DBAPIError, match="append-only"):
        await run()
    assert await count(db) == 1


@pytest.mark.usefixtures("leadership")
async def test_the_retention_sweep_deletes_events_past_the_audit_retention(db: Database) -> None:
    store = AuditStore(db)
    old = [event(NOW - 91 * DAY, target=f"old-{i}") for i in range(5)]
    kept = [event(NOW - 89 * DAY, target="recent"), event(NOW, target="now")]
    await store.insert([*old, *kept])
    sweeper = RetentionSweeper(db, FakeLeader(), lambda: NOW, batch=2)
    await sweeper.sweep()
    assert sweeper.audit_deleted_total == 5  # in batches of 2: 2 + 2 + 1
    rows = await store.page(AuditFilters(), None, 100)
    assert [e.target for e in rows] == ["now", "recent"]

    forever = RetentionSweeper(db, FakeLeader(), lambda: NOW + 1000 * DAY, audit_retention=DAY * 0)
    await forever.sweep()
    assert forever.audit_deleted_total == 0
    assert await count(db) == 2
    follower = RetentionSweeper(db, FakeLeader(is_leader=False), lambda: NOW + 1000 * DAY)
    await follower.sweep()
    assert await count(db) == 2


async def test_pages_are_newest_first_and_filtered(db: Database) -> None:
    store = AuditStore(db)
    events = [
        event(NOW + i * timedelta(seconds=1), action="PauseQueue" if i % 2 else "ResumeQueue")
        for i in range(7)
    ]
    other = event(NOW, tenant="globex", principal="anonymous", target="q")
    await store.insert([*events, other])
    first = await store.page(AuditFilters(tenants=("acme",)), None, 4)
    assert [e.id for e in first] == [e.id for e in reversed(events)][:4]
    last = first[-1]
    rest = await store.page(AuditFilters(tenants=("acme",)), Cursor(last.occurred_at, last.id), 4)
    assert [e.id for e in first + rest] == [e.id for e in reversed(events)]
    assert len(await store.page(AuditFilters(action="PauseQueue"), None, 100)) == 3
    assert [e.id for e in await store.page(AuditFilters(principal="anonymous"), None, 9)] == [
        other.id
    ]
    assert [e.id for e in await store.page(AuditFilters(target="q"), None, 9)] == [other.id]
    window = AuditFilters(after=NOW + timedelta(seconds=2), before=NOW + timedelta(seconds=4))
    assert [e.id for e in await store.page(window, None, 9)] == [events[3].id, events[2].id]
    assert await store.page(AuditFilters(tenants=("initech",)), None, 9) == []


async def test_the_writer_group_commits_what_arrives_while_it_writes(db: Database) -> None:
    writer = AuditWriter(AuditStore(db), max_batch=30)
    await writer.start()
    try:
        await asyncio.gather(*(writer.record(event(target=str(i))) for i in range(100)))
    finally:
        await writer.stop()
    assert await count(db) == 100
    assert writer.statements == 4  # 30 + 30 + 30 + 10: every caller was waiting together
    await writer.record(event(target="after stop"))  # written at once
    assert await count(db) == 101


async def test_a_failed_write_fails_every_waiting_caller(db: Database) -> None:
    writer = AuditWriter(AuditStore(db))
    await writer.start()
    try:
        results = await asyncio.gather(
            writer.record(event(target="fine")),
            writer.record(event(code="lower case is refused by the CHECK")),
            return_exceptions=True,
        )
    finally:
        await writer.stop()
    assert all(isinstance(r, Exception) for r in results)  # one statement: both or neither
    assert await count(db) == 0
