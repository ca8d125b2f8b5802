"""What a client is told when the store fails, or the server has a bug: a short fixed message
with the request id (also in ErrorInfo.metadata), never SQL or driver text, and small trailing
metadata; the server logs the whole error under the same request id.

Before: UNAVAILABLE carried the driver's exception and the full statement (3.9 kB of trailing
metadata; past 8 kB the client saw RESOURCE_EXHAUSTED instead and did not fail over), and a
bug was UNKNOWN with the exception's text."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from jobsched.v1 import job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.e2e.test_job_service import database_refusing_connections, spec, submit
from tests.helpers import assert_eventually
from tests.scripted import serving

LEAKS = ("SELECT", "INSERT", "asyncpg", "sqlalchemy", "[SQL", "Traceback")


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


def metadata_bytes(err: grpc.aio.AioRpcError) -> int:
    return sum(len(k) + len(v) for k, v in err.trailing_metadata() or ())


def logged_with(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == request_id]


@pytest.mark.timeout(90)
async def test_a_failing_store_is_unavailable_with_a_request_id_and_no_sql(
    jobs_stub: Any, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await submit(jobs_stub)  # the pool holds connections, which the outage terminates
    async with database_refusing_connections(database_url):
        failures = []
        for _ in range(3):  # a terminated pooled connection first, then refused connects
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await jobs_stub.SubmitJob(job_service_pb2.SubmitJobRequest(job=spec()))
            failures.append(raised.value)
    for err in failures:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
        message = err.details() or ""
        assert not [leak for leak in LEAKS if leak.lower() in message.lower()], message
        assert metadata_bytes(err) < 1024
        info = error_info(err)
        assert info.reason == "DATABASE_UNAVAILABLE"
        request_id = info.metadata["request_id"]
        assert request_id in message

        async def server_lines(request_id: str = request_id) -> list[dict[str, Any]]:
            lines = [dict(getattr(r, "fields", {})) for r in logged_with(caplog, request_id)]
            assert "rpc" in {line.get("event") for line in lines}  # the access line
            assert any(line.get("error") for line in lines)  # and what the driver said
            return lines

        await assert_eventually(server_lines)


class Buggy(grpc.aio.ServerInterceptor):
    """GetJobStatus raises what a bug (or an untranslated driver error) would."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler_call_details.method != "/jobsched.v1.JobService/GetJobStatus":
            return handler

        async def broken(request: Any, context: Any) -> Any:
            raise RuntimeError("SELECT secret FROM jobs WHERE " + "x" * 20_000)

        return grpc.unary_unary_rpc_method_handler(
            broken, handler.request_deserializer, handler.response_serializer
        )


async def test_a_bug_is_internal_with_a_request_id_and_no_detail(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        serving(db, interceptors=[Buggy()]) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetJobStatus(job_service_pb2.GetJobStatusRequest(id="x"))
    err = raised.value
    assert err.code() == grpc.StatusCode.INTERNAL, err.details()
    assert "secret" not in (err.details() or "")
    assert metadata_bytes(err) < 1024
    request_id = error_info(err).metadata["request_id"]
    assert request_id in (err.details() or "")
    [error] = [r for r in logged_with(caplog, request_id) if r.levelno >= logging.ERROR]
    assert error.exc_info is not None
    assert "secret" in str(error.exc_info[1])
