"""The statement behind the queue-depth gauge (scheduler/telemetry/queue_depth.py)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.store.schema import ACTIVE_SQL

# Active jobs only: through the partial index of active jobs (ix_jobs_active), so its cost
# follows the backlog, not the finished jobs that retention keeps for days. Every tenant
# together: the gauge is per queue name.
_ACTIVE_BY_QUEUE_STATE = text(f"""
SELECT queue, state::text AS state, count(*) AS jobs
FROM jobs WHERE {ACTIVE_SQL}
GROUP BY queue, state
""")


async def count_active_jobs(conn: AsyncConnection) -> list[tuple[str, str, int]]:
    """(queue, state, jobs) of every queue and active state that has jobs."""
    rows = (await conn.execute(_ACTIVE_BY_QUEUE_STATE)).all()
    return [(str(r.queue), str(r.state), int(r.jobs)) for r in rows]
