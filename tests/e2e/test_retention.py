"""Retention through the scheduler: a queue's retention set, shown and cleared over QueueService
(bad values refused, nothing changed), and replicas whose leader, with the injected clock,
deletes the finished jobs past their queue's retention, else the server's default, and counts
them; stopping leaves no sweep task behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text

from jobsched.client import JobschedClient
from jobsched.errors import JobNotFoundError
from jobsched.v1 import job_pb2, queue_service_pb2, queue_service_pb2_grpc
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store.database import Database
from tests.e2e.test_job_service import invalid
from tests.helpers import assert_eventually

DAY = timedelta(days=1)


class OffsetClock:
    """Real time moved by `offset`: time flows, and a test can jump it ahead."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def queues(channel: grpc.aio.Channel) -> Any:
    return queue_service_pb2_grpc.QueueServiceStub(channel)


@pytest.fixture
async def client(scheduler: SchedulerServer) -> AsyncIterator[JobschedClient]:
    async with JobschedClient(scheduler.address, timeout=10) as c:
        yield c


def update(stub: Any, mask: list[str] | None = None, name: str = "mail", **fields: Any) -> Any:
    request = queue_service_pb2.UpdateQueueRequest(
        queue=queue_service_pb2.Queue(name=name, **fields)
    )
    if mask is not None:
        request.update_mask.CopyFrom(FieldMask(paths=mask))
    return stub.UpdateQueue(request)


async def stored_retention(db: Database, name: str = "mail") -> timedelta | None:
    async with db.read() as conn:
        value: timedelta | None = await conn.scalar(
            text("SELECT retention FROM queues WHERE name = :name"), {"name": name}
        )
    return value


async def test_a_queue_retention_is_set_shown_listed_and_cleared(
    queues: Any, client: JobschedClient, db: Database
) -> None:
    assert not (await client.get_queue("mail")).HasField("retention")

    # An empty mask changes what the message gives: the retention, here.
    week = (await update(queues, retention=Duration(seconds=7 * 86400))).queue
    assert week.retention.ToTimedelta() == 7 * DAY
    assert (await client.get_queue("Mail")).retention.ToTimedelta() == 7 * DAY
    [listed] = [q for q in await client.queues() if q.name == "mail"]
    assert listed.retention.ToTimedelta() == 7 * DAY
    assert await stored_retention(db) == 7 * DAY
    # A waiting job's reason reads the queue's settings too (as JSON, another parser).
    waiting = await client.get((await client.submit("work", queue="mail")).id)
    assert waiting.waiting_reason == job_pb2.WAITING_REASON_NO_EXECUTOR_FOR_TYPE

    # Other settings leave it alone, with a mask or without one.
    await update(queues, ["max_concurrency"], max_concurrency=2)
    await update(queues, default_max_attempts=4)
    assert (await client.get_queue("mail")).retention.ToTimedelta() == 7 * DAY

    forever = await client.set_queue_retention("mail", timedelta(0))
    assert forever.HasField("retention")  # zero is a value: keep forever
    assert forever.retention.ToTimedelta() == timedelta(0)
    assert await stored_retention(db) == timedelta(0)

    cleared = await client.set_queue_retention("mail", None)
    assert not cleared.HasField("retention")
    assert cleared.max_concurrency == 2
    assert await stored_retention(db) is None
    # The path with the field unset clears it through the raw API too.
    await update(queues, retention=Duration(seconds=3600))
    assert not (await update(queues, ["retention"])).queue.HasField("retention")


@pytest.mark.parametrize(
    ("duration", "mask"),
    [
        pytest.param(Duration(seconds=-1), None, id="negative"),
        pytest.param(Duration(seconds=0, nanos=-1), ["retention"], id="negative-nanos"),
        pytest.param(Duration(seconds=0, nanos=1), ["retention"], id="below-a-microsecond"),
        pytest.param(Duration(seconds=36_501 * 86400), ["retention"], id="beyond-36500-days"),
        pytest.param(Duration(seconds=1, nanos=-5), ["retention"], id="signs-disagree"),
        pytest.param(Duration(seconds=-3600), ["max_concurrency", "retention"], id="with-more"),
    ],
)
async def test_bad_retentions_are_invalid_argument_naming_the_field_and_change_nothing(
    queues: Any, db: Database, duration: Duration, mask: list[str] | None
) -> None:
    before = (await update(queues, retention=Duration(seconds=86400))).queue
    assert await invalid(update(queues, mask, retention=duration, max_concurrency=5)) == [
        "queue.retention"
    ]
    after = (await queues.GetQueue(queue_service_pb2.GetQueueRequest(name="mail"))).queue
    assert after == before  # the update time included: nothing was written
    assert await stored_retention(db) == DAY


async def test_a_retention_sub_path_is_not_a_mask_path(queues: Any) -> None:
    assert await invalid(update(queues, ["retention.seconds"], retention=Duration(seconds=1))) == [
        "update_mask.paths[0]"
    ]


class Replicas:
    """Two replicas with one clock and a retention of one hour by default."""

    def __init__(self, db: Database) -> None:
        self.clock = OffsetClock()
        settings = ServerSettings(
            listen="127.0.0.1:0",
            shutdown_grace=1.0,
            leader_tick=0.1,
            leader_renew_timeout=1.0,
            retention=timedelta(hours=1),
        )
        self.running = [SchedulerServer(db, settings, self.clock) for _ in range(2)]

    async def leader(self) -> SchedulerServer:
        async def one_leads() -> SchedulerServer:
            leading = [s for s in self.running if s.leader.is_leader]
            assert len(leading) == 1
            return leading[0]

        return await assert_eventually(one_leads)

    async def stop(self, server: SchedulerServer) -> None:
        self.running.remove(server)
        await server.stop()


@pytest.fixture
async def replicas(db: Database) -> AsyncIterator[Replicas]:
    started = Replicas(db)
    for server in started.running:
        await server.start()
    try:
        yield started
    finally:
        for server in list(started.running):
            await started.stop(server)


async def test_the_leader_deletes_finished_jobs_past_their_retention_and_counts_them(
    replicas: Replicas, db: Database
) -> None:
    leader = await replicas.leader()
    [follower] = [s for s in replicas.running if s is not leader]
    async with JobschedClient(follower.address, timeout=10) as client:
        await client.set_queue_retention("week", 7 * DAY)
        await client.set_queue_retention("month", 30 * DAY)
        await client.set_queue_retention("forever", timedelta(0))
        await client.set_queue_retention("cleared", timedelta(0))
        await client.set_queue_retention("cleared", None)  # back to the default: one hour

        async def finished(queue: str) -> str:
            job = await client.submit("work", queue=queue)
            await client.cancel(job.id, "done with it")
            return job.id

        gone = {await finished(q) for q in ("default", "week", "cleared")}
        kept = {await finished(q) for q in ("month", "forever")}
        kept.add((await client.submit("work")).id)  # QUEUED: not finished, never deleted

        # Eight days later on the replicas' clock, the leader goes. Its sweep runs once a
        # minute, so it deleted nothing; the replica that becomes the leader sweeps at once.
        replicas.clock.offset = 8 * DAY
        await replicas.stop(leader)
        assert await replicas.leader() is follower

        async def swept() -> None:
            assert follower.retention.deleted_total == len(gone)

        await assert_eventually(swept)
        async with db.read() as conn:
            left = {str(r[0]) for r in await conn.execute(text("SELECT id FROM jobs"))}
            events = await conn.scalar(
                text("SELECT count(*) FROM job_events WHERE job_id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": list(gone)},
            )
        assert left == kept
        assert events == 0
        for job_id in gone:
            with pytest.raises(JobNotFoundError):
                await client.get(job_id)
        assert leader.retention.deleted_total == 0

    await replicas.stop(follower)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "retention-sweep"]
