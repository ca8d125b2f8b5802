"""Fault tests: schedulers and executors as subprocesses, faults injected the way crashes and
operators cause them, and the "nothing lost" invariants checked after each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from jobsched.client import JobschedClient
from jobsched.errors import JobschedError
from jobsched.v1 import job_pb2
from scheduler.store import embedded, migrate
from scheduler.store.attempts import claim_jobs
from scheduler.store.database import Database
from tests.faults.harness import (
    TAKEOVER_BOUND,
    Cluster,
    Scheduler,
    check_nothing_lost,
    check_one_leader_at_a_time,
    cluster_status,
    leader_epoch,
    pg_ctl,
    wait_health,
)
from tests.helpers import assert_eventually


async def the_leader(schedulers: list[Scheduler], within: float = 10.0) -> tuple[Scheduler, int]:
    """The scheduler that leads, according to GetClusterStatus asked of every live one."""
    found: list[tuple[Scheduler, int]] = []

    async def one_leads() -> None:
        answers = []
        for scheduler in schedulers:
            status = await cluster_status(scheduler.address)
            by_address = {r.address: r.id for r in status.replicas}
            leader = [s for s in schedulers if by_address.get(s.address) == status.leader_id]
            answers.append((leader[0] if leader else None, status.epoch))
        assert answers[0][0] is not None
        assert all(a == answers[0] for a in answers), answers
        found[:] = [(answers[0][0], answers[0][1])]

    await assert_eventually(one_leads, within=within, interval=0.05)
    return found[0]


async def ghost_job(db: Database, client: JobschedClient, lease: float = 0.2) -> str:
    """A RUNNING job whose executor is gone: only lease rescue can move it on."""
    job = await client.submit("ghost-work")
    async with db.transaction() as conn:
        claimed = await claim_jobs(
            conn,
            executor="ghost",
            job_types=["ghost-work"],
            queues=[],
            limit=1,
            lease=timedelta(seconds=lease),
            now=datetime.now(UTC),
        )
    assert [j.id for j in claimed] == [job.id]
    return str(job.id)


async def rescued_by(db: Database, job_id: str) -> str:
    async with db.read() as conn:
        actor = (
            await conn.execute(
                text(
                    "SELECT actor FROM job_events WHERE job_id = :id "
                    "AND reason = 'failed: lease expired'"
                ),
                {"id": job_id},
            )
        ).scalar_one_or_none()
    assert actor is not None, f"job {job_id} not rescued yet"
    return str(actor)


async def ghosts_while(
    db: Database, client: JobschedClient, stop: asyncio.Event, made: list[str]
) -> None:
    """Keep creating ghost jobs so that any replica acting as leader has something to rescue."""
    while not stop.is_set():
        made.append(await ghost_job(db, client))
        await asyncio.sleep(0.05)


async def test_a_killed_leader_is_replaced_within_the_bound_and_rescue_goes_on(
    cluster: Cluster, db: Database
) -> None:
    schedulers = [await cluster.scheduler("s1"), await cluster.scheduler("s2")]
    leader, epoch = await the_leader(schedulers)
    survivor = next(s for s in schedulers if s is not leader)

    leader.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    new_leader, new_epoch = await the_leader([survivor], within=TAKEOVER_BOUND + 5)
    took = time.monotonic() - killed_at
    assert new_leader is survivor
    assert new_epoch == epoch + 1
    assert took < TAKEOVER_BOUND, f"takeover took {took:.2f}s"

    async with JobschedClient(survivor.address) as client:
        job_id = await ghost_job(db, client)

        async def rescued() -> None:
            assert (await rescued_by(db, job_id)).endswith(f"@{new_epoch}")

        await assert_eventually(rescued, within=10)
    await check_nothing_lost(db, [job_id])
    await check_one_leader_at_a_time(db)


async def test_a_frozen_leader_is_deposed_and_does_not_write_after_it_thaws(
    cluster: Cluster, db: Database
) -> None:
    schedulers = [await cluster.scheduler("s1"), await cluster.scheduler("s2")]
    leader, epoch = await the_leader(schedulers)
    follower = next(s for s in schedulers if s is not leader)
    made: list[str] = []
    stop = asyncio.Event()
    async with JobschedClient(follower.address) as client:
        ghosts = asyncio.create_task(ghosts_while(db, client, stop, made))
        try:
            leader.signal(signal.SIGSTOP)
            # Past its renew deadline (1 s): the follower takes over with a new epoch.
            new_leader, new_epoch = await the_leader([follower], within=TAKEOVER_BOUND + 5)
            assert new_leader is follower
            assert new_epoch > epoch
            leader.signal(signal.SIGCONT)

            # Thawed, the old leader steps down and stays a follower; rescue goes on under the
            # new epoch only.
            async def settled() -> None:
                assert await leader_epoch(db) == (
                    (await cluster_status(follower.address)).leader_id,
                    new_epoch,
                )
                assert (await the_leader(schedulers))[0] is follower

            await assert_eventually(settled, within=10)
        finally:
            stop.set()
            await ghosts

        async def all_rescued() -> None:
            for job_id in made:
                await rescued_by(db, job_id)

        await assert_eventually(all_rescued, within=15)
    await check_one_leader_at_a_time(db)
    await check_nothing_lost(db, made)


async def test_a_killed_lock_connection_never_gives_two_acting_leaders(
    cluster: Cluster, db: Database
) -> None:
    schedulers = [await cluster.scheduler("s1"), await cluster.scheduler("s2")]
    _, epoch = await the_leader(schedulers)
    made: list[str] = []
    stop = asyncio.Event()
    async with JobschedClient(schedulers[0].address) as client:
        ghosts = asyncio.create_task(ghosts_while(db, client, stop, made))
        try:
            for _ in range(3):  # three takeovers in a row, under rescue load
                async with db.read() as conn:
                    killed = await conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'jobsched-leader' "
                            "AND datname = current_database() "
                            "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
                        )
                    )
                    assert len(killed.all()) == 1

                async def moved_on(before: int = epoch) -> None:
                    assert (await leader_epoch(db))[1] > before

                await assert_eventually(moved_on, within=TAKEOVER_BOUND + 5)
                _, epoch = await the_leader(schedulers)
        finally:
            stop.set()
            await ghosts

        async def all_rescued() -> None:
            for job_id in made:
                await rescued_by(db, job_id)

        await assert_eventually(all_rescued, within=15)
    assert epoch >= 4
    await check_one_leader_at_a_time(db)
    await check_nothing_lost(db, made)


async def test_a_frozen_executors_job_runs_elsewhere_and_its_late_result_is_rejected(
    cluster: Cluster, db: Database
) -> None:
    scheduler = await cluster.scheduler("s1")
    first = await cluster.executor("exec-1", [scheduler.address], capacity=1)
    async with JobschedClient(scheduler.address) as client:

        async def connected() -> None:
            status = await cluster_status(scheduler.address)
            assert sum(len(r.executors) for r in status.replicas) == 1

        await assert_eventually(connected, within=20)
        job = await client.submit("sleep", payload={"seconds": 2})

        async def running_on_first() -> None:
            current = await client.get(job.id)
            assert current.state == job_pb2.JOB_STATE_RUNNING
            assert current.executor == "exec-1"

        await assert_eventually(running_on_first, within=10)
        first.signal(signal.SIGSTOP)
        await cluster.executor("exec-2", [scheduler.address], capacity=1)

        async def done_elsewhere() -> None:
            current = await client.get(job.id)
            assert current.state == job_pb2.JOB_STATE_SUCCEEDED
            assert current.executor == "exec-2"
            assert current.attempt == 2

        await assert_eventually(done_elsewhere, within=20)
        first.signal(signal.SIGCONT)

        async def rejected() -> None:
            events = []
            for line in first.log.read_text().splitlines():
                if line.startswith("{"):
                    events.append(json.loads(line).get("event"))
            assert "executor.result_rejected" in events

        await assert_eventually(rejected, within=10)
        final = await client.get(job.id)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED
        assert final.attempt == 2
    await check_nothing_lost(db, [job.id])


async def test_postgres_killed_and_restarted_under_load_loses_no_acknowledged_job(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "pg" / "data"
    pg = await asyncio.to_thread(embedded.start, data_dir, persistent=False, database="jobsched")
    url = pg.url("jobsched")
    await asyncio.to_thread(migrate.upgrade, url)
    db = Database.from_url(url, pool_size=2)
    cluster = Cluster(url, tmp_path)
    acknowledged: list[str] = []
    try:
        scheduler = await cluster.scheduler("s1")
        await cluster.executor("e1", [scheduler.address], capacity=20)
        async with JobschedClient(scheduler.address, timeout=5) as client:
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    try:
                        jobs = await client.submit_many([{"type": "noop"} for _ in range(10)])
                        acknowledged.extend(j.id for j in jobs)
                    except JobschedError:
                        await asyncio.sleep(0.1)  # not acknowledged: nothing to find later
                    await asyncio.sleep(0.02)

            async def more_than(count: int) -> None:
                assert len(acknowledged) > count

            submitter = asyncio.create_task(load())
            try:
                await assert_eventually(lambda: more_than(50), within=20)
                await asyncio.to_thread(pg_ctl, data_dir, "stop", "-m", "immediate")
                await wait_health(scheduler.address, serving=False)  # it saw the outage
                await asyncio.to_thread(
                    pg_ctl, data_dir, "-w", "-o", '-h ""', "-o", f"-k {pg.socket_dir}",
                    "-l", str(data_dir / "restart.log"), "start",
                )  # fmt: skip
                restarted = len(acknowledged)
                await assert_eventually(lambda: more_than(restarted + 50), within=30)
            finally:
                stop.set()
                await submitter

            async def all_done() -> None:
                async with db.read() as conn:
                    done = (
                        await conn.execute(
                            text(
                                "SELECT count(*) FROM jobs WHERE id = ANY(CAST(:ids AS uuid[])) "
                                "AND state = 'succeeded'"
                            ),
                            {"ids": acknowledged},
                        )
                    ).scalar_one()
                assert done == len(acknowledged)

            await assert_eventually(all_done, within=30)
            await check_nothing_lost(db, acknowledged)
            status = await cluster_status(scheduler.address)
            assert status.leader_id  # one leader afterwards
            assert [r.id for r in status.replicas if r.leader] == [status.leader_id]
    finally:
        await cluster.close()
        print(cluster.logs())
        await db.dispose()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pg_ctl, data_dir, "stop", "-m", "fast")


async def test_a_terminated_leader_resigns_at_once_and_exits_cleanly(
    cluster: Cluster, db: Database
) -> None:
    schedulers = [await cluster.scheduler("s1"), await cluster.scheduler("s2")]
    leader, epoch = await the_leader(schedulers)
    follower = next(s for s in schedulers if s is not leader)
    leader.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    new_leader, new_epoch = await the_leader([follower], within=5)
    took = time.monotonic() - stopped_at
    assert new_leader is follower
    assert new_epoch == epoch + 1
    # A resignation, not a timeout: well within the 2 s a frozen leader would cost.
    assert took < 1.5, f"takeover after SIGTERM took {took:.2f}s"
    assert leader.process is not None
    assert await asyncio.wait_for(leader.process.wait(), 10) == 0
