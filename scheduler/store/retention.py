"""The retention sweep's statement: delete finished jobs older than their queue's retention.

A job's history (job_events), log lines (job_logs) and dependency edges go with it (ON DELETE
CASCADE). A finished job that a job not yet finished still depends on is kept until that one
finishes, so GetJobStatus of a waiting job still lists every dependency.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# Every (tenant, queue) with finished jobs, by a loose scan of ix_jobs_retention (one probe per
# queue, not a read of every finished job); its retention (the queue's, else the default);
# then, per queue, its finished jobs past the cutoff, oldest first, read from the same index.
# Rows locked by someone else (a RetryJob, a DeleteJob) are skipped, not waited for.
_DELETE_EXPIRED = text("""
WITH RECURSIVE pairs AS (
    (SELECT tenant, queue FROM jobs WHERE finished_at IS NOT NULL ORDER BY tenant, queue LIMIT 1)
    UNION ALL
    SELECT next.tenant, next.queue
    FROM pairs p, LATERAL (
        SELECT tenant, queue FROM jobs
        WHERE finished_at IS NOT NULL AND (tenant, queue) > (p.tenant, p.queue)
        ORDER BY tenant, queue LIMIT 1
    ) AS next
), kept AS (
    SELECT p.tenant, p.queue, coalesce(q.retention, CAST(:default_retention AS interval)) AS keep
    FROM pairs p LEFT JOIN queues q ON q.tenant = p.tenant AND q.name = p.queue
), expired AS (
    SELECT j.id
    FROM kept k, LATERAL (
        SELECT id FROM jobs
        WHERE tenant = k.tenant AND queue = k.queue AND finished_at IS NOT NULL
          AND finished_at < CAST(:now AS timestamptz) - k.keep
        ORDER BY finished_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    ) AS j
    WHERE k.keep > interval '0'
    LIMIT :batch
)
DELETE FROM jobs
WHERE id IN (SELECT id FROM expired)
  AND NOT EXISTS (
    SELECT 1 FROM job_dependencies d JOIN jobs waiting ON waiting.id = d.job_id
    WHERE d.depends_on = jobs.id AND waiting.finished_at IS NULL)
RETURNING id
""")


async def delete_expired_jobs(
    conn: AsyncConnection, now: datetime, default_retention: timedelta, batch: int
) -> int:
    """Delete up to `batch` finished jobs older than their queue's retention (the queue's own,
    else `default_retention`; zero keeps forever); returns how many were deleted."""
    result = await conn.execute(
        _DELETE_EXPIRED,
        {"now": now, "default_retention": default_retention, "batch": batch},
    )
    return len(result.all())
