"""Bytes that are not the request message (corrupt protobuf, a string field holding invalid
UTF-8) are INVALID_ARGUMENT naming the request, for unary calls, server streams and the first
message of ExecutorService.Connect (before: UNKNOWN with the DecodeError's text)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tests.e2e.test_job_service import failure_of

CORRUPT = b"\xff\xff\xff\xff"
# CancelJobRequest / WatchJobRequest: field 1 (id), a string of two bytes that are not UTF-8.
BAD_UTF8_ID = b"\x0a\x02\xff\xfe"
# ConnectRequest.register (field 1) holding Register.name (field 1) of invalid UTF-8.
BAD_UTF8_REGISTER = b"\x0a\x04\x0a\x02\xff\xfe"


def _assert_invalid_request(err: grpc.aio.AioRpcError) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{err.code()}: {err.details()}"
    failure = failure_of(err)
    assert failure.reason == "INVALID_ARGUMENT"
    assert failure.fields == ["request"]


@pytest.mark.parametrize("raw", [CORRUPT, BAD_UTF8_ID], ids=["corrupt", "bad-utf8"])
async def test_undecodable_unary_request_is_invalid_argument(
    channel: grpc.aio.Channel, raw: bytes
) -> None:
    call: Any = channel.unary_unary("/jobsched.v1.JobService/CancelJob")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(raw)
    _assert_invalid_request(raised.value)


@pytest.mark.parametrize("raw", [CORRUPT, BAD_UTF8_ID], ids=["corrupt", "bad-utf8"])
async def test_undecodable_server_stream_request_is_invalid_argument(
    channel: grpc.aio.Channel, raw: bytes
) -> None:
    method: Any = channel.unary_stream("/jobsched.v1.JobService/WatchJob")
    call = method(raw)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    _assert_invalid_request(raised.value)


@pytest.mark.parametrize("raw", [CORRUPT, BAD_UTF8_REGISTER], ids=["corrupt", "bad-utf8"])
async def test_undecodable_first_connect_message_is_invalid_argument(
    channel: grpc.aio.Channel, raw: bytes
) -> None:
    async def requests() -> AsyncIterator[bytes]:
        yield raw

    method: Any = channel.stream_stream("/jobsched.v1.ExecutorService/Connect")
    call = method(requests())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    _assert_invalid_request(raised.value)
