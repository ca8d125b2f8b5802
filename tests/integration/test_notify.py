"""The LISTEN/NOTIFY signals between replicas, on a real PostgreSQL: debounced work signals,
cancel signals with their job id, a replica's own signals ignored, and a listener that comes
back after its connection is killed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from scheduler.dispatch.notify import Notifier
from scheduler.store.database import Database
from tests.helpers import assert_eventually


class Received:
    def __init__(self, notifier: Notifier) -> None:
        self.work = 0
        self.cancels: list[str] = []
        notifier.on_work = self._work
        notifier.on_cancel = self.cancels.append

    def _work(self) -> None:
        self.work += 1


@pytest.fixture
async def pair(db: Database) -> AsyncIterator[tuple[Notifier, Notifier]]:
    a, b = Notifier(db.dsn, debounce=0.2), Notifier(db.dsn, debounce=0.2)
    await a.start()
    await b.start()
    await a.connected.wait()
    await b.connected.wait()
    yield a, b
    await a.stop()
    await b.stop()


async def test_a_burst_of_work_signals_is_sent_as_at_most_two_notifies(
    pair: tuple[Notifier, Notifier],
) -> None:
    a, b = pair
    got_a, got_b = Received(a), Received(b)
    for _ in range(500):
        a.work()

    async def delivered() -> None:
        assert a.sent == 2  # the first at once, the rest of the burst as one more
        assert got_b.work == 2

    await assert_eventually(delivered)
    assert got_a.work == 0  # a replica ignores its own signals


async def test_a_cancel_signal_carries_its_job_id(pair: tuple[Notifier, Notifier]) -> None:
    a, b = pair
    got_b = Received(b)
    a.cancel("2b8c5e9e-4c1e-4c55-9d55-0d1c3f8f2a10")

    async def delivered() -> None:
        assert got_b.cancels == ["2b8c5e9e-4c1e-4c55-9d55-0d1c3f8f2a10"]

    await assert_eventually(delivered)


async def test_a_listener_whose_connection_is_killed_comes_back_and_says_so(
    db: Database, pair: tuple[Notifier, Notifier]
) -> None:
    a, b = pair
    got_b = Received(b)
    async with db.read() as conn:
        killed = await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'jobsched-notify' AND datname = current_database()"
            )
        )
        assert len(killed.all()) == 2

    async def back() -> None:
        assert a.connected.is_set()
        assert b.connected.is_set()
        # Reconnecting counts as a work signal: it may have missed some.
        assert got_b.work >= 1

    await assert_eventually(back)
    before = got_b.work

    async def delivered() -> None:
        a.work()  # dropped while a is still reconnecting, so signal until one arrives
        assert got_b.work > before

    await assert_eventually(delivered)
