"""Alembic environment: async engine (asyncpg), one transaction, serialised by an advisory lock so
that several scheduler replicas starting together migrate once.

The URL comes from the alembic config's `sqlalchemy.url` (set by scheduler.store.migrate) or from
DATABASE_URL. A caller may also hand over an open connection in `config.attributes["connection"]`.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from scheduler.store.database import asyncpg_url
from scheduler.store.schema import metadata

# Any constant works; it only has to be the same for every replica.
MIGRATION_LOCK_KEY = 0x6A6F6273636864  # "jobschd"

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("no database: set DATABASE_URL or sqlalchemy.url")
    asyncio.run(_run_async(asyncpg_url(url)))


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations_online()
