"""The CLI's exit codes, and how a client error becomes one (with its message on stderr)."""

from __future__ import annotations

from typing import TextIO

from jobsched.errors import (
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobschedError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)

EXIT_CODES_TEXT = """Exit codes:
  0  success
  1  unexpected error
  2  bad input: invalid arguments, or INVALID_ARGUMENT from the scheduler
  3  not found (the job does not exist, or belongs to another tenant)
  4  failed precondition: the job's state does not allow it, or a concurrent change
  5  scheduler unavailable, or no answer within --timeout
  6  the watched job ended without succeeding (DEAD or CANCELLED)
  7  not allowed: no valid credential (--token), or it lacks the permission or the tenant
"""

EXIT_OK = 0

EXIT_ERROR = 1

EXIT_BAD_INPUT = 2

EXIT_NOT_FOUND = 3

EXIT_PRECONDITION = 4

EXIT_UNAVAILABLE = 5

EXIT_JOB_FAILED = 6

EXIT_NOT_ALLOWED = 7


def report(err: JobschedError, address: str, out: TextIO) -> int:
    if isinstance(err, InvalidArgumentError):
        if err.field_violations:
            print("jobsched: invalid request:", file=out)
            for field, description in err.field_violations:
                print(f"  {field}: {description}", file=out)
        else:
            print(f"jobsched: invalid request: {err.message}", file=out)
        return EXIT_BAD_INPUT
    if isinstance(err, (UnavailableError, DeadlineExceededError)):
        print(f"jobsched: scheduler at {address} unavailable: {err.message}", file=out)
        return EXIT_UNAVAILABLE
    print(f"jobsched: {err.message}", file=out)
    if isinstance(err, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(err, (FailedPreconditionError, ConflictError)):
        return EXIT_PRECONDITION
    if isinstance(err, (UnauthenticatedError, PermissionDeniedError)):
        return EXIT_NOT_ALLOWED
    return EXIT_ERROR
