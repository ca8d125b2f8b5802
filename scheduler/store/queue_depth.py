"""The statements behind the queue-depth gauges (scheduler/telemetry/queue_depth.py): the
active jobs by tenant, queue, state and type, with the due time of the oldest QUEUED one; and,
for their waiting reasons, every queue's settings and the executors of the live replicas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.queues import QueueSettings
from scheduler.domain.waiting import ExecutorView
from scheduler.store.queues import all_queue_settings, live_executors
from scheduler.store.schema import ACTIVE_SQL

# Active jobs only: through the partial index of active jobs (ix_jobs_active), so its cost
# follows the backlog, not the finished jobs that retention keeps for days. Every tenant
# together; the gauges are per queue name.
_ACTIVE_JOBS = text(f"""
SELECT tenant, queue, state::text AS state, type, count(*) AS jobs,
       min(run_at) FILTER (WHERE state = 'queued') AS oldest_due
FROM jobs WHERE {ACTIVE_SQL}
GROUP BY tenant, queue, state, type
""")


@dataclass(frozen=True, slots=True)
class ActiveJobs:
    """One group of active jobs; `oldest_due` only for QUEUED ones (None otherwise)."""

    tenant: str
    queue: str
    state: str
    type: str
    jobs: int
    oldest_due: datetime | None


@dataclass(frozen=True, slots=True)
class QueueDepthFacts:
    groups: list[ActiveJobs]
    settings: dict[tuple[str, str], QueueSettings]  # (tenant, queue) -> its settings, if stored
    executors: list[ExecutorView]


async def count_active_jobs(conn: AsyncConnection) -> list[ActiveJobs]:
    """The active jobs by tenant, queue, state and type."""
    rows = (await conn.execute(_ACTIVE_JOBS)).all()
    return [
        ActiveJobs(
            str(r.tenant), str(r.queue), str(r.state), str(r.type), int(r.jobs), r.oldest_due
        )
        for r in rows
    ]


async def queue_depth_facts(conn: AsyncConnection, live_since: datetime) -> QueueDepthFacts:
    """Everything the gauges need, in one transaction (a consistent snapshot)."""
    groups = await count_active_jobs(conn)
    settings = await all_queue_settings(conn)
    executors = await live_executors(conn, live_since)
    return QueueDepthFacts(groups, settings, executors)
