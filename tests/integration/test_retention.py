"""The retention sweep (scheduler/maintenance/retention.py) on real PostgreSQL, with an injected
clock: finished jobs past their queue's retention go, with their events and log lines; the rest
stay."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from scheduler.domain.log_lines import LogLine
from scheduler.domain.states import JobState
from scheduler.maintenance.retention import RetentionSweeper
from scheduler.store.attempts import Success, claim_jobs, succeed_attempts
from scheduler.store.database import Database
from scheduler.store.jobs import Guard, JobStore
from scheduler.store.logs import insert_log_lines
from tests.helpers import utc
from tests.integration.test_store import new_job

NOW = utc(2026, 6, 1, 12)
DAY = timedelta(days=1)


@dataclass
class FakeLeader:
    epoch: int | None = 1
    replica_id: str = "replica-a"
    is_leader: bool = True


@pytest.fixture
async def leadership(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "INSERT INTO leadership (id, epoch, leader, since, renewed_at, backend_pid) "
                "VALUES (1, 1, 'replica-a', now(), now(), 0)"
            )
        )


async def finished(
    store: JobStore, at: datetime, *, queue: str = "default", tenant: str = "t", **spec: object
) -> str:
    """A job submitted and cancelled at `at` (so finished then)."""
    [submitted] = await store.submit(tenant, [new_job(at, queue=queue, **spec)])  # type: ignore[arg-type]
    job = submitted.job
    await store.cancel(Guard(tenant, job.id, JobState.QUEUED, 0), at, "test", "test")
    return job.id


async def ids(db: Database) -> set[str]:
    async with db.read() as conn:
        return {str(r[0]) for r in await conn.execute(text("SELECT id FROM jobs"))}


async def set_retention(db: Database, tenant: str, queue: str, keep: timedelta) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text(
                "INSERT INTO queues (tenant, name, updated_at, retention) "
                "VALUES (:t, :q, now(), :keep)"
            ),
            {"t": tenant, "q": queue, "keep": keep},
        )


@pytest.mark.usefixtures("leadership")
async def test_finished_jobs_past_the_default_retention_go_with_their_history(
    db: Database, store: JobStore
) -> None:
    old = await finished(store, NOW - 31 * DAY)
    recent = await finished(store, NOW - 29 * DAY)
    [active] = await store.submit("t", [new_job(NOW - 60 * DAY)])
    async with db.transaction() as conn:
        await insert_log_lines(conn, [LogLine(old, 1, 1, "a line", NOW - 31 * DAY)])

    sweeper = RetentionSweeper(db, FakeLeader(), lambda: NOW, retention=30 * DAY)
    assert await sweeper.sweep() == 1
    assert await ids(db) == {recent, active.job.id}
    async with db.read() as conn:
        events = await conn.scalar(
            text("SELECT count(*) FROM job_events WHERE job_id = :id"), {"id": old}
        )
        lines = await conn.scalar(
            text("SELECT count(*) FROM job_logs WHERE job_id = :id"), {"id": old}
        )
    assert (events, lines) == (0, 0)
    assert sweeper.deleted_total == 1


@pytest.mark.usefixtures("leadership")
async def test_a_queue_keeps_its_jobs_for_its_own_retention_and_zero_is_forever(
    db: Database, store: JobStore
) -> None:
    await set_retention(db, "t", "short", 2 * DAY)
    await set_retention(db, "t", "forever", timedelta(0))
    await set_retention(db, "other", "default", 100 * DAY)  # another tenant's queue of that name
    short_old = await finished(store, NOW - 3 * DAY, queue="short")
    short_new = await finished(store, NOW - 1 * DAY, queue="short")
    forever = await finished(store, NOW - 400 * DAY, queue="forever")
    default_old = await finished(store, NOW - 40 * DAY)
    other_tenant = await finished(store, NOW - 40 * DAY, tenant="other")

    sweeper = RetentionSweeper(db, FakeLeader(), lambda: NOW, retention=30 * DAY)
    assert await sweeper.sweep() == 2
    assert await ids(db) == {short_new, forever, other_tenant}
    assert {short_old, default_old}.isdisjoint(await ids(db))


@pytest.mark.usefixtures("leadership")
async def test_a_zero_default_keeps_everything_without_a_queue_retention(
    db: Database, store: JobStore
) -> None:
    await set_retention(db, "t", "short", DAY)
    kept = await finished(store, NOW - 1000 * DAY)
    await finished(store, NOW - 2 * DAY, queue="short")
    sweeper = RetentionSweeper(db, FakeLeader(), lambda: NOW, retention=timedelta(0))
    assert await sweeper.sweep() == 1
    assert await ids(db) == {kept}


@pytest.mark.usefixtures("leadership")
async def test_sweeps_go_in_batches_until_nothing_is_left(db: Database, store: JobStore) -> None:
    for _ in range(7):
        await finished(store, NOW - 40 * DAY)
    sweeper = RetentionSweeper(db, FakeLeader(), lambda: NOW, retention=30 * DAY, batch=3)
    assert await sweeper.sweep_once() == 3
    assert await sweeper.sweep() == 4  # 3 + 1, then a short batch ends the sweep
    assert await ids(db) == set()
    assert sweeper.deleted_total == 7


@pytest.mark.usefixtures("leadership")
async def test_a_finished_dependency_of_a_waiting_job_is_kept(
    db: Database, store: JobStore
) -> None:
    """A job waiting on a succeeded dependency and on another one not finished yet: the
    succeeded one stays (GetJobStatus of the waiting job lists it) until the waiting job ends."""
    then = NOW - 40 * DAY
    [done] = await store.submit("t", [new_job(then, job_type="work")])
    async with db.transaction() as conn:
        [claimed] = await claim_jobs(
            conn, executor="x", job_types=["work"], queues=[], limit=1, lease=DAY, now=then
        )
        await succeed_attempts(conn, [Success(claimed.id, claimed.attempt, b"", "x")], then)
    [pending] = await store.submit("t", [new_job(then, job_type="later", run_at=NOW + DAY)])
    waiting_job = replace(new_job(then), depends_on=(done.job.id, pending.job.id))
    [waiting] = await store.submit("t", [waiting_job])
    assert waiting.job.state is JobState.WAITING

    sweeper = RetentionSweeper(db, FakeLeader(), lambda: NOW, retention=30 * DAY)
    assert await sweeper.sweep() == 0
    assert done.job.id in await ids(db)


async def test_a_follower_or_a_deposed_leader_deletes_nothing(
    db: Database, store: JobStore
) -> None:
    old = await finished(store, NOW - 40 * DAY)
    follower = RetentionSweeper(db, FakeLeader(is_leader=False), lambda: NOW)
    assert await follower.sweep() == 0
    deposed = RetentionSweeper(db, FakeLeader(epoch=1), lambda: NOW)  # no leadership row: over
    with pytest.raises(Exception, match="epoch 1 is over"):
        await deposed.sweep_once()
    assert old in await ids(db)


async def test_the_sweep_reads_only_what_it_deletes(db: Database, store: JobStore) -> None:
    """The plan: one probe of ix_jobs_retention per queue and a range scan to the cutoff."""
    for queue in ("a", "b"):
        for age in (40, 10):
            await finished(store, NOW - age * DAY, queue=queue)
    async with db.transaction() as conn:
        await conn.execute(text("ANALYZE jobs"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        from scheduler.store.retention import _DELETE_EXPIRED

        plan = "\n".join(
            r[0]
            for r in await conn.execute(
                text("EXPLAIN " + str(_DELETE_EXPIRED)),
                {"now": NOW, "default_retention": 30 * DAY, "batch": 100},
            )
        )
        await conn.rollback()
    assert "ix_jobs_retention" in plan
    assert "Seq Scan on jobs" not in plan
