"""Statements about executor sessions: the key that signs their tokens, and whether a session of a
name is alive on another replica (from the replicas' presence rows)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

SESSION_SECRET = "executor_session"  # the cluster_secrets row (migration 0010)

_SECRET = text("SELECT secret FROM cluster_secrets WHERE name = :name")


async def load_session_secret(conn: AsyncConnection) -> bytes:
    """The key of executor session tokens, shared by every replica (LookupError if absent: the
    database is not migrated)."""
    secret = (await conn.execute(_SECRET, {"name": SESSION_SECRET})).scalar_one_or_none()
    if secret is None:
        raise LookupError(f"cluster_secrets has no {SESSION_SECRET!r} row")
    return bytes(secret)


# The presence rows list each replica's connected executors (scheduler/cluster.py): a replica
# seen since `live_since` that lists the name has a live session of it.
_LIVE_ELSEWHERE = text("""
SELECT EXISTS (
    SELECT 1 FROM scheduler_replicas r, jsonb_array_elements(r.executors) AS e
    WHERE r.id <> :replica_id AND r.last_seen_at >= :live_since AND e->>'name' = :name
)
""")


async def executor_live_elsewhere(
    conn: AsyncConnection, name: str, replica_id: str, live_since: datetime
) -> bool:
    """Whether a live replica other than `replica_id` reports an executor called `name`."""
    params = {"name": name, "replica_id": replica_id, "live_since": live_since}
    return bool((await conn.execute(_LIVE_ELSEWHERE, params)).scalar_one())
