"""Bounds on what one executor message may list (the 1 MiB payload and result limits, batch
sizes and text lengths are tested where they are enforced): a Register naming too many job
types, queues, labels or in-flight attempts is refused INVALID_ARGUMENT naming the field,
before any entry is looked at; a Heartbeat listing more attempts than any executor can run
ends its stream INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from jobsched.v1 import executor_service_pb2 as pb
from jobsched.v1 import executor_service_pb2_grpc
from scheduler.api.executor_service import MAX_ATTEMPTS_LISTED, MAX_REGISTER_NAMES
from scheduler.domain.validation import MAX_LABELS
from scheduler.server import SchedulerServer
from tests.scripted import ScriptedExecutor, connect, ended

ATTEMPT = pb.JobAttempt(job_id="7d3a1c7e-0000-4000-8000-000000000000", attempt=1)


async def refusal(channel: grpc.aio.Channel, register: pb.Register) -> str:
    async def requests() -> AsyncIterator[pb.ConnectRequest]:
        yield pb.ConnectRequest(register=register)

    call = executor_service_pb2_grpc.ExecutorServiceStub(channel).Connect(requests())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return raised.value.details() or ""


@pytest.mark.parametrize(
    ("field", "register"),
    [
        (
            "register.job_types",
            pb.Register(name="x", capacity=1, job_types=["work"] * (MAX_REGISTER_NAMES + 1)),
        ),
        (
            "register.queues",
            pb.Register(
                name="x", capacity=1, job_types=["work"], queues=["q"] * (MAX_REGISTER_NAMES + 1)
            ),
        ),
        (
            "register.in_flight",
            pb.Register(
                name="x",
                capacity=1,
                job_types=["work"],
                in_flight=[ATTEMPT] * (MAX_ATTEMPTS_LISTED + 1),
            ),
        ),
        (
            "register.labels",
            pb.Register(
                name="x",
                capacity=1,
                job_types=["work"],
                labels={f"k{i}": "v" for i in range(MAX_LABELS + 1)},
            ),
        ),
        (
            "register.labels[",
            pb.Register(name="x", capacity=1, job_types=["work"], labels={"k" * 65: "v"}),
        ),
        (
            "register.labels[",
            pb.Register(name="x", capacity=1, job_types=["work"], labels={"zone": "v" * 257}),
        ),
    ],
)
async def test_a_register_listing_too_much_is_refused_naming_the_field(
    channel: grpc.aio.Channel, scheduler: SchedulerServer, field: str, register: pb.Register
) -> None:
    details = await refusal(channel, register)
    assert field in details
    assert scheduler.dispatcher.sessions == {}


async def test_a_register_within_the_bounds_is_accepted(channel: grpc.aio.Channel) -> None:
    executors: list[ScriptedExecutor] = []
    executor = await connect(channel, executors, "bounded", capacity=1)
    await executor.close()


async def test_a_heartbeat_listing_too_many_attempts_ends_the_stream(
    channel: grpc.aio.Channel, scheduler: SchedulerServer
) -> None:
    executors: list[ScriptedExecutor] = []
    executor = await connect(channel, executors, "chatty", capacity=1)
    executor.send(heartbeat=pb.Heartbeat(running=[ATTEMPT] * (MAX_ATTEMPTS_LISTED + 1)))
    err = await ended(executor)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "heartbeat.running" in (err.details() or "")
    await executor.close()
