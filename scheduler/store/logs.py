"""Statements on job_logs, one named function each, and the JobLogStore facade that reads them.

Lines are written set-based (many lines of many attempts in one statement) and never updated: a
line number already stored keeps its first text, so an executor may send a line again. Reads are
keyset-paginated in (attempt, line_number) order, which is the table's primary key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.errors import JobNotFound
from scheduler.domain.jobs import JobEventRecord, JobRecord
from scheduler.domain.log_lines import LineCursor, LogLine
from scheduler.store.database import Database
from scheduler.store.jobs import select_events, select_job

_INSERT_LINES = text("""
INSERT INTO job_logs (job_id, attempt, line_number, line, created_at)
SELECT t.job_id, t.attempt, t.line_number, t.line, t.created_at
FROM unnest(
    CAST(:job_ids AS uuid[]), CAST(:attempts AS integer[]), CAST(:line_numbers AS integer[]),
    CAST(:lines AS text[]), CAST(:created AS timestamptz[])
) WITH ORDINALITY AS t(job_id, attempt, line_number, line, created_at, position)
-- Lines of a job deleted since they were reported are dropped rather than failing the batch.
JOIN jobs ON jobs.id = t.job_id
-- A fixed lock order across batches; within a batch the first text of a number wins.
ORDER BY t.job_id, t.attempt, t.line_number, t.position
ON CONFLICT (job_id, attempt, line_number) DO NOTHING
""")


async def insert_log_lines(conn: AsyncConnection, lines: Sequence[LogLine]) -> int:
    """Store many lines of many attempts in one statement; a (job, attempt, line number) already
    stored (or earlier in `lines`) is left as it is. Returns how many lines were new."""
    if not lines:
        return 0
    result = await conn.execute(
        _INSERT_LINES,
        {
            "job_ids": [line.job_id for line in lines],
            "attempts": [line.attempt for line in lines],
            "line_numbers": [line.line_number for line in lines],
            "lines": [line.line for line in lines],
            "created": [line.created_at for line in lines],
        },
    )
    return int(getattr(result, "rowcount", 0))


def _line_filters(attempt: int | None, after: LineCursor | None) -> tuple[str, dict[str, Any]]:
    where, params = "", {}
    if attempt is not None:
        where += " AND attempt = :attempt"
        params["attempt"] = attempt
    if after is not None:
        where += " AND (attempt, line_number) > (:after_attempt, :after_line)"
        params |= {"after_attempt": after.attempt, "after_line": after.line_number}
    return where, params


def _to_line(row: Row[Any]) -> LogLine:
    m = row._mapping
    return LogLine(
        job_id=str(m["job_id"]),
        attempt=m["attempt"],
        line_number=m["line_number"],
        line=m["line"],
        created_at=m["created_at"],
    )


_LINE_COLUMNS = "job_id, attempt, line_number, line, created_at"

# The job of the tenant, joined to one page of its lines: no row at all means no such job, one
# row of NULLs means no lines (yet).
_SELECT_PAGE = """
SELECT l.job_id, l.attempt, l.line_number, l.line, l.created_at
FROM jobs LEFT JOIN LATERAL (
    SELECT {columns} FROM job_logs
    WHERE job_logs.job_id = jobs.id{filters}
    ORDER BY attempt, line_number
    LIMIT :limit
) AS l ON true
WHERE jobs.tenant = :tenant AND jobs.id = :id
ORDER BY l.attempt, l.line_number
"""


async def select_log_page(
    conn: AsyncConnection,
    tenant: str,
    job_id: str,
    *,
    attempt: int | None,
    after: LineCursor | None,
    limit: int,
) -> list[LogLine] | None:
    """One page of a job's lines in (attempt, line_number) order after the cursor, only of
    `attempt` if given; None when the tenant has no such job."""
    filters, params = _line_filters(attempt, after)
    sql = _SELECT_PAGE.format(columns=_LINE_COLUMNS, filters=filters)
    rows = (
        await conn.execute(text(sql), {"tenant": tenant, "id": job_id, "limit": limit, **params})
    ).all()
    if not rows:
        return None
    return [_to_line(r) for r in rows if r._mapping["line_number"] is not None]


async def select_log_lines(
    conn: AsyncConnection, job_id: str, *, after: LineCursor | None, limit: int
) -> list[LogLine]:
    """A job's lines in (attempt, line_number) order after the cursor (the caller checked the
    job's tenant)."""
    filters, params = _line_filters(None, after)
    sql = (
        f"SELECT {_LINE_COLUMNS} FROM job_logs WHERE job_id = :id{filters} "
        "ORDER BY attempt, line_number LIMIT :limit"
    )
    rows = await conn.execute(text(sql), {"id": job_id, "limit": limit, **params})
    return [_to_line(r) for r in rows]


class JobLogStore:
    """Reads of job logs. Raises domain errors only."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_lines(
        self,
        tenant: str,
        job_id: str,
        *,
        attempt: int | None = None,
        after: LineCursor | None = None,
        limit: int,
    ) -> list[LogLine]:
        async with self.db.read() as conn:
            page = await select_log_page(
                conn, tenant, job_id, attempt=attempt, after=after, limit=limit
            )
        if page is None:
            raise JobNotFound(job_id)
        return page

    async def get_with_events_and_lines(
        self,
        tenant: str,
        job_id: str,
        after_seq: int,
        after_line: LineCursor | None,
        limit: int,
    ) -> tuple[JobRecord, list[JobEventRecord], list[LogLine]]:
        """The job, its events with seq > after_seq and up to `limit` of its lines after
        `after_line` (None: from the start of the job's current attempt), in one snapshot, so
        that a line and the outcome committed with it are seen together."""
        async with self.db.transaction() as conn:
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            job = await select_job(conn, tenant, job_id)
            if job is None:
                raise JobNotFound(job_id)
            events = await select_events(conn, job_id, after_seq)
            if after_line is None:
                after_line = LineCursor(job.attempt, 0)
            lines = await select_log_lines(conn, job_id, after=after_line, limit=limit)
            return job, events, lines
