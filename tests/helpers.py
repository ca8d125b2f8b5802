"""Test helpers: wait on conditions, never on fixed sleeps."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import text

if TYPE_CHECKING:
    from scheduler.store.database import Database

T = TypeVar("T")


async def assert_eventually(
    check: Callable[[], Awaitable[T]], within: float = 5.0, interval: float = 0.02
) -> T:
    """Call `check` until it returns without raising AssertionError; fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(interval)


def utc(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


async def waiting_on_a_lock(db: Database, statement_like: str = "%") -> None:
    """Until a session of this test's database whose statement is LIKE `statement_like` waits
    for a lock."""

    async def blocked() -> None:
        async with db.read() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE :statement"
                ),
                {"statement": statement_like},
            )
        assert waiting

    await assert_eventually(blocked, within=5)


CHECKOUT = Path(__file__).resolve().parents[1]


async def run_example(name: str, *args: str, within: float = 60) -> list[str]:
    """`python examples/NAME ARGS...` from the checkout: the lines it printed (its stderr in
    the failure when it does not exit 0)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHECKOUT / "examples" / name),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode == 0, err.decode()
    return out.decode().splitlines()
