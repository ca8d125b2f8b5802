"""Hot paths of the store over real PostgreSQL: the bounded running count of a QUEUED job's
waiting reason, the claim's order kept by its split parts, GetJobStatus's single read, and the
plans (EXPLAIN (FORMAT JSON), after ANALYZE, on tables with enough rows) of the claim, the lease
rescue, the timeout backstop and the waiting facts: each reads its partial index in order or by
range, and nothing sorts the whole QUEUED or RUNNING set."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.jobs import Dependency
from scheduler.domain.queues import QueueSettings
from scheduler.domain.states import JobState
from scheduler.domain.validation import JobSpecInput, validate_batch
from scheduler.domain.waiting import ExecutorView, WaitingReason, reason_of, waiting_reason
from scheduler.store import attempts, queues
from scheduler.store.attempts import claim_jobs, rescue_expired_leases, rescue_timed_out
from scheduler.store.database import Database
from scheduler.store.jobs import JobStore
from scheduler.store.queues import QueueReads

TENANT = "default"
LEASE = timedelta(seconds=30)

# Bulk rows in one statement each. :offset keeps the ids of several calls apart; md5 gives ids
# in no particular order, like the scheduler's random UUIDs.
_BULK = """
INSERT INTO jobs (id, tenant, queue, type, priority, state, attempt, max_attempts, run_at,
                  created_at, started_at, finished_at, lease_expires_at, timeout, executor)
SELECT CAST(md5(CAST(g + :offset AS text)) AS uuid), :tenant,
       (ARRAY['default', 'default', 'default', 'mail', 'reports'])[1 + g % 5],
       (ARRAY['work', 'work', 'other'])[1 + g % 3], (g * 7) % 101, CAST(:state AS job_state),
       CASE WHEN :state = 'queued' THEN 0 ELSE 1 END, 3,
       CAST(:now AS timestamptz) - (g % 240) * interval '1 second',
       CAST(:now AS timestamptz) - interval '10 minutes',
       CASE WHEN :state <> 'queued' THEN CAST(:now AS timestamptz) - (g % 600) * interval '1 second'
       END,
       CASE WHEN :state = 'succeeded' THEN CAST(:now AS timestamptz) END,
       CASE WHEN :state = 'running'
            THEN CAST(:now AS timestamptz) + (g % 997) * interval '30 milliseconds' END,
       CASE WHEN :state = 'running' AND g % 2 = 0 THEN interval '1 hour' END,
       CASE WHEN :state = 'running' THEN 'ex-' || (g % 50) END
FROM generate_series(1, :count) AS g
"""


async def bulk(db: Database, state: str, count: int, now: datetime, offset: int) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text(_BULK),
            {"tenant": TENANT, "state": state, "count": count, "now": now, "offset": offset},
        )


async def set_queue(db: Database, name: str, *, max_concurrency: int | None) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text("""
            INSERT INTO queues (tenant, name, updated_at, max_concurrency)
            VALUES (:tenant, :name, now(), :limit)
            ON CONFLICT (tenant, name) DO UPDATE SET max_concurrency = :limit
            """),
            {"tenant": TENANT, "name": name, "limit": max_concurrency},
        )


async def populate(db: Database, now: datetime) -> None:
    """20,000 QUEUED jobs, 10,000 RUNNING ones (half with a timeout, none of them due; leases
    spread, none expired), 20,000 finished ones; the queue `reports` limited, with free slots."""
    await bulk(db, "succeeded", 20_000, now, 0)
    await bulk(db, "running", 10_000, now, 100_000)
    await bulk(db, "queued", 20_000, now, 200_000)
    await set_queue(db, "reports", max_concurrency=5_000)
    async with db.transaction() as conn:
        await conn.execute(text("ANALYZE jobs"))
        await conn.execute(text("ANALYZE queues"))


# --- plans ------------------------------------------------------------------------------------


def nodes(plan: dict[str, Any], *, init_plans: bool = True) -> Iterator[dict[str, Any]]:
    """The node and every node below it; without `init_plans`, not the CTEs and subplans
    attached to it (whose rows do not flow into it)."""
    yield plan
    for child in plan.get("Plans", []):
        if not init_plans and child.get("Parent Relationship") in ("InitPlan", "SubPlan"):
            continue
        yield from nodes(child, init_plans=init_plans)


def subplan(plan: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [n for n in nodes(plan) if n.get("Subplan Name") == name]
    return found


def jobs_scans(plan: dict[str, Any], *, init_plans: bool = True) -> list[dict[str, Any]]:
    return [n for n in nodes(plan, init_plans=init_plans) if n.get("Relation Name") == "jobs"]


def index_names(plan: dict[str, Any]) -> set[str]:
    """The indexes read below `plan` (bitmap index scans included)."""
    return {n["Index Name"] for n in nodes(plan) if "Index Name" in n}


def sorts_over_jobs(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The Sort nodes whose input scans the jobs table (sorts of a few CTE rows are fine)."""
    found = []
    for node in nodes(plan):
        if node["Node Type"] == "Sort":
            below = [
                n
                for child in node.get("Plans", [])
                if child.get("Parent Relationship") not in ("InitPlan", "SubPlan")
                for n in nodes(child, init_plans=False)
            ]
            if any(n.get("Relation Name") == "jobs" for n in below):
                found.append(node)
    return found


async def explain(conn: AsyncConnection, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    result = await conn.execute(text("EXPLAIN (FORMAT JSON) " + sql), params)
    value = result.scalar_one()
    document = json.loads(value) if isinstance(value, str) else value
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


class Explaining:
    """Stands in for a connection: the statement `match` picks is explained (not run) and
    answers no rows; the others run."""

    def __init__(self, conn: AsyncConnection, match: Callable[[str], bool]) -> None:
        self.conn = conn
        self.match = match
        self.plans: list[dict[str, Any]] = []

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        if self.match(str(statement)):
            self.plans.append(await explain(self.conn, str(statement), params or {}))
            return await self.conn.execute(text("SELECT 1 WHERE false"))
        return await self.conn.execute(statement, params or {})


async def claim_plan(db: Database, now: datetime, **kwargs: Any) -> dict[str, Any]:
    async with db.transaction() as conn:
        spy = Explaining(conn, lambda sql: "claimed AS" in sql)
        options: dict[str, Any] = {
            "executor": "ex-1",
            "job_types": ["work"],
            "queues": [],
            "limit": 100,
            "lease": LEASE,
            "now": now,
        }
        options.update(kwargs)
        assert await claim_jobs(spy, **options) == []  # type: ignore[arg-type]
    [plan] = spy.plans
    return plan


async def rescue_plan(db: Database, now: datetime, kind: str) -> dict[str, Any]:
    async with db.transaction() as conn:
        spy = Explaining(conn, lambda sql: "FOR UPDATE SKIP LOCKED" in sql)
        if kind == "lease":
            assert await rescue_expired_leases(spy, now) == []  # type: ignore[arg-type]
        else:
            assert await rescue_timed_out(spy, now, timedelta(seconds=10)) == []  # type: ignore[arg-type]
    [plan] = spy.plans
    return plan


async def test_the_claim_reads_its_indexes_in_order_and_sorts_no_queued_rows(db: Database) -> None:
    now = datetime.now(UTC)
    await populate(db, now)
    for claimed_at, starved in ((now, False), (now + timedelta(hours=1), True)):
        plan = await claim_plan(db, claimed_at)
        # In priority order: a LIMIT over an ordered scan of QUEUED jobs, nothing sorted.
        unlimited = subplan(plan, "CTE part0")
        assert index_names(unlimited) == {"ix_jobs_claim_priority"}
        assert {n["Node Type"] for n in jobs_scans(unlimited)} == {"Index Scan"}
        assert sorts_over_jobs(unlimited) == []
        limited = subplan(plan, "CTE limited0_priority")
        assert index_names(limited) == {"ix_jobs_claim"}
        assert {n["Node Type"] for n in jobs_scans(limited)} == {"Index Scan"}
        assert sorts_over_jobs(limited) == []
        # The starved ones: the range of ix_jobs_claim_starved up to the starvation bound (empty
        # while nothing starves: the planner may then sort that empty range; once many starve,
        # it is read in order too).
        for name in ("CTE part1", "CTE limited0_starved"):
            part = subplan(plan, name)
            assert index_names(part) == {"ix_jobs_claim_starved"}, name
            conds = [n.get("Index Cond", "") for n in nodes(part)]
            assert any("run_at <=" in cond for cond in conds), (name, conds)
            if starved:
                assert sorts_over_jobs(part) == [], name
        # Nothing reads the whole QUEUED set: no scan, and no bitmap but of the primary key (the
        # UPDATE finding the chosen rows) or of the starved range checked above.
        assert all(n["Node Type"] != "Seq Scan" for n in jobs_scans(plan))
        bitmaps = [n for n in nodes(plan) if n["Node Type"] == "Bitmap Index Scan"]
        assert {n["Index Name"] for n in bitmaps} <= {"pk_jobs", "ix_jobs_claim_starved"}
    # An executor of some queues only: no sort of the queued rows in priority order either.
    plan = await claim_plan(db, now, queues=["mail", "reports"])
    assert sorts_over_jobs(subplan(plan, "CTE part0")) == []


async def test_the_claim_reads_its_index_in_order_with_statistics_of_an_empty_table(
    db: Database,
) -> None:
    """A burst of submits into a table last analyzed while empty (a new database; autoanalyze
    comes later): the planner expects a few QUEUED rows, and would read them all through a
    bitmap and sort them. The claim still reads ix_jobs_claim_priority in order."""
    async with db.read() as conn:
        await conn.execute(text("VACUUM ANALYZE jobs"))
    now = datetime.now(UTC)
    await bulk(db, "queued", 20_000, now, 0)
    plan = await claim_plan(db, now)
    unlimited = subplan(plan, "CTE part0")
    assert {n.get("Index Name") for n in jobs_scans(unlimited)} == {"ix_jobs_claim_priority"}
    assert {n["Node Type"] for n in jobs_scans(unlimited)} == {"Index Scan"}
    assert sorts_over_jobs(unlimited) == []
    assert all(n["Node Type"] != "Bitmap Index Scan" for n in nodes(plan))


async def test_the_rescues_read_only_due_rows_through_their_indexes(db: Database) -> None:
    now = datetime.now(UTC)
    await populate(db, now)
    for kind, index in (("lease", "ix_jobs_lease_expiry"), ("timeout", "ix_jobs_timeout_deadline")):
        plan = await rescue_plan(db, now, kind)
        scans = jobs_scans(plan)
        assert scans, kind
        # A range of the index (Index Cond), not a filter over every RUNNING row.
        assert index_names(plan) == {index}, kind
        for scan in scans:
            assert scan["Node Type"] in ("Index Scan", "Bitmap Heap Scan"), (kind, scan)
            assert "Filter" not in scan or "timezone" not in scan["Filter"], (kind, scan)
        conds = [n.get("Index Cond", "") for n in nodes(plan)]
        column = "lease_expires_at" if kind == "lease" else "timezone"
        assert any(column in cond for cond in conds), (kind, conds)


async def test_the_waiting_facts_count_through_the_running_index_and_stop_at_the_limit(
    db: Database,
) -> None:
    now = datetime.now(UTC)
    await populate(db, now)
    async with db.read() as conn:
        plan = await explain(
            conn,
            str(queues._WAITING_FACTS),
            {"tenant": TENANT, "name": "reports", "live_since": now},
        )
    counting = [n for n in nodes(plan) if n["Node Type"] == "Limit"]
    assert counting, plan
    assert index_names(counting[0]) == {"ix_jobs_running_queue"}
    assert all(n["Node Type"] != "Seq Scan" for n in jobs_scans(plan))


# --- semantics --------------------------------------------------------------------------------


async def run_jobs(db: Database, queue: str, count: int, now: datetime) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            text("""
            INSERT INTO jobs (id, tenant, queue, type, priority, state, attempt, max_attempts,
                              run_at, started_at, lease_expires_at, executor)
            SELECT gen_random_uuid(), :tenant, :queue, 'work', 50, 'running', 1, 3, :now, :now,
                   CAST(:now AS timestamptz) + interval '30 seconds', 'ex-1'
            FROM generate_series(1, :count)
            """),
            {"tenant": TENANT, "queue": queue, "count": count, "now": now},
        )


async def test_a_limited_queue_is_at_its_limit_only_when_its_running_jobs_reach_it(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    reads = QueueReads(db, timedelta(seconds=15))
    [job] = [
        s.job
        for s in await store.submit(
            TENANT, validate_batch([JobSpecInput(type="work", queue="limited")], now)
        )
    ]
    await set_queue(db, "limited", max_concurrency=2)

    async def reason() -> tuple[int | None, WaitingReason | None, str]:
        facts = await reads.waiting_facts(TENANT, "limited", now)
        waiting = reason_of(job, facts.settings, facts.running, facts.executors)
        return facts.running, waiting.reason, waiting.detail

    assert await reason() == (
        0,
        WaitingReason.NO_EXECUTOR_FOR_TYPE,
        "no connected executor runs work jobs of queue limited",
    )
    await run_jobs(db, "limited", 1, now)
    assert (await reason())[:2] == (1, WaitingReason.NO_EXECUTOR_FOR_TYPE)
    await run_jobs(db, "limited", 1, now)
    assert await reason() == (
        2,
        WaitingReason.QUEUE_AT_CONCURRENCY_LIMIT,
        "2 of at most 2 jobs of queue limited are running",
    )
    # Over the limit (it was lowered while they ran): counted up to limit + 1 only, and shown
    # as "more than" the limit, never as a wrong number.
    await run_jobs(db, "limited", 40, now)
    assert await reason() == (
        3,
        WaitingReason.QUEUE_AT_CONCURRENCY_LIMIT,
        "more than 2 of at most 2 jobs of queue limited are running",
    )
    # Raised above the running jobs: not at the limit any more.
    await set_queue(db, "limited", max_concurrency=100)
    assert (await reason())[:2] == (42, WaitingReason.NO_EXECUTOR_FOR_TYPE)


async def test_an_unlimited_queue_counts_nothing_and_keeps_its_waiting_reasons(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    reads = QueueReads(db, timedelta(seconds=15))
    [job] = [
        s.job for s in await store.submit(TENANT, validate_batch([JobSpecInput(type="work")], now))
    ]
    await run_jobs(db, job.queue, 25, now)
    for configured in (False, True):  # no settings row, then one without a limit
        facts = await reads.waiting_facts(TENANT, job.queue, now)
        assert (facts.settings.updated_at is not None) is configured
        assert facts.running is None
        assert facts.settings.max_concurrency is None
        waiting = reason_of(job, facts.settings, facts.running, facts.executors)
        assert (waiting.reason, waiting.detail) == (
            WaitingReason.NO_EXECUTOR_FOR_TYPE,
            f"no connected executor runs work jobs of queue {job.queue}",
        )
        await set_queue(db, job.queue, max_concurrency=None)
    busy = ExecutorView(job_types=("work",), queues=(), capacity=1, running=1)
    free = ExecutorView(job_types=("work",), queues=(), capacity=2, running=1)
    settings = QueueSettings(name=job.queue)
    assert reason_of(job, settings, None, [busy]).reason is WaitingReason.NO_FREE_CAPACITY
    assert reason_of(job, settings, None, [busy, free]).detail == "being dispatched"
    # The exact counts ListQueues passes still decide alike.
    limited = QueueSettings(name=job.queue, max_concurrency=3)
    for running, expected in ((2, None), (3, "3 of at most 3"), (7, "more than 3 of at most 3")):
        waiting = waiting_reason(
            state=JobState.QUEUED,
            queue=job.queue,
            job_type="work",
            settings=limited,
            running_in_queue=running,
            executors=[free],
        )
        assert (waiting.detail if expected else None) == (
            f"{expected} jobs of queue {job.queue} are running" if expected else None
        )


async def queued_jobs(
    db: Database, now: datetime, *jobs: tuple[str, str, int, int]
) -> dict[str, str]:
    """QUEUED jobs of type work, each (name, queue, priority, age in seconds of its run_at);
    returns their names by id."""
    names: dict[str, str] = {}
    async with db.transaction() as conn:
        for name, queue, priority, age in jobs:
            row = await conn.execute(
                text("""
                INSERT INTO jobs (id, tenant, queue, type, priority, state, max_attempts, run_at)
                VALUES (gen_random_uuid(), :tenant, :queue, 'work', :priority, 'queued', 3,
                        CAST(:now AS timestamptz) - :age * interval '1 second')
                RETURNING id
                """),
                {"tenant": TENANT, "queue": queue, "priority": priority, "age": age, "now": now},
            )
            names[str(row.scalar_one())] = name
    return names


async def test_a_limited_queue_gets_its_starved_jobs_first_then_priority_within_its_slots(
    db: Database,
) -> None:
    now = datetime.now(UTC)
    await set_queue(db, "limited", max_concurrency=3)
    ids = await queued_jobs(
        db,
        now,
        ("old_low", "limited", 10, 600),
        ("older_low", "limited", 5, 900),
        ("fresh_high", "limited", 90, 10),
        ("fresh_mid", "limited", 50, 10),
        ("fresh_low", "limited", 20, 10),
        ("free_high", "free", 80, 10),
        ("free_old", "free", 1, 1200),
    )
    async with db.transaction() as conn:
        claimed = await claim_jobs(
            conn, executor="ex-1", job_types=["work"], queues=[], limit=10, lease=LEASE, now=now
        )
    # The limited queue: its 3 slots to its two starved jobs (oldest first) and its best fresh
    # one; the free queue: all of it. Returned in priority order.
    assert [ids[j.id] for j in claimed] == [
        "fresh_high",
        "free_high",
        "old_low",
        "older_low",
        "free_old",
    ]
    async with db.transaction() as conn:
        ranked = await claim_jobs(
            conn, executor="ex-2", job_types=["work"], queues=[], limit=10, lease=LEASE, now=now
        )
    assert ranked == []  # the limit holds: 3 running


async def test_the_claim_with_a_small_limit_takes_the_starved_of_every_queue_first(
    db: Database,
) -> None:
    now = datetime.now(UTC)
    await set_queue(db, "limited", max_concurrency=5)
    names = await queued_jobs(
        db,
        now,
        ("limited_starved", "limited", 0, 1000),
        ("limited_fresh", "limited", 100, 1),
        ("free_starved", "free", 0, 700),
        ("free_fresh", "free", 99, 1),
    )
    taken: list[str] = []
    for _ in range(4):
        async with db.transaction() as conn:
            [job] = await claim_jobs(
                conn, executor="ex-1", job_types=["work"], queues=[], limit=1, lease=LEASE, now=now
            )
        taken.append(names[job.id])
    assert taken == ["limited_starved", "free_starved", "limited_fresh", "free_fresh"]


async def test_get_job_status_reads_the_job_and_its_dependencies_at_once(
    store: JobStore, db: Database
) -> None:
    now = datetime.now(UTC)
    [first] = [
        s.job for s in await store.submit(TENANT, validate_batch([JobSpecInput(type="a")], now))
    ]
    second, third = [
        s.job
        for s in await store.submit(
            TENANT,
            validate_batch(
                [
                    JobSpecInput(type="b", ref="b", depends_on=(first.id,)),
                    JobSpecInput(type="c", depends_on=(first.id,), depends_on_refs=("b",)),
                ],
                now,
            ),
        )
    ]
    expected = {
        first.id: [],
        second.id: [Dependency(first.id, JobState.QUEUED)],
        # In the dependencies' creation order.
        third.id: [Dependency(first.id, JobState.QUEUED), Dependency(second.id, JobState.WAITING)],
    }
    for job_id, dependencies_expected in expected.items():
        job, dependencies, events = await store.get_with_dependencies(TENANT, job_id)
        assert job == await store.get(TENANT, job_id)
        assert dependencies == dependencies_expected
        assert events == []
        job, dependencies, events = await store.get_with_dependencies(TENANT, job_id, events=True)
        assert (job, events) == await store.get_with_events(TENANT, job_id)
        assert dependencies == dependencies_expected


def test_the_backstop_deadline_is_the_index_expression() -> None:
    # The predicate must be written as the index's expression, or the index is not used.
    select, update = attempts._STATEMENTS["timeout"]
    for statement in (select, update):
        assert "timezone('UTC', timezone('UTC', started_at) + timeout)" in str(statement)


async def test_the_claim_of_an_executor_bound_to_tenants_keeps_its_ordered_scans(
    db: Database,
) -> None:
    """An executor credential's tenants are one more predicate (tenant = ANY(...)) on the same
    ordered index scans, not another statement or a sort of the queued rows."""
    now = datetime.now(UTC)
    await populate(db, now)
    plan = await claim_plan(db, now, tenants=[TENANT, "other"])
    for name, index in (
        ("CTE part0", "ix_jobs_claim_priority"),
        ("CTE limited0_priority", "ix_jobs_claim"),
    ):
        part = subplan(plan, name)
        assert index_names(part) == {index}, name
        assert {n["Node Type"] for n in jobs_scans(part)} == {"Index Scan"}, name
        assert sorts_over_jobs(part) == [], name
        filters = " ".join(n.get("Filter", "") for n in jobs_scans(part))
        assert "tenant = ANY" in filters, (name, filters)
    assert all(n["Node Type"] != "Seq Scan" for n in jobs_scans(plan))
