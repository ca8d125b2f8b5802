"""Leader election on a real PostgreSQL: one leader at a time, a fresh epoch per takeover, a
prompt takeover when the leader resigns or loses its lock connection, and writes of a deposed
leader refused by the epoch check."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from scheduler.domain.errors import LeadershipLost
from scheduler.leader import LOCK_KEY, LeaderElector, Role
from scheduler.store.database import Database
from scheduler.store.leadership import check_epoch, current_leadership
from tests.helpers import assert_eventually

TICK = 0.1


@pytest.fixture
async def electors(db: Database) -> AsyncIterator[list[LeaderElector]]:
    started = [
        LeaderElector(db.dsn, f"replica-{i}", tick=TICK, renew_timeout=1.0) for i in range(2)
    ]
    for elector in started:
        await elector.start()
    yield started
    for elector in started:
        await elector.stop()


async def the_leader(
    electors: list[LeaderElector],
    exclude: LeaderElector | None = None,
    newer_than: int | None = None,
) -> LeaderElector:
    """The one leader, once there is exactly one (not `exclude`, and past epoch `newer_than`)."""
    found: list[LeaderElector] = []

    async def one_leads() -> None:
        leaders = [e for e in electors if e.is_leader]
        assert len(leaders) == 1
        assert leaders[0] is not exclude
        if newer_than is not None:
            epoch = leaders[0].epoch
            assert epoch is not None
            assert epoch > newer_than
        found[:] = leaders

    await assert_eventually(one_leads)
    return found[0]


async def test_one_replica_leads_with_the_first_epoch(
    db: Database, electors: list[LeaderElector]
) -> None:
    leader = await the_leader(electors)
    assert leader.epoch == 1
    assert leader.role is Role.LEADER
    async with db.read() as conn:
        leadership = await current_leadership(conn)
    assert leadership is not None
    assert (leadership.epoch, leadership.leader) == (1, leader.replica_id)
    follower = next(e for e in electors if e is not leader)
    assert follower.role is Role.FOLLOWER
    assert follower.epoch is None


async def test_a_resigning_leader_is_replaced_at_the_next_tick_with_a_new_epoch(
    db: Database, electors: list[LeaderElector]
) -> None:
    first = await the_leader(electors)
    await first.stop()
    second = await the_leader(electors, exclude=first)
    assert second.epoch == 2
    assert not first.is_leader


async def test_a_killed_lock_connection_means_a_new_leader_and_the_old_one_is_fenced(
    db: Database, electors: list[LeaderElector]
) -> None:
    first = await the_leader(electors)
    old_epoch = first.epoch

    # Every leader-only transaction checks its epoch first; record who wrote, in commit order.
    async with db.transaction() as conn:
        await conn.execute(text("CREATE TABLE writes (seq bigserial, epoch bigint)"))

    async def act(elector: LeaderElector, stop: asyncio.Event) -> None:
        while not stop.is_set():
            epoch = elector.epoch
            if elector.is_leader:
                with contextlib.suppress(LeadershipLost):
                    async with db.transaction() as conn:
                        await check_epoch(conn, epoch)
                        await conn.execute(
                            text("INSERT INTO writes (epoch) VALUES (:e)"), {"e": epoch}
                        )
            await asyncio.sleep(0.005)

    stop = asyncio.Event()
    actors = [asyncio.create_task(act(e, stop)) for e in electors]
    async with db.read() as conn:
        killed = await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'jobsched-leader' AND datname = current_database() "
                "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
            )
        )
        assert len(killed.all()) == 1
    # A new leadership: the replica that lost its session reconnects as a follower and may win
    # the lock again before the other one's next tick (seen on a loaded machine), so the new
    # leader is told by its epoch, not by which replica it is.
    assert old_epoch is not None
    second = await the_leader(electors, newer_than=old_epoch)
    assert second.epoch is not None
    assert old_epoch is not None
    assert second.epoch > old_epoch

    async def second_wrote() -> None:
        async with db.read() as conn:
            assert (
                await conn.execute(
                    text("SELECT count(*) FROM writes WHERE epoch = :e"), {"e": second.epoch}
                )
            ).scalar_one() > 0

    await assert_eventually(second_wrote)
    stop.set()
    await asyncio.gather(*actors)

    async with db.read() as conn:
        epochs = [r[0] for r in await conn.execute(text("SELECT epoch FROM writes ORDER BY seq"))]
    assert epochs == sorted(epochs), "a deposed leader wrote after its successor"
    # The deposed leader cannot write with its old epoch any more.
    with pytest.raises(LeadershipLost):
        async with db.transaction() as conn:
            await check_epoch(conn, old_epoch)


async def test_the_advisory_lock_never_stacks_across_re_elections(
    db: Database, electors: list[LeaderElector]
) -> None:
    """Fault case 8: a lock taken twice in one session would need two unlocks, and a leader
    that stepped down would go on holding it. Each leadership is on a session of its own (a
    step-down ends the session), and one session at most holds the lock."""
    holders_seen: list[int] = []
    for _ in range(3):
        leader = await the_leader(electors)
        epoch = leader.epoch
        async with db.read() as conn:
            holders = (
                (
                    await conn.execute(
                        text(
                            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                            "AND database = (SELECT oid FROM pg_database "
                            "WHERE datname = current_database()) "
                            "AND ((classid::bigint << 32) | objid::bigint) = :key"
                        ),
                        {"key": LOCK_KEY},
                    )
                )
                .scalars()
                .all()
            )
            leadership = await current_leadership(conn)
        assert len(holders) == 1, holders
        assert leadership is not None
        assert leadership.epoch == epoch
        holders_seen.append(int(holders[0]))
        # Depose it the way a successor's takeover would: the epoch moves on under it.
        async with db.transaction() as conn:
            await conn.execute(text("UPDATE leadership SET epoch = epoch + 1 WHERE id = 1"))

        async def stepped_down(leader: LeaderElector = leader, epoch: int | None = epoch) -> None:
            assert leader.epoch != epoch or not leader.is_leader

        await assert_eventually(stepped_down, within=10)
    assert len(set(holders_seen)) == 3, holders_seen  # a new session for every leadership
