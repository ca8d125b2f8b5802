"""Statements of the leader-only duties' fencing and of the replicas' presence.

check_epoch opens every leader-only transaction: it reads the epoch FOR SHARE and refuses to go
on unless it is the caller's, so a deposed leader's writes are refused even before it notices
(see scheduler/leader.py). The share lock also makes a new leader's epoch bump wait until such a
transaction of the old epoch has ended.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.errors import LeadershipLost
from scheduler.store.database import Database
from scheduler.store.schema import TIMEOUT_DEADLINE_SQL

# One statement: the epoch, share-locked, and (set_config(..., true) is SET LOCAL) the idle limit
# of this transaction. A leader frozen mid-transaction (SIGSTOP, a pause) must not hold the share
# lock, and so block its successor's epoch bump, for longer than this: the server ends the
# session. The limit applies from the statement on, so before the transaction can idle holding
# the lock. Without a leadership row nothing is locked and the check fails anyway.
_CHECK_EPOCH = text(
    "SELECT epoch, set_config('idle_in_transaction_session_timeout', '2000', true) "
    "FROM leadership WHERE id = 1 FOR SHARE"
)


async def check_epoch(conn: AsyncConnection, epoch: int | None) -> None:
    """Raise LeadershipLost unless `epoch` is the current leader's (call first in the
    transaction; the row stays share-locked until it ends)."""
    row = (await conn.execute(_CHECK_EPOCH)).first()
    current = None if row is None else row[0]
    if epoch is None or current != epoch:
        raise LeadershipLost(f"epoch {epoch} is over (the current epoch is {current})")


# The leader's rescue loop sleeps until the earliest of these (scheduler/maintenance/rescue.py):
# a read, outside any transaction and without the epoch check (it writes nothing). Each minimum
# is served by a partial index on the running jobs (ix_jobs_lease_expiry; ix_jobs_timeout_deadline,
# whose expression TIMEOUT_DEADLINE_SQL is: the deadline in UTC, before the grace).
_RESCUE_DEADLINES = text(f"""
SELECT (SELECT min(lease_expires_at) FROM jobs WHERE state = 'running'),
       (SELECT min({TIMEOUT_DEADLINE_SQL}) FROM jobs
        WHERE state = 'running' AND timeout IS NOT NULL)
""")


@dataclass(frozen=True, slots=True)
class RescueDeadlines:
    lease_expires_at: datetime | None  # the earliest lease of a RUNNING job
    timeout_at: datetime | None  # the earliest started_at + timeout (no grace) of one


async def rescue_deadlines(conn: AsyncConnection) -> RescueDeadlines:
    row = (await conn.execute(_RESCUE_DEADLINES)).one()
    return RescueDeadlines(row[0], row[1])


@dataclass(frozen=True, slots=True)
class Leadership:
    epoch: int
    leader: str
    since: datetime


async def current_leadership(conn: AsyncConnection) -> Leadership | None:
    row = (await conn.execute(text("SELECT epoch, leader, since FROM leadership"))).first()
    return None if row is None else Leadership(int(row[0]), str(row[1]), row[2])


@dataclass(frozen=True, slots=True)
class ExecutorPresence:
    name: str
    capacity: int
    running: int
    job_types: tuple[str, ...]
    queues: tuple[str, ...]
    draining: bool = False  # shutting down: takes no new work


@dataclass(frozen=True, slots=True)
class ReplicaPresence:
    id: str
    address: str
    started_at: datetime
    last_seen_at: datetime
    executors: tuple[ExecutorPresence, ...]


_UPSERT_REPLICA = text("""
WITH upserted AS (
    INSERT INTO scheduler_replicas (id, address, started_at, last_seen_at, executors)
    VALUES (:id, :address, :started_at, :now, CAST(:executors AS jsonb))
    ON CONFLICT (id) DO UPDATE
    SET address = EXCLUDED.address, last_seen_at = EXCLUDED.last_seen_at,
        executors = EXCLUDED.executors
)
SELECT count(*) FROM scheduler_replicas WHERE id <> :id AND last_seen_at >= :live_since
""")


def _executor_json(executor: ExecutorPresence) -> dict[str, Any]:
    return {
        "name": executor.name,
        "capacity": executor.capacity,
        "running": executor.running,
        "job_types": list(executor.job_types),
        "queues": list(executor.queues),
        "draining": executor.draining,
    }


async def upsert_replica(
    conn: AsyncConnection,
    replica_id: str,
    address: str,
    started_at: datetime,
    now: datetime,
    executors: Sequence[ExecutorPresence],
    live_since: datetime,
) -> int:
    """Record this replica; returns how many other replicas were seen since `live_since`."""
    result = await conn.execute(
        _UPSERT_REPLICA,
        {
            "id": replica_id,
            "address": address,
            "started_at": started_at,
            "now": now,
            "executors": json.dumps([_executor_json(e) for e in executors]),
            "live_since": live_since,
        },
    )
    return int(result.scalar_one())


async def delete_replica(conn: AsyncConnection, replica_id: str) -> None:
    await conn.execute(text("DELETE FROM scheduler_replicas WHERE id = :id"), {"id": replica_id})


async def list_replicas(conn: AsyncConnection, seen_since: datetime) -> list[ReplicaPresence]:
    """Replicas seen at or after `seen_since`, oldest first."""
    rows = await conn.execute(
        text(
            "SELECT id, address, started_at, last_seen_at, executors FROM scheduler_replicas "
            "WHERE last_seen_at >= :since ORDER BY started_at, id"
        ),
        {"since": seen_since},
    )
    replicas = []
    for row in rows:
        executors = row[4] if not isinstance(row[4], str) else json.loads(row[4])
        replicas.append(
            ReplicaPresence(
                id=row[0],
                address=row[1],
                started_at=row[2],
                last_seen_at=row[3],
                executors=tuple(
                    ExecutorPresence(
                        name=e["name"],
                        capacity=int(e["capacity"]),
                        running=int(e["running"]),
                        job_types=tuple(e["job_types"]),
                        queues=tuple(e["queues"]),
                        draining=bool(e.get("draining", False)),
                    )
                    for e in executors
                ),
            )
        )
    return replicas


class ClusterStore:
    """What GetClusterStatus reads, for the API layer (which never touches SQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def status(self, seen_since: datetime) -> tuple[Leadership | None, list[ReplicaPresence]]:
        async with self.db.transaction() as conn:
            return await current_leadership(conn), await list_replicas(conn, seen_since)
