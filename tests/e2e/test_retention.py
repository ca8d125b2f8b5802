"""Retention through the scheduler: a queue's retention set, shown and cleared over QueueService
(bad values refused, nothing changed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text

from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2, queue_service_pb2, queue_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.e2e.test_job_service import invalid

DAY = timedelta(days=1)


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
