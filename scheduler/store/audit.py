"""Statements on the audit log, one named function each, and the AuditStore facade.

Rows are only ever inserted (a trigger of migration 0015 refuses UPDATE, TRUNCATE and DELETE),
except by the retention sweep, which names its cutoff in the transaction-local setting
`jobsched.audit_cutoff` and deletes only rows older than it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.audit import AuditEvent, AuditFilters
from scheduler.domain.pagination import Cursor
from scheduler.store.database import Database

_COLUMNS = (
    "id, occurred_at, principal, principal_name, tenant, action, target, code, reason, peer,"
    " request_id"
)

# One statement for a whole batch (the writer group-commits what arrived meanwhile).
_INSERT = text(f"""
INSERT INTO audit_events ({_COLUMNS})
SELECT * FROM unnest(
    CAST(:id AS uuid[]), CAST(:occurred_at AS timestamptz[]), CAST(:principal AS text[]),
    CAST(:principal_name AS text[]), CAST(:tenant AS text[]), CAST(:action AS text[]),
    CAST(:target AS text[]), CAST(:code AS text[]), CAST(:reason AS text[]),
    CAST(:peer AS text[]), CAST(:request_id AS text[]))
""")


async def insert_audit_events(conn: AsyncConnection, events: Sequence[AuditEvent]) -> None:
    columns = [c.strip() for c in _COLUMNS.split(",")]
    await conn.execute(_INSERT, {c: [getattr(e, c) for e in events] for c in columns})


def _event(row: Row[Any]) -> AuditEvent:
    m = row._mapping
    return AuditEvent(
        id=str(m["id"]),
        occurred_at=m["occurred_at"],
        principal=m["principal"],
        principal_name=m["principal_name"],
        tenant=m["tenant"],
        action=m["action"],
        target=m["target"],
        code=m["code"],
        reason=m["reason"],
        peer=m["peer"],
        request_id=m["request_id"],
    )


# Newest first; every filter optional (an empty string or NULL matches everything).
_PAGE = text(f"""
SELECT {_COLUMNS} FROM audit_events
WHERE (CAST(:tenants AS text[]) IS NULL OR tenant = ANY(CAST(:tenants AS text[])))
  AND (:principal = '' OR principal = :principal)
  AND (:action = '' OR action = :action)
  AND (:target = '' OR target = :target)
  AND (CAST(:after AS timestamptz) IS NULL OR occurred_at >= CAST(:after AS timestamptz))
  AND (CAST(:until AS timestamptz) IS NULL OR occurred_at < CAST(:until AS timestamptz))
  AND (CAST(:before_at AS timestamptz) IS NULL
       OR (occurred_at, id) < (CAST(:before_at AS timestamptz), CAST(:before_id AS uuid)))
ORDER BY occurred_at DESC, id DESC
LIMIT :limit
""")


async def select_audit_page(
    conn: AsyncConnection, filters: AuditFilters, before: Cursor | None, limit: int
) -> list[AuditEvent]:
    rows = await conn.execute(
        _PAGE,
        {
            "tenants": None if filters.tenants is None else list(filters.tenants),
            "principal": filters.principal,
            "action": filters.action,
            "target": filters.target,
            "after": filters.after,
            "until": filters.before,
            "before_at": before.at if before else None,
            "before_id": before.id if before else None,
            "limit": limit,
        },
    )
    return [_event(r) for r in rows]


# The append-only trigger lets a DELETE through only for rows older than this setting, set for
# the sweep's own transaction alone (`set_config(..., true)`).
_ALLOW_SWEEP = text("SELECT set_config('jobsched.audit_cutoff', CAST(:cutoff AS text), true)")
_DELETE_EXPIRED = text("""
DELETE FROM audit_events
WHERE id IN (
    SELECT id FROM audit_events WHERE occurred_at < :cutoff
    ORDER BY occurred_at, id LIMIT :batch FOR UPDATE SKIP LOCKED)
RETURNING id
""")


async def delete_expired_audit_events(
    conn: AsyncConnection, now: datetime, retention: timedelta, batch: int
) -> int:
    """Delete up to `batch` audit rows older than `retention` (zero: none); how many went."""
    if retention <= timedelta(0):
        return 0
    cutoff = now - retention
    await conn.execute(_ALLOW_SWEEP, {"cutoff": cutoff.isoformat()})
    result = await conn.execute(_DELETE_EXPIRED, {"cutoff": cutoff, "batch": batch})
    return len(result.all())


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, events: Sequence[AuditEvent]) -> None:
        """One statement in autocommit: durable when it returns."""
        async with self.db.read() as conn:
            await insert_audit_events(conn, events)

    async def page(
        self, filters: AuditFilters, before: Cursor | None, limit: int
    ) -> list[AuditEvent]:
        async with self.db.read() as conn:
            return await select_audit_page(conn, filters, before, limit)
