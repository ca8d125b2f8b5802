"""Errors raised by the jobsched client, one class per ErrorInfo reason the scheduler sends.

    JobschedError                        root: .code (grpc.StatusCode), .reason, .message
    ├── InvalidArgumentError             INVALID_ARGUMENT; .field_violations [(field, description)]
    ├── NotFoundError                    NOT_FOUND
    │   └── JobNotFoundError             JOB_NOT_FOUND (also: the job belongs to another tenant)
    ├── FailedPreconditionError          FAILED_PRECONDITION
    │   └── InvalidTransitionError       INVALID_TRANSITION: the job's state forbids the operation
    ├── ConflictError                    CONFLICT
    │   ├── ConcurrentModificationError  CONCURRENT_MODIFICATION: read the job again and retry
    │   └── IdempotencyKeyReusedError    IDEMPOTENCY_KEY_REUSED
    ├── UnauthenticatedError             UNAUTHENTICATED: no usable credential (.reason says why:
    │                                    CREDENTIAL_MISSING, _MALFORMED, _UNKNOWN, _REVOKED, _EXPIRED)
    ├── PermissionDeniedError            PERMISSION_DENIED: PERMISSION_MISSING, TENANT_NOT_ALLOWED,
    │                                    TENANT_NOT_SELECTED
    ├── UnavailableError                 UNAVAILABLE, DATABASE_UNAVAILABLE: retry later
    │   └── OverloadedError              OVERLOADED (RESOURCE_EXHAUSTED): .retry_after seconds;
    │                                    also RATE_LIMITED and TOO_MANY_STREAMS (this caller's
    │                                    rate or stream limit)
    └── DeadlineExceededError            no answer within the call's timeout

The ErrorInfo reason (domain "jobsched.dev") picks the class. A status without a known reason (a
newer server, a proxy, a connection that never opened) falls back on the gRPC code, and a code
with no class of its own (INTERNAL, UNKNOWN, ...) gives a plain JobschedError. Each class's
docstring is the message used when the server sent none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "jobsched.dev"

__all__ = [
    "ERROR_DOMAIN",
    "ConcurrentModificationError",
    "ConflictError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "IdempotencyKeyReusedError",
    "InvalidArgumentError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "JobschedError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "UnavailableError",
    "error_from_status",
    "from_rpc_error",
]


class JobschedError(Exception):
    """The scheduler failed to handle the request."""

    default_reason: ClassVar[str] = "INTERNAL"
    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str | None = None,
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.message: str = message or (type(self).__doc__ or self.default_reason).strip()
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.reason: str = reason or self.default_reason
        # Empty when the status carried no ErrorInfo (the reason is then the class default).
        self.domain: str = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        super().__init__(self.message)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(code={self.code.name}, reason={self.reason!r}, message={self.message!r})"


class InvalidArgumentError(JobschedError):
    """The request is invalid."""

    default_reason = "INVALID_ARGUMENT"
    default_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        message: str | None = None,
        *,
        field_violations: Sequence[tuple[str, str]] = (),
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        # Paths such as "job.queue" or "jobs[3].priority", as the BadRequest detail names them.
        self.field_violations: list[tuple[str, str]] = list(field_violations)
        super().__init__(message, code=code, reason=reason, domain=domain, metadata=metadata)


class NotFoundError(JobschedError):
    """Not found."""

    default_reason = "NOT_FOUND"
    default_code = grpc.StatusCode.NOT_FOUND


class JobNotFoundError(NotFoundError):
    """No such job."""

    default_reason = "JOB_NOT_FOUND"


class FailedPreconditionError(JobschedError):
    """The operation is not allowed in the current state."""

    default_reason = "FAILED_PRECONDITION"
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidTransitionError(FailedPreconditionError):
    """The job's state does not allow this operation."""

    default_reason = "INVALID_TRANSITION"


class ConflictError(JobschedError):
    """The operation conflicts with another one."""

    default_reason = "CONFLICT"
    default_code = grpc.StatusCode.ABORTED


class ConcurrentModificationError(ConflictError):
    """The job changed concurrently; read it again and retry."""

    default_reason = "CONCURRENT_MODIFICATION"


class IdempotencyKeyReusedError(ConflictError):
    """The idempotency key was already used for a different job."""

    default_reason = "IDEMPOTENCY_KEY_REUSED"
    default_code = grpc.StatusCode.ALREADY_EXISTS


class UnavailableError(JobschedError):
    """The scheduler is unavailable; try again later."""

    default_reason = "UNAVAILABLE"
    default_code = grpc.StatusCode.UNAVAILABLE


class OverloadedError(UnavailableError):
    """The scheduler is at its limit of concurrent calls, or the caller at its rate or stream
    limit (`reason` says which); retry after `retry_after` seconds."""

    default_reason = "OVERLOADED"
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: float = 1.0,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.retry_after: float = retry_after  # seconds, from the status's RetryInfo
        super().__init__(message, code=code, reason=reason, domain=domain, metadata=metadata)


class UnauthenticatedError(JobschedError):
    """The scheduler needs a valid credential (an API key: token=, --token, JOBSCHED_TOKEN)."""

    default_reason = "UNAUTHENTICATED"
    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(JobschedError):
    """The credential does not allow this call (its role, or the tenant)."""

    default_reason = "PERMISSION_DENIED"
    default_code = grpc.StatusCode.PERMISSION_DENIED


class DeadlineExceededError(JobschedError):
    """The scheduler did not answer in time."""

    default_reason = "DEADLINE_EXCEEDED"
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_REASON: dict[str, type[JobschedError]] = {
    "INVALID_ARGUMENT": InvalidArgumentError,
    "NOT_FOUND": NotFoundError,
    "JOB_NOT_FOUND": JobNotFoundError,
    "FAILED_PRECONDITION": FailedPreconditionError,
    "INVALID_TRANSITION": InvalidTransitionError,
    "CONFLICT": ConflictError,
    "CONCURRENT_MODIFICATION": ConcurrentModificationError,
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReusedError,
    "UNAVAILABLE": UnavailableError,
    "DATABASE_UNAVAILABLE": UnavailableError,
    "OVERLOADED": OverloadedError,
    "RATE_LIMITED": OverloadedError,
    "TOO_MANY_STREAMS": OverloadedError,
    "INTERNAL": JobschedError,
}

_BY_CODE: dict[grpc.StatusCode, type[JobschedError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: ConflictError,
    grpc.StatusCode.ALREADY_EXISTS: ConflictError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


def error_from_status(
    code: grpc.StatusCode, message: str, details: Sequence[any_pb2.Any]
) -> JobschedError:
    """Build the exception for a failed call from its google.rpc.Status parts.

    `details` are the Status's packed details; ErrorInfo and BadRequest are used, others ignored.
    """
    info: error_details_pb2.ErrorInfo | None = None
    violations: list[tuple[str, str]] = []
    retry_after: float | None = None
    for detail in details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and info is None:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(retry_info)
            retry_after = retry_info.retry_delay.ToTimedelta().total_seconds()

    cls: type[JobschedError] | None = None
    # Another domain's reasons (a proxy, a gateway) may share our names but not our meaning.
    if info is not None and info.domain == ERROR_DOMAIN:
        cls = _BY_REASON.get(info.reason)
    if cls is None:
        cls = _BY_CODE.get(code, JobschedError)

    reason = info.reason if info is not None and info.reason else None
    domain = info.domain if info is not None else ""
    metadata = dict(info.metadata) if info is not None else None
    if issubclass(cls, InvalidArgumentError):
        return cls(
            message,
            field_violations=violations,
            code=code,
            reason=reason,
            domain=domain,
            metadata=metadata,
        )
    if issubclass(cls, OverloadedError):
        return cls(
            message,
            retry_after=1.0 if retry_after is None else retry_after,
            code=code,
            reason=reason,
            domain=domain,
            metadata=metadata,
        )
    return cls(message, code=code, reason=reason, domain=domain, metadata=metadata)


def from_rpc_error(err: grpc.aio.AioRpcError) -> JobschedError:
    """Translate a failed gRPC call into the matching JobschedError (chain it with `from err`)."""
    code: grpc.StatusCode = err.code()
    message: str = err.details() or ""
    try:
        status = rpc_status.from_call(err)
    except ValueError:
        # The rich status disagrees with the call's own code or message: a proxy rewrote the
        # status, so its details describe some other failure. Trust the code alone.
        status = None
    details: Sequence[any_pb2.Any] = list(status.details) if status is not None else []
    return error_from_status(code, message, details)
