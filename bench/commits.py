"""Committed transactions in the benchmark database, from pg_stat_database.xact_commit.

Backends publish their counters lazily: when they go idle and their last flush is at least 1 s
old, otherwise within PGSTAT_IDLE_INTERVAL (10 s). So a reading is only complete that long after
the load stopped (`since`). Our session's readings also commit transactions; their cost is
measured once (`calibrate`) and subtracted. Autovacuum's transactions would count too, so it is
paused on the submit tables while commits are counted (`autovacuum_paused`); its launcher
still visits the database about once a minute, an occasional extra commit or two that the median
over repetitions absorbs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

POLL_SECONDS = 0.5
# Past PGSTAT_IDLE_INTERVAL (10 s) after its last transaction, every backend has flushed.
SETTLE_SECONDS = 11.0
# The tables a submit writes; autovacuum is paused on them while commits are counted.
SUBMIT_TABLES = ("jobs", "job_events")

_FORCE_OWN_FLUSH = "SELECT pg_stat_force_next_flush()"  # PostgreSQL 15+
_XACT_COMMIT = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"


class CommitCounter:
    """Reads xact_commit on a dedicated connection; `since()` excludes its own transactions."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.own_cost = 0  # transactions committed between two back-to-back readings

    async def read(self) -> int:
        await self.conn.execute(_FORCE_OWN_FLUSH)
        return int(await self.conn.fetchval(_XACT_COMMIT))

    async def calibrate(self, pairs: int = 3) -> None:
        """Wait until earlier activity has been published, then measure what one reading costs:
        the least of a few back-to-back differences, so that a stray commit by another backend
        (autovacuum, say) does not count as ours."""
        await asyncio.sleep(SETTLE_SECONDS)
        previous = await self.read()  # the first reading also prepares the statement
        costs = []
        for _ in range(pairs):
            current = await self.read()
            costs.append(current - previous)
            previous = current
        self.own_cost = min(costs)

    async def since(self, before: int) -> int:
        """Transactions committed by others since the reading `before`. Polls for SETTLE_SECONDS
        (each reading flushes our own counters at once, so only theirs can lag)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        readings = 0
        while True:
            last = await self.read()
            readings += 1
            if loop.time() >= deadline:
                return last - before - readings * self.own_cost
            await asyncio.sleep(POLL_SECONDS)


@contextlib.asynccontextmanager
async def autovacuum_paused(
    conn: asyncpg.Connection, tables: tuple[str, ...] = SUBMIT_TABLES
) -> AsyncIterator[None]:
    """Keep autovacuum (whose transactions would count) off `tables` for a while."""
    for table in tables:
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    try:
        yield
    finally:
        for table in tables:
            await conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
