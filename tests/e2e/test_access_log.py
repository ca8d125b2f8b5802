"""The access log names the code a client saw: CANCELLED for a call the client cancelled,
DEADLINE_EXCEEDED for one past its deadline (before, both were UNKNOWN); and every line has
the call's request id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from jobsched.v1 import job_service_pb2, job_service_pb2_grpc
from scheduler.api.interceptors import wrap_handler
from scheduler.store.database import Database
from tests.e2e.test_job_service import submit
from tests.helpers import assert_eventually
from tests.scripted import serving

SERVICE = "/jobsched.v1.JobService/"


def rpc_lines(caplog: pytest.LogCaptureFixture, method: str) -> list[dict[str, Any]]:
    return [
        dict(getattr(r, "fields", {}))
        for r in caplog.records
        if r.name == "jobsched.rpc" and getattr(r, "fields", {}).get("method") == SERVICE + method
    ]


class SlowStatus(grpc.aio.ServerInterceptor):
    """Holds each GetJobStatus call `delay` seconds inside its handler."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method != SERVICE + "GetJobStatus":
            return handler

        @contextlib.asynccontextmanager
        async def slowly(method: str, context: Any) -> AsyncIterator[None]:
            await asyncio.sleep(self.delay)
            yield

        return wrap_handler(handler, handler_call_details.method, slowly)


async def test_a_watch_cancelled_by_the_client_is_logged_cancelled(
    jobs_stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.rpc")
    job = await submit(jobs_stub)
    call = jobs_stub.WatchJob(job_service_pb2.WatchJobRequest(id=job.id))
    first = await call.read()
    assert first.HasField("snapshot")
    call.cancel()

    async def logged() -> dict[str, Any]:
        lines = rpc_lines(caplog, "WatchJob")
        assert len(lines) == 1
        return lines[0]

    line = await assert_eventually(logged, within=15)
    assert line["code"] == "CANCELLED"
    assert line["request_id"]


async def test_a_unary_call_past_its_deadline_is_logged_deadline_exceeded(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.rpc")
    async with (
        serving(db, interceptors=[SlowStatus(1.0)]) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job = await submit(stub)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id=job.id), timeout=0.2)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        async def logged() -> dict[str, Any]:
            lines = rpc_lines(caplog, "GetJobStatus")
            assert len(lines) == 1
            return lines[0]

        line = await assert_eventually(logged)
        assert line["code"] == "DEADLINE_EXCEEDED"


async def test_every_access_line_has_its_own_request_id(
    jobs_stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.rpc")
    for _ in range(3):
        await submit(jobs_stub)
    ids = [line["request_id"] for line in rpc_lines(caplog, "SubmitJob")]
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert all(ids)
