"""The client's mapping of google.rpc.Status (code, message, details) to its exception tree."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2

from jobsched.errors import (
    ERROR_DOMAIN,
    ConcurrentModificationError,
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    IdempotencyKeyReusedError,
    InvalidArgumentError,
    InvalidTransitionError,
    JobNotFoundError,
    JobschedError,
    NotFoundError,
    OverloadedError,
    UnavailableError,
    error_from_status,
    from_rpc_error,
)


def pack(*details: message.Message) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return packed


def info(reason: str, domain: str = ERROR_DOMAIN) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=domain)


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", NotFoundError),
        (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND", JobNotFoundError),
        (grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION", FailedPreconditionError),
        (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION", InvalidTransitionError),
        (grpc.StatusCode.ABORTED, "CONFLICT", ConflictError),
        (grpc.StatusCode.ABORTED, "CONCURRENT_MODIFICATION", ConcurrentModificationError),
        (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED", IdempotencyKeyReusedError),
        (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", UnavailableError),
        (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE", UnavailableError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", OverloadedError),
        (grpc.StatusCode.INTERNAL, "INTERNAL", JobschedError),
    ],
)
def test_reason_selects_class(code: grpc.StatusCode, reason: str, cls: type[JobschedError]):
    err = error_from_status(code, "it went wrong", pack(info(reason)))

    assert type(err) is cls
    assert err.code is code
    assert err.reason == reason
    assert err.message == "it went wrong"
    assert err.domain == ERROR_DOMAIN
    assert str(err) == "it went wrong"


def test_reason_wins_over_code():
    # The reason is the contract; the code only groups reasons.
    err = error_from_status(grpc.StatusCode.NOT_FOUND, "gone", pack(info("INVALID_TRANSITION")))

    assert isinstance(err, InvalidTransitionError)
    assert err.code is grpc.StatusCode.NOT_FOUND


def test_job_not_found_is_a_not_found():
    err = error_from_status(
        grpc.StatusCode.NOT_FOUND, "job x not found", pack(info("JOB_NOT_FOUND"))
    )

    assert isinstance(err, NotFoundError)
    assert isinstance(err, JobschedError)


def test_bad_request_field_violations():
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="job.type", description="is required"
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="jobs[3].priority", description="must be in [0, 100]"
            ),
        ]
    )
    err = error_from_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "job.type: is required; jobs[3].priority: must be in [0, 100]",
        pack(info("INVALID_ARGUMENT"), bad_request),
    )

    assert isinstance(err, InvalidArgumentError)
    assert err.field_violations == [
        ("job.type", "is required"),
        ("jobs[3].priority", "must be in [0, 100]"),
    ]


def test_bad_request_without_error_info_still_gives_violations():
    bad_request = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="id", description="x")]
    )
    err = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "bad", pack(bad_request))

    assert isinstance(err, InvalidArgumentError)
    assert err.reason == "INVALID_ARGUMENT"
    assert err.field_violations == [("id", "x")]


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
        (grpc.StatusCode.ABORTED, ConflictError),
        (grpc.StatusCode.INTERNAL, JobschedError),
        (grpc.StatusCode.UNKNOWN, JobschedError),
        (grpc.StatusCode.UNIMPLEMENTED, JobschedError),
    ],
)
def test_without_details_the_code_decides(code: grpc.StatusCode, cls: type[JobschedError]):
    err = error_from_status(code, "failed to connect to all addresses", [])

    assert type(err) is cls
    assert err.code is code
    assert err.reason == cls.default_reason
    assert err.domain == ""


def test_unknown_reason_falls_back_on_code():
    # A newer server may send reasons this client does not know yet.
    err = error_from_status(grpc.StatusCode.ABORTED, "lease lost", pack(info("LEASE_LOST")))

    assert type(err) is ConflictError
    assert err.reason == "LEASE_LOST"


def test_foreign_domain_reason_is_not_trusted():
    err = error_from_status(
        grpc.StatusCode.UNAVAILABLE, "rate limited", pack(info("JOB_NOT_FOUND", "proxy.example"))
    )

    assert type(err) is UnavailableError
    assert err.domain == "proxy.example"


def test_empty_message_defaults_to_the_class_docstring():
    err = error_from_status(grpc.StatusCode.NOT_FOUND, "", pack(info("JOB_NOT_FOUND")))

    assert err.message == "No such job."


def test_unrelated_details_are_ignored():
    retry_info = error_details_pb2.RetryInfo()
    retry_info.retry_delay.FromSeconds(3)
    err = error_from_status(
        grpc.StatusCode.UNAVAILABLE, "busy", pack(retry_info, info("DATABASE_UNAVAILABLE"))
    )

    assert type(err) is UnavailableError
    assert err.reason == "DATABASE_UNAVAILABLE"


def _rpc_error(code: grpc.StatusCode, message: str, status: status_pb2.Status | None):
    trailing = grpc.aio.Metadata()
    if status is not None:
        trailing.add("grpc-status-details-bin", status.SerializeToString())
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, message)


def test_from_rpc_error_reads_the_rich_status_from_trailing_metadata():
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="job.queue", description="bad")
        ]
    )
    status = status_pb2.Status(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
        message="job.queue: bad",
        details=pack(info("INVALID_ARGUMENT"), bad_request),
    )
    err = from_rpc_error(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "job.queue: bad", status))

    assert isinstance(err, InvalidArgumentError)
    assert err.field_violations == [("job.queue", "bad")]


def test_from_rpc_error_ignores_a_status_that_contradicts_the_call():
    # A proxy rewrote the code: the details describe some other failure.
    status = status_pb2.Status(
        code=grpc.StatusCode.NOT_FOUND.value[0], message="nope", details=pack(info("JOB_NOT_FOUND"))
    )
    err = from_rpc_error(_rpc_error(grpc.StatusCode.UNAVAILABLE, "upstream down", status))

    assert type(err) is UnavailableError
    assert err.message == "upstream down"


def test_from_rpc_error_without_details():
    err = from_rpc_error(_rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused", None))

    assert type(err) is UnavailableError
    assert err.reason == "UNAVAILABLE"


def test_overloaded_carries_the_retry_delay() -> None:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromTimedelta(timedelta(milliseconds=1500))
    err = error_from_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "too many calls", pack(info("OVERLOADED"), retry)
    )
    assert isinstance(err, OverloadedError)
    assert isinstance(err, UnavailableError)  # retry later, like an outage
    assert err.retry_after == 1.5
    bare = error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "x", pack(info("OVERLOADED")))
    assert isinstance(bare, OverloadedError)
    assert bare.retry_after == 1.0
