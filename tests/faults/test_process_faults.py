"""Fault catalogue cases with killed processes (tests/faults/CASES.md): an executor SIGKILLed
mid-job, a non-leader replica SIGKILLed under its executors, a scheduler killed during retry
backoff and while a DAG releases its dependents. Each ends with the invariant checker."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from sqlalchemy import text

from jobsched.client import JobschedClient, job_spec, make_retry_policy
from jobsched.v1 import job_pb2
from scheduler.store.database import Database
from tests.faults.harness import Cluster, Service, cluster_status
from tests.faults.invariants import Observed, assert_invariants
from tests.helpers import assert_eventually

pytestmark = pytest.mark.timeout(120)

SUCCEEDED = job_pb2.JOB_STATE_SUCCEEDED
RUNNING = job_pb2.JOB_STATE_RUNNING


async def executors_connected(address: str, n: int, within: float = 20) -> None:
    async def connected() -> None:
        status = await cluster_status(address)
        assert sum(len(r.executors) for r in status.replicas) == n

    await assert_eventually(connected, within=within)


async def states(db: Database, ids: list[str]) -> dict[str, tuple[str, int, str | None]]:
    async with db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT id::text, state::text, attempt, executor FROM jobs "
                "WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def all_end(db: Database, ids: list[str], state: str, within: float) -> None:
    async def ended() -> None:
        found = await states(db, ids)
        assert len(found) == len(ids)
        assert {s for s, _a, _e in found.values()} == {state}, found

    await assert_eventually(ended, within=within, interval=0.2)


async def test_1_an_executor_killed_mid_job_has_its_jobs_run_elsewhere(
    cluster: Cluster, db: Database
) -> None:
    scheduler = await cluster.scheduler("s1")
    doomed = await cluster.executor("doomed", [scheduler.address], 4)
    await cluster.executor("survivor", [scheduler.address], 4)
    await executors_connected(scheduler.address, 2)
    async with JobschedClient(scheduler.address) as client:
        jobs = await client.submit_many(
            [job_spec("sleep", payload={"seconds": 1.5}) for _ in range(16)]
        )
        ids = [j.id for j in jobs]

        async def doomed_runs_some() -> None:
            found = await states(db, ids)
            assert any(s == "running" and e == "doomed" for s, _a, e in found.values())

        await assert_eventually(doomed_runs_some, within=20, interval=0.05)
        running_there = [
            j
            for j, (s, _a, e) in (await states(db, ids)).items()
            if s == "running" and e == "doomed"
        ]
        doomed.signal(signal.SIGKILL)
        await all_end(db, ids, "succeeded", within=60)
    final = await states(db, ids)
    # The attempts the killed executor held were run again by the survivor.
    for job_id in running_there:
        state, attempt, executor = final[job_id]
        assert (state, executor) == ("succeeded", "survivor")
        assert attempt >= 2
    await assert_invariants(db, Observed(acknowledged=set(ids)))


async def test_11_a_killed_replica_s_executors_move_to_another_with_their_attempts(
    cluster: Cluster, db: Database
) -> None:
    # A lease long enough that only a lost re-attachment could make a job run twice.
    first = await cluster.scheduler("s1", "--lease", "20")
    second = await cluster.scheduler("s2", "--lease", "20")
    executors: list[Service] = [
        await cluster.executor(f"e{i}", [second.address, first.address], 2) for i in range(2)
    ]
    await executors_connected(second.address, 2)
    async with JobschedClient(f"{first.address},{second.address}") as client:
        jobs = await client.submit_many(
            [job_spec("sleep", payload={"seconds": 3}) for _ in range(4)]
        )
        ids = [j.id for j in jobs]

        async def all_running() -> None:
            assert {s for s, _a, _e in (await states(db, ids)).values()} == {"running"}

        await assert_eventually(all_running, within=20, interval=0.05)
        second.signal(signal.SIGKILL)
        await executors_connected(first.address, 2, within=20)
        await all_end(db, ids, "succeeded", within=40)
    final = await states(db, ids)
    # Re-attached, not re-run: the attempts that were running continued to their result.
    assert {a for _s, a, _e in final.values()} == {1}, final
    assert len(executors) == 2
    await assert_invariants(db, Observed(acknowledged=set(ids)))


async def test_21_a_restart_during_retry_backoff_keeps_every_attempt(
    cluster: Cluster, db: Database
) -> None:
    scheduler = await cluster.scheduler("s1")
    await cluster.executor("e1", [scheduler.address], 2, "--allow-command", "/*/false")
    await executors_connected(scheduler.address, 1)
    async with JobschedClient(scheduler.address) as client:
        job = await client.submit_job(
            job_spec(
                "command",
                payload={"argv": ["false"]},
                max_attempts=3,
                retry_policy=make_retry_policy(
                    initial_backoff=timedelta(seconds=2), backoff_multiplier=1.0, jitter=0.0
                ),
            )
        )
        job_id = job.job.id

        async def in_backoff() -> None:
            state, attempt, _e = (await states(db, [job_id]))[job_id]
            assert (state, attempt) == ("scheduled", 1)

        await assert_eventually(in_backoff, within=20, interval=0.05)
    await scheduler.stop()
    restarted = await cluster.scheduler("s1-again")
    await cluster.executor("e2", [restarted.address], 2, "--allow-command", "/*/false")
    await all_end(db, [job_id], "dead", within=40)
    state, attempt, _e = (await states(db, [job_id]))[job_id]
    assert (state, attempt) == ("dead", 3)
    await assert_invariants(db, Observed(acknowledged={job_id}))


async def test_20_a_scheduler_killed_while_a_dag_releases_dependents_runs_it_in_order(
    cluster: Cluster, db: Database
) -> None:
    scheduler = await cluster.scheduler("s1")
    await cluster.executor("e1", [scheduler.address], 8)
    await executors_connected(scheduler.address, 1)
    # Four layers of five; each job of a layer depends on every job of the layer before.
    specs = []
    for layer in range(4):
        for i in range(5):
            specs.append(
                job_spec(
                    "sleep",
                    payload={"seconds": 0.3},
                    ref=f"l{layer}-{i}",
                    depends_on_refs=[f"l{layer - 1}-{k}" for k in range(5)] if layer else [],
                )
            )
    async with JobschedClient(scheduler.address) as client:
        ids = [j.id for j in await client.submit_many(specs)]

    async def second_layer_started() -> None:
        found = await states(db, ids[5:10])
        assert any(s in {"running", "succeeded"} for s, _a, _e in found.values())

    await assert_eventually(second_layer_started, within=20, interval=0.02)
    scheduler.signal(signal.SIGKILL)
    restarted = await cluster.scheduler("s1-again")
    await cluster.executor("e2", [restarted.address], 8)
    await all_end(db, ids, "succeeded", within=60)
    await assert_invariants(db, Observed(acknowledged=set(ids)))
