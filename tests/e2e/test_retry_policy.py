"""Retry policies over gRPC: a job's own policy decides its backoffs, a queue's settings fill in
what the job leaves unset (then the global defaults), and queue settings are read and changed
through QueueService with field masks; bad input changes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
)
from tests.scripted import ScriptedExecutor, connect, state_of

if TYPE_CHECKING:  # the async stubs exist only in the generated .pyi
    Stub = job_service_pb2_grpc.JobServiceAsyncStub
    QueueStub = queue_service_pb2_grpc.QueueServiceAsyncStub


def seconds(value: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=value))
    return d


@pytest.fixture
def queues(channel: grpc.aio.Channel) -> QueueStub:
    return queue_service_pb2_grpc.QueueServiceStub(channel)


async def submit(stub: Stub, **spec: object) -> job_pb2.Job:
    response = await stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="work", **spec))  # type: ignore[arg-type]
    )
    return response.job


async def fail(executor: ScriptedExecutor) -> pb.Assignment:
    assignment: pb.Assignment = await executor.next("assignment")
    executor.send(
        result=pb.JobResult(
            attempt=assignment.attempt, failure=pb.JobFailure(message="boom", retryable=True)
        )
    )
    assert (await executor.next("result_ack")).accepted
    return assignment


async def test_a_jobs_own_policy_decides_its_backoffs(
    jobs_stub: Stub, channel: grpc.aio.Channel, executors: list[ScriptedExecutor]
) -> None:
    policy = job_pb2.RetryPolicy(
        initial_backoff=seconds(0.2), backoff_multiplier=3, max_backoff=seconds(0.5), jitter=0
    )
    job = await submit(jobs_stub, retry_policy=policy, max_attempts=3)
    assert job.retry_policy == policy
    executor = await connect(channel, executors, "exec", 1)

    await fail(executor)
    first = await state_of(jobs_stub, job.id)
    assert first.state == job_pb2.JOB_STATE_SCHEDULED
    assert first.run_at.ToDatetime() - first.update_time.ToDatetime() == timedelta(seconds=0.2)

    await fail(executor)
    second = await state_of(jobs_stub, job.id)
    # 0.2 x 3 = 0.6, capped at 0.5
    assert second.run_at.ToDatetime() - second.update_time.ToDatetime() == timedelta(seconds=0.5)
    await fail(executor)
    assert (await state_of(jobs_stub, job.id)).state == job_pb2.JOB_STATE_DEAD


async def test_queue_settings_fill_in_what_a_job_leaves_unset(
    jobs_stub: Stub, queues: QueueStub
) -> None:
    before = await submit(jobs_stub, queue="mail")
    assert before.max_attempts == 3
    assert before.retry_policy == job_pb2.RetryPolicy(
        initial_backoff=seconds(1), backoff_multiplier=2, max_backoff=seconds(600), jitter=0.1
    )
    response = await queues.UpdateQueue(
        queue_service_pb2.UpdateQueueRequest(
            queue=queue_service_pb2.Queue(
                name="Mail",
                default_max_attempts=5,
                default_timeout=seconds(30),
                default_retry_policy=job_pb2.RetryPolicy(initial_backoff=seconds(2), jitter=0),
            )
        )
    )
    assert response.queue.name == "mail"
    assert response.queue.default_max_attempts == 5
    assert response.queue.HasField("update_time")

    defaults = await submit(jobs_stub, queue="mail")
    assert defaults.max_attempts == 5
    assert defaults.timeout == seconds(30)
    assert defaults.retry_policy == job_pb2.RetryPolicy(
        initial_backoff=seconds(2), backoff_multiplier=2, max_backoff=seconds(600), jitter=0
    )
    own = await submit(
        jobs_stub,
        queue="mail",
        max_attempts=2,
        retry_policy=job_pb2.RetryPolicy(backoff_multiplier=4, max_backoff=seconds(1)),
    )
    assert own.max_attempts == 2
    # The job's max_backoff (1 s) is below the queue's initial backoff (2 s): raised to it.
    assert own.retry_policy == job_pb2.RetryPolicy(
        initial_backoff=seconds(2), backoff_multiplier=4, max_backoff=seconds(2), jitter=0
    )
    other_queue = await submit(jobs_stub, queue="other")
    assert other_queue.max_attempts == 3
    # Settings apply to jobs submitted afterwards.
    assert (await state_of(jobs_stub, before.id)).max_attempts == 3


async def test_update_masks_change_only_the_named_fields_and_clear_unset_ones(
    queues: QueueStub,
) -> None:
    await queues.UpdateQueue(
        queue_service_pb2.UpdateQueueRequest(
            queue=queue_service_pb2.Queue(
                name="q",
                default_max_attempts=7,
                default_retry_policy=job_pb2.RetryPolicy(initial_backoff=seconds(3), jitter=0.5),
            )
        )
    )
    response = await queues.UpdateQueue(
        queue_service_pb2.UpdateQueueRequest(
            queue=queue_service_pb2.Queue(
                name="q",
                default_max_attempts=9,  # not in the mask: ignored
                default_timeout=seconds(60),
                default_retry_policy=job_pb2.RetryPolicy(initial_backoff=seconds(5)),
            ),
            update_mask=FieldMask(
                paths=["default_timeout", "default_retry_policy.initial_backoff",
                       "default_retry_policy.jitter"]
            ),
        )
    )  # fmt: skip
    queue = response.queue
    assert queue.default_max_attempts == 7
    assert queue.default_timeout == seconds(60)
    assert queue.default_retry_policy.initial_backoff == seconds(5)
    assert not queue.default_retry_policy.HasField("jitter")  # in the mask, unset: cleared
    got = await queues.GetQueue(queue_service_pb2.GetQueueRequest(name="q"))
    assert got.queue == queue

    never = await queues.GetQueue(queue_service_pb2.GetQueueRequest(name="never-configured"))
    assert never.queue == queue_service_pb2.Queue(name="never-configured")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            queue_service_pb2.UpdateQueueRequest(
                queue=queue_service_pb2.Queue(name="q", default_max_attempts=5),
                update_mask=FieldMask(paths=["priority"]),
            ),
            "update_mask.paths[0]",
        ),
        (
            queue_service_pb2.UpdateQueueRequest(
                queue=queue_service_pb2.Queue(
                    name="q", default_retry_policy=job_pb2.RetryPolicy(jitter=2)
                )
            ),
            "queue.default_retry_policy.jitter",
        ),
        (
            queue_service_pb2.UpdateQueueRequest(
                queue=queue_service_pb2.Queue(name="q", default_max_attempts=101)
            ),
            "queue.default_max_attempts",
        ),
        (
            queue_service_pb2.UpdateQueueRequest(
                queue=queue_service_pb2.Queue(name="Bad Name", default_max_attempts=5)
            ),
            "queue.name",
        ),
    ],
)
async def test_bad_queue_updates_name_the_field_and_change_nothing(
    queues: QueueStub, request_: queue_service_pb2.UpdateQueueRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await queues.UpdateQueue(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (raised.value.details() or "")
    got = await queues.GetQueue(queue_service_pb2.GetQueueRequest(name="q"))
    assert got.queue == queue_service_pb2.Queue(name="q")


async def test_a_bad_job_retry_policy_names_the_field(jobs_stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await submit(jobs_stub, retry_policy=job_pb2.RetryPolicy(backoff_multiplier=0.5))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "job.retry_policy.backoff_multiplier" in (raised.value.details() or "")


async def test_queue_settings_belong_to_their_tenant(jobs_stub: Stub, queues: QueueStub) -> None:
    acme = (("x-jobsched-tenant", "acme"),)
    await queues.UpdateQueue(
        queue_service_pb2.UpdateQueueRequest(
            queue=queue_service_pb2.Queue(name="shared", default_max_attempts=9)
        ),
        metadata=acme,
    )
    assert (await submit(jobs_stub, queue="shared")).max_attempts == 3
    response = await jobs_stub.SubmitJob(
        job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="work", queue="shared")),
        metadata=acme,
    )
    assert response.job.max_attempts == 9
