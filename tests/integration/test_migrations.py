"""Alembic is the schema authority: upgrade an empty database, prove no drift, round-trip."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command
from sqlalchemy.engine import make_url

from scheduler.store import migrate


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(_plain(url))
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " UNION ALL SELECT typname FROM pg_type WHERE typname = 'job_state'"
        )
        return {r[0] for r in rows}
    finally:
        await conn.close()


async def test_upgrade_check_and_round_trip(empty_database_url: str) -> None:
    config = migrate.alembic_config(empty_database_url)
    assert await _tables(empty_database_url) == set()

    await asyncio.to_thread(command.upgrade, config, "head")
    assert {"jobs", "job_events", "alembic_version", "job_state"} <= await _tables(
        empty_database_url
    )
    # No drift between the table metadata and what the migrations built.
    await asyncio.to_thread(command.check, config)

    await asyncio.to_thread(command.downgrade, config, "base")
    assert await _tables(empty_database_url) == {"alembic_version"}

    await asyncio.to_thread(command.upgrade, config, "head")
    await asyncio.to_thread(command.check, config)
    assert {"jobs", "job_events", "job_state"} <= await _tables(empty_database_url)
