"""Scheduler errors as HTTP answers: the gRPC code picks the status, the body keeps the
ErrorInfo reason, the message and BadRequest field violations with their field names."""

from __future__ import annotations

from typing import Any

import grpc
from starlette.responses import JSONResponse

from jobsched.errors import InvalidArgumentError, JobschedError

STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def problem(
    status: int,
    message: str,
    *,
    reason: str = "",
    field_violations: list[dict[str, str]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": {"message": message, "reason": reason or str(status)}}
    if field_violations:
        body["error"]["field_violations"] = field_violations
    return JSONResponse(body, status_code=status)


def from_error(err: JobschedError) -> JSONResponse:
    violations = None
    if isinstance(err, InvalidArgumentError):
        violations = [{"field": f, "description": d} for f, d in err.field_violations]
    return problem(
        STATUS.get(err.code, 502),
        err.message,
        reason=err.reason,
        field_violations=violations,
    )
