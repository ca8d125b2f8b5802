"""Statements on job-type settings (JobTypeService), one named function each, and the
JobTypeStore facade. The submit INSERT reads the table itself (scheduler/store/jobs.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.job_types import JobTypeSettings
from scheduler.domain.retry import RetryOverrides
from scheduler.store.database import Database

_COLUMNS = """name, max_attempts, timeout, retry_initial_backoff, retry_multiplier,
    retry_max_backoff, retry_jitter, updated_at"""


def _settings(row: Row[Any]) -> JobTypeSettings:
    m = row._mapping
    return JobTypeSettings(
        name=m["name"],
        max_attempts=m["max_attempts"],
        timeout=m["timeout"],
        retry=RetryOverrides(
            initial=m["retry_initial_backoff"],
            multiplier=m["retry_multiplier"],
            maximum=m["retry_max_backoff"],
            jitter=m["retry_jitter"],
        ),
        updated_at=m["updated_at"],
    )


_SELECT = text(f"SELECT {_COLUMNS} FROM job_types WHERE tenant = :tenant AND name = :name")


async def select_job_type(conn: AsyncConnection, tenant: str, name: str) -> JobTypeSettings:
    """The type's settings; empty ones for a type without a row."""
    row = (await conn.execute(_SELECT, {"tenant": tenant, "name": name})).first()
    return JobTypeSettings(name=name) if row is None else _settings(row)


_SELECT_PAGE = text(f"""
SELECT {_COLUMNS} FROM job_types
WHERE tenant = :tenant AND (CAST(:after AS text) IS NULL OR name > :after)
ORDER BY name
LIMIT :limit
""")


async def select_job_type_page(
    conn: AsyncConnection, tenant: str, after: str | None, limit: int
) -> list[JobTypeSettings]:
    """Up to `limit` configured types after the name `after` (None: from the first), by name."""
    rows = await conn.execute(_SELECT_PAGE, {"tenant": tenant, "after": after, "limit": limit})
    return [_settings(r) for r in rows]


# An empty row first, so that the row lock below also serialises the first two updates of a
# type (concurrent updates of different fields do not lose each other's changes).
_ENSURE = text("""
INSERT INTO job_types (tenant, name, updated_at) VALUES (:tenant, :name, :now)
ON CONFLICT (tenant, name) DO NOTHING
""")
_LOCK = text(f"SELECT {_COLUMNS} FROM job_types WHERE tenant = :tenant AND name = :name FOR UPDATE")


async def lock_job_type(
    conn: AsyncConnection, tenant: str, name: str, now: datetime
) -> JobTypeSettings:
    """The type's row, made if missing, locked until the transaction ends."""
    await conn.execute(_ENSURE, {"tenant": tenant, "name": name, "now": now})
    return _settings((await conn.execute(_LOCK, {"tenant": tenant, "name": name})).one())


_UPDATE = text(f"""
UPDATE job_types SET max_attempts = :max_attempts, timeout = :timeout,
    retry_initial_backoff = :initial, retry_multiplier = :multiplier,
    retry_max_backoff = :maximum, retry_jitter = :jitter, updated_at = :now
WHERE tenant = :tenant AND name = :name
RETURNING {_COLUMNS}
""")


async def update_job_type(
    conn: AsyncConnection, tenant: str, settings: JobTypeSettings, now: datetime
) -> JobTypeSettings:
    row = (
        await conn.execute(
            _UPDATE,
            {
                "tenant": tenant,
                "name": settings.name,
                "max_attempts": settings.max_attempts,
                "timeout": settings.timeout,
                "initial": settings.retry.initial,
                "multiplier": settings.retry.multiplier,
                "maximum": settings.retry.maximum,
                "jitter": settings.retry.jitter,
                "now": now,
            },
        )
    ).one()
    return _settings(row)


_DELETE = text("DELETE FROM job_types WHERE tenant = :tenant AND name = :name")


async def delete_job_type(conn: AsyncConnection, tenant: str, name: str) -> None:
    await conn.execute(_DELETE, {"tenant": tenant, "name": name})


class JobTypeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, tenant: str, name: str) -> JobTypeSettings:
        async with self.db.read() as conn:
            return await select_job_type(conn, tenant, name)

    async def list_page(self, tenant: str, after: str | None, limit: int) -> list[JobTypeSettings]:
        async with self.db.read() as conn:
            return await select_job_type_page(conn, tenant, after, limit)

    async def update(
        self,
        tenant: str,
        name: str,
        change: Callable[[JobTypeSettings], JobTypeSettings],
        now: datetime,
    ) -> JobTypeSettings:
        """Apply `change` to the current settings under the row's lock and store the result; a
        type left without any setting loses its row (it is no longer listed)."""
        async with self.db.transaction() as conn:
            updated = change(await lock_job_type(conn, tenant, name, now))
            if updated.empty:
                await delete_job_type(conn, tenant, name)
                return JobTypeSettings(name=name)
            return await update_job_type(conn, tenant, updated, now)
