"""Group commit of single submits (scheduler/store/submit_groups.py) against a real PostgreSQL:
concurrent submits share transactions, each caller still gets its own job or its own error, an
idle submit is written at once, and nothing unacknowledged is written."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from scheduler.domain.errors import IdempotencyKeyReused, Unavailable
from scheduler.domain.jobs import NewJob, Submitted
from scheduler.store.database import Database
from scheduler.store.jobs import JobStore
from scheduler.store.submit_groups import SubmitGroups
from tests.helpers import assert_eventually
from tests.integration.test_store import counts, new_job, scalar

TENANT = "acme"
NOW = datetime(2026, 12, 4, tzinfo=UTC)


class ObservedStore(JobStore):
    """The real store, recording each transaction's submits; `gate`, when set, holds every
    transaction until it is opened."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.groups: list[list[NewJob]] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def submit(
        self,
        tenant: str,
        jobs: Sequence[NewJob],
        actor: str = "client",
        *,
        fields: Sequence[str] | None = None,
    ) -> list[Submitted]:
        self.groups.append(list(jobs))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return await super().submit(tenant, jobs, actor, fields=fields)


async def waiting(groups: SubmitGroups, n: int) -> None:
    """Until `n` submits wait for a writer (the tasks that make them have run)."""

    async def joined() -> None:
        assert groups.waiting == n

    await assert_eventually(joined, within=5, interval=0.001)


@pytest.fixture
def store(db: Database) -> ObservedStore:
    return ObservedStore(db)


async def test_concurrent_submits_share_transactions_and_each_gets_its_own_job(
    db: Database, store: ObservedStore
) -> None:
    groups = SubmitGroups(store, writers=1)
    payloads = [f"job-{i}".encode() for i in range(60)]

    results = await asyncio.gather(
        *(groups.submit(TENANT, new_job(NOW, payload=p)) for p in payloads)
    )

    assert all(r.created for r in results)
    assert len({r.job.id for r in results}) == 60
    stored = {
        r.job.id: await scalar(db, "SELECT payload FROM jobs WHERE id = :id", id=r.job.id)
        for r in results
    }
    assert [stored[r.job.id] for r in results] == payloads  # each caller, its own job
    assert await counts(db) == (60, 60)
    # The first is written alone at once; the rest formed groups while it was written.
    assert len(store.groups[0]) == 1
    assert len(store.groups) < 60
    assert max(len(g) for g in store.groups) > 1
    assert groups.groups_written == len(store.groups)


async def test_an_idle_submit_is_written_at_once_alone(store: ObservedStore) -> None:
    groups = SubmitGroups(store)
    result = await asyncio.wait_for(groups.submit(TENANT, new_job(NOW)), timeout=10)
    assert result.created
    assert [len(g) for g in store.groups] == [1]


async def test_one_idempotency_key_is_never_twice_in_a_group(
    db: Database, store: ObservedStore
) -> None:
    groups = SubmitGroups(store, writers=1)
    results = await asyncio.gather(
        *(groups.submit(TENANT, new_job(NOW, key="order-7")) for _ in range(5))
    )

    assert len({r.job.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    for group in store.groups:
        keys = [j.idempotency_key for j in group]
        assert len(keys) == len(set(keys))
    assert await counts(db) == (1, 1)


async def test_a_reused_key_fails_only_its_own_caller(db: Database, store: ObservedStore) -> None:
    [first] = await JobStore(db).submit(TENANT, [new_job(NOW, key="k", payload=b"a")])
    groups = SubmitGroups(store, writers=1)
    store.gate = asyncio.Event()
    blocker = asyncio.create_task(groups.submit(TENANT, new_job(NOW, payload=b"first")))
    await store.entered.wait()  # the one writer is busy: what follows forms one group
    conflicting = asyncio.create_task(groups.submit(TENANT, new_job(NOW, key="k", payload=b"b")))
    others = [
        asyncio.create_task(groups.submit(TENANT, new_job(NOW, payload=f"o{i}".encode())))
        for i in range(10)
    ]
    await waiting(groups, 11)  # they joined the pending group
    store.gate.set()

    assert (await blocker).created
    with pytest.raises(IdempotencyKeyReused):
        await conflicting
    assert all(r.created for r in await asyncio.gather(*others))
    assert max(len(g) for g in store.groups) == 11  # they did share a transaction, which failed
    assert await scalar(db, "SELECT payload FROM jobs WHERE id = :id", id=first.job.id) == b"a"
    assert await counts(db) == (12, 12)


async def test_tenants_never_share_a_group(db: Database, store: ObservedStore) -> None:
    groups = SubmitGroups(store, writers=1)
    results = await asyncio.gather(
        *(groups.submit(("a" if i % 2 else "b"), new_job(NOW)) for i in range(20))
    )
    for i, result in enumerate(results):
        tenant = await scalar(db, "SELECT tenant FROM jobs WHERE id = :id", id=result.job.id)
        assert tenant == ("a" if i % 2 else "b")
    assert len(store.groups) >= 2


async def test_a_caller_gone_before_its_group_is_taken_writes_nothing(
    db: Database, store: ObservedStore
) -> None:
    groups = SubmitGroups(store, writers=1)
    store.gate = asyncio.Event()
    first = asyncio.create_task(groups.submit(TENANT, new_job(NOW)))
    await store.entered.wait()
    gone = asyncio.create_task(groups.submit(TENANT, new_job(NOW, payload=b"gone")))
    await waiting(groups, 1)
    gone.cancel()
    store.gate.set()
    assert (await first).created
    with pytest.raises(asyncio.CancelledError):
        await gone
    await groups.close()
    assert await counts(db) == (1, 1)
    assert len(store.groups) == 1


async def test_close_fails_pending_submits_and_refuses_new_ones(
    db: Database, store: ObservedStore
) -> None:
    groups = SubmitGroups(store, writers=1)
    store.gate = asyncio.Event()
    written = asyncio.create_task(groups.submit(TENANT, new_job(NOW)))
    await store.entered.wait()
    pending = asyncio.create_task(groups.submit(TENANT, new_job(NOW)))
    await waiting(groups, 1)
    closing = asyncio.create_task(groups.close())
    with pytest.raises(Unavailable):
        await pending
    store.gate.set()
    await closing
    assert (await written).created  # the group being written was finished, not abandoned
    with pytest.raises(Unavailable):
        await groups.submit(TENANT, new_job(NOW))
    assert await counts(db) == (1, 1)
