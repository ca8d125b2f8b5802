"""Dependencies in the store: the submit's counters and edges, and the jobs_resolve_dependents
trigger on every path that ends a job (success promotes; DEAD and CANCELLED cascade)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.errors import (
    ConcurrentModification,
    FailedPrecondition,
    InvalidArgument,
)
from scheduler.domain.jobs import Dependency, JobRecord
from scheduler.domain.retry import after_failure
from scheduler.domain.states import JobState
from scheduler.domain.validation import JobSpecInput, validate_batch
from scheduler.store import jobs as jobs_module
from scheduler.store.attempts import (
    claim_jobs,
    fail_attempt,
    release_attempt,
    rescue_expired_leases,
    rescue_timed_out,
    succeed_attempt,
)
from scheduler.store.database import Database
from scheduler.store.jobs import Guard, JobStore
from tests.helpers import waiting_on_a_lock

TENANT = "default"
LEASE = timedelta(seconds=30)


def work(**fields: object) -> JobSpecInput:
    fields.setdefault("type", "work")
    return JobSpecInput(**fields)  # type: ignore[arg-type]


async def submit(
    store: JobStore, now: datetime, *specs: JobSpecInput, tenant: str = TENANT
) -> list[JobRecord]:
    return [s.job for s in await store.submit(tenant, validate_batch(list(specs), now))]


async def run(db: Database, now: datetime, job_id: str) -> JobRecord:
    """Claim exactly this job (it must be QUEUED): raised to the top priority first."""
    async with db.transaction() as conn:
        await conn.execute(text("UPDATE jobs SET priority = 100 WHERE id = :id"), {"id": job_id})
        [running] = await claim_jobs(
            conn,
            executor="ex-1",
            job_types=["work"],
            queues=[],
            limit=1,
            lease=LEASE,
            now=now,
        )
    assert running.id == job_id
    return running


def guard(job: JobRecord) -> Guard:
    return Guard(job.tenant, job.id, job.state, job.attempt)


async def succeed(db: Database, now: datetime, job_id: str) -> None:
    running = await run(db, now, job_id)
    async with db.transaction() as conn:
        await succeed_attempt(conn, guard(running), b"", now, "executor:ex-1")


async def fail_for_good(db: Database, now: datetime, job_id: str) -> None:
    running = await run(db, now, job_id)
    outcome = after_failure(
        attempt=running.attempt,
        max_attempts=running.max_attempts,
        retryable=False,
        now=now,
        policy=running.retry_policy,
    )
    async with db.transaction() as conn:
        await fail_attempt(conn, guard(running), outcome, "boom", now, "executor:ex-1")


async def state_of(store: JobStore, job_id: str) -> tuple[JobState, int]:
    job = await store.get(TENANT, job_id)
    return job.state, job.pending_dependencies


async def history(db: Database, job_id: str) -> list[tuple[int, str | None, str, str, str]]:
    async with db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT seq, from_state::text, to_state::text, reason, actor FROM job_events "
                "WHERE job_id = :id ORDER BY seq"
            ),
            {"id": job_id},
        )
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def count(db: Database, table: str) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table}")))


# --- submit -----------------------------------------------------------------------------------


async def test_a_batch_dag_is_stored_with_counters_and_edges(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    [stored] = await submit(store, now, work())
    top, left, right, bottom = await submit(
        store,
        now,
        work(ref="top"),
        work(ref="left", depends_on_refs=("top",)),
        work(ref="right", depends_on_refs=("top",), depends_on=(stored.id,)),
        work(depends_on_refs=("left", "right")),
    )
    assert (top.state, top.pending_dependencies) == (JobState.QUEUED, 0)
    assert (left.state, left.pending_dependencies) == (JobState.WAITING, 1)
    assert (right.state, right.pending_dependencies) == (JobState.WAITING, 2)
    assert (bottom.state, bottom.pending_dependencies) == (JobState.WAITING, 2)
    # depends_on in the dependencies' creation order (the stored job first).
    assert right.depends_on == (stored.id, top.id)
    assert set(bottom.depends_on) == {left.id, right.id}
    assert await count(db, "job_dependencies") == 5
    assert (await store.get_with_dependencies(TENANT, right.id))[1] == [
        Dependency(stored.id, JobState.QUEUED),
        Dependency(top.id, JobState.QUEUED),
    ]
    assert (await store.get_with_dependencies(TENANT, top.id))[1] == []
    assert await history(db, left.id) == [(1, None, "waiting", "submitted", "client")]


async def test_succeeded_dependencies_count_as_met(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    done, running = await submit(store, now, work(), work())
    await succeed(db, now, done.id)
    await run(db, now, running.id)
    later = now + timedelta(hours=1)
    met, half, delayed = await submit(
        store,
        now,
        work(depends_on=(done.id,)),
        work(depends_on=(done.id, running.id)),
        work(depends_on=(done.id,), run_at=later),
    )
    assert (met.state, met.pending_dependencies) == (JobState.QUEUED, 0)
    assert (half.state, half.pending_dependencies) == (JobState.WAITING, 1)
    assert (delayed.state, delayed.pending_dependencies) == (JobState.SCHEDULED, 0)
    assert met.depends_on == (done.id,)  # the edge is kept for GetJobStatus


@pytest.mark.parametrize("ending", ["dead", "cancelled"])
async def test_a_failed_dependency_at_submit_is_invalid_and_nothing_is_written(
    store: JobStore, db: Database, ending: str
) -> None:
    now = datetime.now(UTC)
    ok, failed = await submit(store, now, work(), work())
    if ending == "dead":
        await fail_for_good(db, now, failed.id)
    else:
        await store.cancel(guard(failed), now, "test", "client")
    jobs, events = await count(db, "jobs"), await count(db, "job_events")
    with pytest.raises(InvalidArgument) as exc:
        await submit(store, now, work(), work(depends_on=(ok.id, failed.id)))
    assert [v.field for v in exc.value.violations] == ["jobs[1].depends_on[1]"]
    assert ending.upper() in exc.value.violations[0].description
    assert (await count(db, "jobs"), await count(db, "job_events")) == (jobs, events)
    assert await count(db, "job_dependencies") == 0


async def test_unknown_and_other_tenant_ids_are_invalid_and_nothing_is_written(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    [theirs] = await submit(store, now, work(), tenant="other")
    [mine] = await submit(store, now, work())
    jobs = await count(db, "jobs")
    with pytest.raises(InvalidArgument) as exc:
        await store.submit(
            TENANT,
            validate_batch([work(depends_on=(mine.id, theirs.id, str(uuid.uuid4())))], now),
            fields=["job"],
        )
    assert [v.field for v in exc.value.violations] == ["job.depends_on[1]", "job.depends_on[2]"]
    assert await count(db, "jobs") == jobs


async def test_a_keyed_dag_submitted_again_returns_the_stored_jobs(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    specs = [
        work(ref="a", idempotency_key="a"),
        work(ref="b", idempotency_key="b", depends_on_refs=("a",)),
    ]
    first = await store.submit(TENANT, validate_batch(specs, now))
    again = await store.submit(TENANT, validate_batch(specs, now))
    assert [s.created for s in again] == [False, False]
    assert [s.job.id for s in again] == [s.job.id for s in first]
    assert again[1].job.depends_on == (first[0].job.id,)
    assert await count(db, "job_dependencies") == 1

    # A new job referring to a keyed job that exists depends on the stored one.
    await succeed(db, now, first[0].job.id)
    _, child = await store.submit(
        TENANT,
        validate_batch([work(ref="a", idempotency_key="a"), work(depends_on_refs=("a",))], now),
    )
    assert child.job.depends_on == (first[0].job.id,)
    assert (child.job.state, child.job.pending_dependencies) == (JobState.QUEUED, 0)


# --- resolution by the trigger ----------------------------------------------------------------


async def test_the_last_dependency_succeeding_queues_the_job(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    a, b, c = await submit(
        store,
        now,
        work(ref="a"),
        work(ref="b"),
        work(depends_on_refs=("a", "b"), priority=70),
    )
    done_at = now + timedelta(seconds=5)
    await succeed(db, done_at, a.id)
    assert await state_of(store, c.id) == (JobState.WAITING, 1)
    assert await history(db, c.id) == [(1, None, "waiting", "submitted", "client")]

    await succeed(db, done_at, b.id)
    job = await store.get(TENANT, c.id)
    assert (job.state, job.pending_dependencies) == (JobState.QUEUED, 0)
    assert job.run_at == done_at  # eligible since then (the clock of the ending statement)
    assert job.updated_at == done_at
    assert job.finished_at is None
    assert await history(db, c.id) == [
        (1, None, "waiting", "submitted", "client"),
        (2, "waiting", "queued", f"dependencies succeeded (the last: {b.id})", "scheduler"),
    ]
    assert job.event_seq == 2
    # And it runs like any other QUEUED job.
    assert (await run(db, done_at, c.id)).state is JobState.RUNNING


async def test_a_job_whose_run_at_is_ahead_becomes_scheduled(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    a, b = await submit(store, now, work(ref="a"), work(depends_on_refs=("a",), run_at=later))
    await succeed(db, now, a.id)
    job = await store.get(TENANT, b.id)
    assert job.state is JobState.SCHEDULED
    assert job.run_at == later


async def test_promotion_notifies_the_work_channel(
    store: JobStore, db: Database, database_url: str
) -> None:
    plain = (
        make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    listener = await asyncpg.connect(plain)
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("jobsched_work", lambda *args: received.put_nowait(args[3]))
    try:
        now = datetime.now(UTC)
        a, b, _ = await submit(store, now, work(ref="a"), work(), work(depends_on_refs=("a",)))
        await succeed(db, now, b.id)  # no dependents: no signal
        await succeed(db, now, a.id)
        assert await asyncio.wait_for(received.get(), 5) == ""
        assert received.empty()
    finally:
        await listener.close()


@pytest.mark.parametrize("how", ["dead", "client cancel", "lease rescue", "timeout backstop"])
async def test_a_failed_dependency_cancels_its_dependents_transitively(
    store: JobStore, db: Database, how: str
) -> None:
    now = datetime.now(UTC)
    a, b, c, d, other, e = await submit(
        store,
        now,
        work(ref="a", max_attempts=1, timeout=timedelta(seconds=1)),
        work(ref="b", depends_on_refs=("a",)),
        work(ref="c", depends_on_refs=("b",)),
        work(ref="d", depends_on_refs=("c", "b")),
        work(ref="other"),
        work(depends_on_refs=("other",)),  # not downstream of a
    )
    ended_at = now + timedelta(seconds=5)
    if how == "dead":
        await fail_for_good(db, ended_at, a.id)
        ending = "DEAD"
    elif how == "client cancel":
        await store.cancel(guard(a), ended_at, "no longer needed", "client")
        ending = "CANCELLED"
    else:
        await run(db, now, a.id)
        async with db.transaction() as conn:
            if how == "lease rescue":
                [rescued] = await rescue_expired_leases(conn, now + LEASE + timedelta(seconds=1))
            else:
                [rescued] = await rescue_timed_out(conn, ended_at, grace=timedelta(seconds=1))
        assert rescued.state is JobState.DEAD
        ending = "DEAD"
    for job in (b, c, d):
        record = await store.get(TENANT, job.id)
        assert record.state is JobState.CANCELLED
        assert record.finished_at is not None
        assert record.event_seq == 2
    assert (await history(db, b.id))[-1][1:] == (
        "waiting",
        "cancelled",
        f"dependency {a.id} ended {ending}",
        "scheduler",
    )
    assert (await history(db, c.id))[-1][3] == f"upstream dependency {a.id} ended {ending}"
    # d depends on a only through b and c: the reason still names a, the root cause.
    assert (await history(db, d.id))[-1][3] == f"upstream dependency {a.id} ended {ending}"
    assert await state_of(store, other.id) == (JobState.QUEUED, 0)
    assert await state_of(store, e.id) == (JobState.WAITING, 1)


async def test_a_release_while_cancelling_cascades(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    a, b = await submit(store, now, work(ref="a"), work(depends_on_refs=("a",)))
    running = await run(db, now, a.id)
    await store.request_cancel(guard(running), now)
    async with db.transaction() as conn:
        released = await release_attempt(conn, guard(running), now, "handed back", "test")
    assert released.state is JobState.CANCELLED
    assert await state_of(store, b.id) == (JobState.CANCELLED, 1)


async def test_a_wide_cascade_cancels_every_layer_once(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    layers, width = 20, 20
    specs = [work(ref="root")]
    for layer in range(layers):
        previous = ["root"] if layer == 0 else [f"{layer - 1}.{j}" for j in range(width)]
        specs += [
            work(
                ref=f"{layer}.{i}",
                depends_on_refs=tuple(
                    previous[(i + k) % len(previous)] for k in range(min(3, len(previous)))
                ),
            )
            for i in range(width)
        ]
    jobs = await submit(store, now, *specs)
    await store.cancel(guard(jobs[0]), now, "stop", "client")
    async with db.read() as conn:
        result = await conn.execute(text("SELECT state::text, count(*) FROM jobs GROUP BY state"))
        states: dict[str, int] = {row[0]: row[1] for row in result}
        cancel_events = await conn.scalar(
            text("SELECT count(*) FROM job_events WHERE to_state = 'cancelled'")
        )
    assert states == {"cancelled": 1 + layers * width}
    assert cancel_events == 1 + layers * width


async def test_a_dependent_retried_by_hand_is_not_cancelled_again(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    a, b, c = await submit(
        store, now, work(ref="a"), work(ref="b"), work(depends_on_refs=("a", "b"))
    )
    await store.cancel(guard(a), now, "stop", "client")
    cancelled = await store.get(TENANT, c.id)
    assert cancelled.state is JobState.CANCELLED
    # RetryJob of the dependent runs it now, whatever its dependencies.
    retried = await store.retry(guard(cancelled), now, "retried", "client")
    assert retried.state is JobState.QUEUED
    await fail_for_good(db, now, b.id)
    assert await state_of(store, c.id) == (JobState.QUEUED, 2)


async def test_retrying_a_dead_dependency_does_not_revive_its_dependents(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    a, b = await submit(store, now, work(ref="a"), work(depends_on_refs=("a",)))
    await fail_for_good(db, now, a.id)
    dead = await store.get(TENANT, a.id)
    await store.retry(guard(dead), now, "retried", "client")
    await succeed(db, now, a.id)
    # The counter follows (0 pending), the state does not: retry the dependent to run it.
    assert await state_of(store, b.id) == (JobState.CANCELLED, 0)


async def test_a_dependency_that_ends_while_a_submit_reads_it_is_seen(
    store: JobStore, db: Database
) -> None:
    """The submit locks its dependencies FOR SHARE: an outcome committing meanwhile is either
    seen by the submit or sees the submit's edges. Never a dependent waiting forever."""
    now = datetime.now(UTC)
    [a] = await submit(store, now, work())
    running = await run(db, now, a.id)
    async with db.transaction() as conn:
        await succeed_attempt(conn, guard(running), b"", now, "executor:ex-1")
        # The success is not committed yet: the submit waits for it on the row lock.
        pending = asyncio.create_task(submit(store, now, work(depends_on=(a.id,))))
        await waiting_on_a_lock(db)
        assert not pending.done()
    [b] = await pending
    assert (b.state, b.pending_dependencies) == (JobState.QUEUED, 0)


async def test_an_outcome_waits_for_a_submit_that_reads_its_job(
    store: JobStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the submit holds the lock, the outcome waits, then its trigger sees the
    new edge."""
    now = datetime.now(UTC)
    [c] = await submit(store, now, work())
    running = await run(db, now, c.id)
    linked, release = asyncio.Event(), asyncio.Event()
    original = jobs_module.insert_dependencies

    async def paused(conn: AsyncConnection, edges: list[tuple[str, str]]) -> None:
        await original(conn, edges)
        linked.set()
        await release.wait()

    monkeypatch.setattr(jobs_module, "insert_dependencies", paused)
    submitting = asyncio.create_task(submit(store, now, work(depends_on=(c.id,))))
    await asyncio.wait_for(linked.wait(), 5)
    outcome = asyncio.create_task(_succeed_running(db, now, running))
    await waiting_on_a_lock(db)
    assert not outcome.done()  # blocked on the submit's FOR SHARE lock
    release.set()
    [d] = await submitting
    await outcome
    assert d.state is JobState.WAITING
    assert await state_of(store, d.id) == (JobState.QUEUED, 0)


async def _succeed_running(db: Database, now: datetime, running: JobRecord) -> None:
    async with db.transaction() as conn:
        await succeed_attempt(conn, guard(running), b"", now, "executor:ex-1")


# --- delete -----------------------------------------------------------------------------------


async def test_delete_is_refused_while_jobs_wait_for_the_job(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    a, b = await submit(store, now, work(ref="a"), work(depends_on_refs=("a",)))
    with pytest.raises(FailedPrecondition, match="waiting for it"):
        await store.delete(guard(a))
    assert await state_of(store, a.id) == (JobState.QUEUED, 0)
    # A dependent may go; then the dependency may.
    await store.delete(guard(b))
    await store.delete(guard(a))
    assert await count(db, "jobs") == 0


async def test_a_succeeded_dependency_may_be_deleted(store: JobStore, db: Database) -> None:
    now = datetime.now(UTC)
    a, b, c = await submit(
        store, now, work(ref="a"), work(ref="b"), work(depends_on_refs=("a", "b"))
    )
    await succeed(db, now, a.id)
    await store.delete(guard(await store.get(TENANT, a.id)))
    assert (await store.get_with_dependencies(TENANT, c.id))[1] == [
        Dependency(b.id, JobState.QUEUED)
    ]
    await succeed(db, now, b.id)
    assert await state_of(store, c.id) == (JobState.QUEUED, 0)


async def test_delete_guard_still_applies(store: JobStore) -> None:
    now = datetime.now(UTC)
    [a] = await submit(store, now, work())
    with pytest.raises(ConcurrentModification):
        await store.delete(Guard(TENANT, a.id, JobState.QUEUED, 7))
