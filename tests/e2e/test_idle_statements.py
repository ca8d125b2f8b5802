"""An idle scheduler replica is cheap for PostgreSQL (issue 6: at most 2 statements per second,
BEGIN and COMMIT included). A lone replica with the default timings leads, so it runs the
leader-only loops too; every statement it sends (the pool, the leader-election connection, the
LISTEN connection) goes through the benchmark's counting wire-protocol proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from bench.statement_proxy import StatementCounts, StatementProxy
from jobsched.v1 import job_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import ScriptedExecutor, connect, serving, state_of, submit

STATEMENTS_PER_SECOND = 2.0
# Start-up rounds (the first dispatch, presence report, rescue look, cron round) are over this
# long after the replica leads: every loop runs its first round at start or on election.
SETTLE = 1.0
# The measurement window: just under the period of the 5 s loops (the dispatcher's safety poll,
# the rescue loop's look at the deadlines, the presence report), so each shows up once (or, at
# a phase boundary, not at all) and the count is not a matter of luck: 3 leader renews (every
# 5 / 3 s), 1 + 1 + 3 (BEGIN, promotion, COMMIT) = 8 statements, under 2/s x 4.9 s. Cron (30 s)
# ran its round on election, before the window. The code before issue 6's work sent ~11/s.
WINDOW = 4.9
# asyncpg introspects the custom types of a statement the first time a pool connection runs it
# (jit off, the type query, jit back): a connection's warm-up, not an idle cost. The pool hands
# its connections out in turn, so a warm-up can still fall into the window.
DRIVER_WARM_UP = (
    "SELECT current_setting('jit')",
    "WITH RECURSIVE typeinfo_tree(",
    "SELECT set_config('jit',",
)


@pytest.fixture
async def proxied(database_url: str) -> AsyncIterator[tuple[Database, StatementCounts]]:
    proxy = StatementProxy(database_url)
    async with proxy.serving() as url:
        database = Database.from_url(url, pool_size=5)
        try:
            yield database, proxy.counts
        finally:
            await database.dispose()


async def leading(server: SchedulerServer) -> None:
    async def leads() -> None:
        assert server.leader.is_leader

    await assert_eventually(leads)
    await asyncio.sleep(SETTLE)


def breakdown(counts: StatementCounts) -> str:
    return "\n".join(f"{n} x {text[:120]}" for text, n in counts.top(20))


async def measure(server: SchedulerServer, counts: StatementCounts) -> None:
    pings = server.probe.pings
    counts.reset()
    await asyncio.sleep(WINDOW)  # the measurement window itself: there is no condition to await
    idle = sum(n for text, n in counts.by_text.items() if not text.startswith(DRIVER_WARM_UP))
    assert idle <= STATEMENTS_PER_SECOND * WINDOW, breakdown(counts)
    # The leader-election connection's answers stand in for the health probe's pings.
    assert server.probe.pings == pings


@pytest.mark.timeout(30)
async def test_an_idle_leader_sends_at_most_two_statements_per_second(
    proxied: tuple[Database, StatementCounts],
) -> None:
    db, counts = proxied
    async with serving(db) as server:
        await leading(server)
        await measure(server, counts)
        # Meanwhile it went on renewing its leadership, on the leader-election connection.
        texts = " ".join(counts.by_text)
        assert "UPDATE leadership SET renewed_at" in texts
        assert server.leader.is_leader


@pytest.mark.timeout(30)
async def test_idle_executors_add_no_claims_while_nothing_is_queued(
    proxied: tuple[Database, StatementCounts], executors: list[ScriptedExecutor]
) -> None:
    """Connected executors with free capacity: the safety poll asks once whether anything is
    QUEUED instead of running a claim transaction per executor."""
    db, counts = proxied
    async with (
        serving(db) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        for i in range(3):
            await connect(channel, executors, f"idle-{i}", 4)
        await leading(server)
        await measure(server, counts)
        texts = " ".join(counts.by_text)
        # No claim ran in the window (each begins by locking the limited queues).
        assert "FROM queues WHERE max_concurrency IS NOT NULL" not in texts


@pytest.mark.timeout(30)
async def test_one_claim_per_round_for_idle_executors_with_the_same_filters(
    proxied: tuple[Database, StatementCounts], executors: list[ScriptedExecutor]
) -> None:
    """A submit wakes the dispatcher; the first claim finds fewer jobs than it asked for, so the
    other executors with the same job types and queues are not asked about (one claim, not one
    per idle executor)."""
    db, counts = proxied
    async with (
        serving(db) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        for i in range(8):
            await connect(channel, executors, f"idle-{i}", 4)
        await leading(server)
        rounds = server.dispatcher.rounds
        counts.reset()
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        [job_id] = await submit(stub, 1)

        async def assigned() -> None:
            assert (await state_of(stub, job_id)).state == job_pb2.JOB_STATE_RUNNING
            assert server.dispatcher.rounds > rounds

        await assert_eventually(assigned)
        claims = sum(
            n
            for text, n in counts.by_text.items()
            if "FROM queues WHERE max_concurrency IS NOT NULL" in text
        )
        assert 1 <= claims <= server.dispatcher.rounds - rounds, breakdown(counts)
