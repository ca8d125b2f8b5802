"""Statements on queue settings (QueueService)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.queues import QueueSettings
from scheduler.domain.retry import RetryOverrides
from scheduler.store.database import Database

_COLUMNS = """name, default_max_attempts, default_timeout, retry_initial_backoff,
    retry_multiplier, retry_max_backoff, retry_jitter, updated_at"""


def _settings(row: Row[Any]) -> QueueSettings:
    m = row._mapping
    return QueueSettings(
        name=m["name"],
        default_max_attempts=m["default_max_attempts"],
        default_timeout=m["default_timeout"],
        retry=RetryOverrides(
            initial=m["retry_initial_backoff"],
            multiplier=m["retry_multiplier"],
            maximum=m["retry_max_backoff"],
            jitter=m["retry_jitter"],
        ),
        updated_at=m["updated_at"],
    )


_SELECT = text(f"SELECT {_COLUMNS} FROM queues WHERE tenant = :tenant AND name = :name")
_LOCK = text(f"SELECT {_COLUMNS} FROM queues WHERE tenant = :tenant AND name = :name FOR UPDATE")
_ENSURE = text("""
INSERT INTO queues (tenant, name, updated_at) VALUES (:tenant, :name, :now)
ON CONFLICT (tenant, name) DO NOTHING
""")
_UPDATE = text(f"""
UPDATE queues SET default_max_attempts = :default_max_attempts,
    default_timeout = :default_timeout, retry_initial_backoff = :initial,
    retry_multiplier = :multiplier, retry_max_backoff = :maximum, retry_jitter = :jitter,
    updated_at = :now
WHERE tenant = :tenant AND name = :name
RETURNING {_COLUMNS}
""")


class QueueStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, tenant: str, name: str) -> QueueSettings:
        """The queue's settings; empty ones for a queue never configured."""
        async with self.db.read() as conn:
            row = (await conn.execute(_SELECT, {"tenant": tenant, "name": name})).first()
        return QueueSettings(name=name) if row is None else _settings(row)

    async def update(
        self,
        tenant: str,
        name: str,
        change: Callable[[QueueSettings], QueueSettings],
        now: datetime,
    ) -> QueueSettings:
        """Apply `change` to the current settings under a row lock (concurrent updates of
        different fields do not lose each other's changes) and store the result."""
        async with self.db.transaction() as conn:
            return await _update(conn, tenant, name, change, now)


async def _update(
    conn: AsyncConnection,
    tenant: str,
    name: str,
    change: Callable[[QueueSettings], QueueSettings],
    now: datetime,
) -> QueueSettings:
    await conn.execute(_ENSURE, {"tenant": tenant, "name": name, "now": now})
    current = _settings((await conn.execute(_LOCK, {"tenant": tenant, "name": name})).one())
    updated = change(current)
    row = (
        await conn.execute(
            _UPDATE,
            {
                "tenant": tenant,
                "name": name,
                "default_max_attempts": updated.default_max_attempts,
                "default_timeout": updated.default_timeout,
                "initial": updated.retry.initial,
                "multiplier": updated.retry.multiplier,
                "maximum": updated.retry.maximum,
                "jitter": updated.retry.jitter,
                "now": now,
            },
        )
    ).one()
    return _settings(row)
