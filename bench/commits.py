"""Committed transactions in the benchmark database, from pg_stat_database.xact_commit.

Backends publish their counters lazily: when they go idle and their last flush is at least 1 s
old, otherwise within PGSTAT_IDLE_INTERVAL (10 s), and at once when they exit. So a measurement
that counts commits runs its own scheduler process and reads the counter before starting it and
after it has stopped and every backend of it has gone (`wait_for_other_backends`): the reading is
complete without waiting for the idle flush. Our session's readings also commit transactions;
their cost is measured once (`calibrate`) and subtracted. Autovacuum's transactions would count
too, so it is paused on the job tables while commits are counted (`autovacuum_paused`); its
launcher still visits the database about once a minute, an occasional extra commit or two.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

# The tables the scheduler writes per job; autovacuum is paused on them while commits are counted.
JOB_TABLES = ("jobs", "job_events")
DISCONNECT_TIMEOUT = 10.0

_FORCE_OWN_FLUSH = "SELECT pg_stat_force_next_flush()"  # PostgreSQL 15+
_XACT_COMMIT = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
_OTHER_BACKENDS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


class CommitCounter:
    """Reads xact_commit on a dedicated connection; `own_cost` is what one reading commits."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.own_cost = 0  # transactions committed between two back-to-back readings

    async def read(self) -> int:
        await self.conn.execute(_FORCE_OWN_FLUSH)
        return int(await self.conn.fetchval(_XACT_COMMIT))

    async def calibrate(self, pairs: int = 3) -> None:
        """Measure what one reading costs: the least of a few back-to-back differences, so that a
        stray commit by another backend (autovacuum, say) does not count as ours."""
        previous = await self.read()  # the first reading also prepares the statement
        costs = []
        for _ in range(pairs):
            current = await self.read()
            costs.append(current - previous)
            previous = current
        self.own_cost = min(costs)

    async def others_since(self, before: int, own_statements: int = 0) -> int:
        """Transactions committed by others since the reading `before`, once every other backend
        has exited (and so flushed its counters). `own_statements`: autocommit statements this
        benchmark ran meanwhile on other connections, subtracted too."""
        polls = await wait_for_other_backends(self.conn)
        return await self.read() - before - self.own_cost - polls - own_statements


async def wait_for_other_backends(conn: asyncpg.Connection) -> int:
    """Until no other client is connected to the database (they flush their counters on exit).
    Returns how many statements (autocommit transactions) it took."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DISCONNECT_TIMEOUT
    polls = 1
    while int(await conn.fetchval(_OTHER_BACKENDS)) > 0:
        if loop.time() > deadline:
            raise RuntimeError("other sessions are still connected to the benchmark database")
        await asyncio.sleep(0.05)
        polls += 1
    return polls


@contextlib.asynccontextmanager
async def autovacuum_paused(
    conn: asyncpg.Connection, tables: tuple[str, ...] = JOB_TABLES
) -> AsyncIterator[None]:
    """Keep autovacuum (whose transactions would count) off `tables` for a while."""
    for table in tables:
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    try:
        yield
    finally:
        for table in tables:
            await conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
