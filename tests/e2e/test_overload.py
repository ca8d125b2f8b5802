"""Overload is RESOURCE_EXHAUSTED with reason OVERLOADED and a retry hint, counted and logged,
never a bare CANCELLED (before: past ~1,400 concurrent unary calls the excess failed CANCELLED,
with no log line)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from jobsched.v1 import job_service_pb2, job_service_pb2_grpc
from scheduler.api.interceptors import wrap_handler
from scheduler.store.database import Database
from tests.e2e.test_job_service import submit
from tests.helpers import assert_eventually
from tests.scripted import serving

SERVICE = "/jobsched.v1.JobService/"


class Gate(grpc.aio.ServerInterceptor):
    """Holds every GetJobStatus call inside its handler until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.held = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method != SERVICE + "GetJobStatus":
            return handler

        @contextlib.asynccontextmanager
        async def held(method: str, context: Any) -> AsyncIterator[None]:
            self.held += 1
            await self.release.wait()
            yield

        return wrap_handler(handler, handler_call_details.method, held)


def details_of(err: grpc.aio.AioRpcError) -> tuple[str, float]:
    """(ErrorInfo reason, RetryInfo delay in seconds)."""
    status = rpc_status.from_call(err)
    assert status is not None
    reason, delay = "", 0.0
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToTimedelta().total_seconds()
    return reason, delay


async def outcome(call: Awaitable[Any]) -> grpc.StatusCode | grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err
    return grpc.StatusCode.OK


@pytest.mark.timeout(60)
async def test_calls_over_the_limit_are_resource_exhausted_counted_and_logged_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.rpc")
    gate = Gate()
    async with (
        serving(db, interceptors=[gate], max_concurrent_rpcs=5) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job = await submit(stub)
        calls = [
            asyncio.ensure_future(
                outcome(stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job.id)))
            )
            for _ in range(50)
        ]

        async def refused_the_rest() -> None:
            assert gate.held == 5
            assert sum(call.done() for call in calls) == 45

        await assert_eventually(refused_the_rest, within=20)
        # Health checks are never refused, even at the limit.
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
        gate.release.set()
        results = await asyncio.gather(*calls)
        limiter = server.limiter
        assert limiter.rejected_unary == 45
        assert (limiter.unary, limiter.streams) == (0, 0)

    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert results.count(grpc.StatusCode.OK) == 5
    assert len(errors) == 45
    assert {e.code() for e in errors} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    for err in errors:
        reason, delay = details_of(err)
        assert reason == "OVERLOADED"
        assert delay > 0
    warnings = [
        r for r in caplog.records if getattr(r, "fields", {}).get("event") == "rpc.overloaded"
    ]
    assert len(warnings) == 1
    codes = Counter(
        getattr(r, "fields", {}).get("code")
        for r in caplog.records
        if getattr(r, "fields", {}).get("event") == "rpc"
        and getattr(r, "fields", {}).get("method") == SERVICE + "GetJobStatus"
    )
    assert codes == {"OK": 5, "RESOURCE_EXHAUSTED": 45}


async def test_streams_have_their_own_limit(db: Database) -> None:
    async with (
        serving(db, max_streams=2) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub: Any = job_service_pb2_grpc.JobServiceStub(channel)
        job = await submit(stub)
        watches = [stub.WatchJob(job_service_pb2.WatchJobRequest(id=job.id)) for _ in range(2)]
        for watch in watches:
            assert (await watch.read()).HasField("snapshot")
        third = stub.WatchJobs(job_service_pb2.WatchJobsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await third.read()
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details_of(raised.value)[0] == "OVERLOADED"
        # Unary calls are counted apart: they still go through.
        await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job.id))
        assert server.limiter.rejected_streams == 1
        for watch in watches:
            watch.cancel()


@pytest.mark.timeout(120)
async def test_2000_concurrent_calls_are_answered_or_refused_never_cancelled(
    db: Database,
) -> None:
    async with (
        serving(db) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job = await submit(stub)
        started = time.monotonic()
        results = await asyncio.gather(
            *(
                outcome(
                    stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job.id), timeout=60)
                )
                for _ in range(2000)
            )
        )
        elapsed = time.monotonic() - started
    codes = Counter(r if isinstance(r, grpc.StatusCode) else r.code() for r in results)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, (codes, elapsed)
    assert codes[grpc.StatusCode.OK] >= 1000
