"""Domain errors of the scheduler. Servicers raise them; one interceptor maps them to gRPC codes.

    JobschedError                    root; anything unexpected maps to INTERNAL
    ├── InvalidArgument              bad input, with one FieldViolation per offending field
    ├── NotFound
    │   ├── JobNotFound
    │   └── ScheduleNotFound
    ├── FailedPrecondition
    │   ├── InvalidTransition        the state machine forbids the change (with the reason)
    │   └── AlreadyRegistered        a second Register on an executor stream
    ├── Conflict
    │   ├── ConcurrentModification   a guarded UPDATE matched no row: the caller lost a race
    │   ├── IdempotencyKeyReused     same idempotency key, different job
    │   ├── ScheduleNameTaken        a schedule of that name exists (ALREADY_EXISTS)
    │   ├── ExecutorNameTaken        an executor of that name is alive (ALREADY_EXISTS)
    │   └── LeadershipLost           a leader-only write by a replica whose epoch is over
    └── Unavailable
        └── DatabaseUnavailable      the store cannot be reached

Each class's docstring is its default message and `reason` is the ErrorInfo reason clients see.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One offending field of a request, named as a path (`job.queue`, `jobs[3].priority`)."""

    field: str
    description: str


class JobschedError(Exception):
    """Internal error."""

    reason = "INTERNAL"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.reason).strip()
        super().__init__(self.message)


class InvalidArgument(JobschedError):
    """The request is invalid."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        self.violations = list(violations)
        if message is None and violations:
            message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message)


class NotFound(JobschedError):
    """Not found."""

    reason = "NOT_FOUND"


class JobNotFound(NotFound):
    """No such job."""

    reason = "JOB_NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} not found")


class ScheduleNotFound(NotFound):
    """No such schedule."""

    reason = "SCHEDULE_NOT_FOUND"

    def __init__(self, schedule: str) -> None:
        self.schedule = schedule
        super().__init__(f"schedule {schedule} not found")


class FailedPrecondition(JobschedError):
    """The operation is not allowed in the current state."""

    reason = "FAILED_PRECONDITION"


class InvalidTransition(FailedPrecondition):
    """The job's state does not allow this operation."""

    reason = "INVALID_TRANSITION"


class AlreadyRegistered(FailedPrecondition):
    """This stream is registered already: Register is only its first message."""

    reason = "ALREADY_REGISTERED"


class Conflict(JobschedError):
    """The operation conflicts with another one."""

    reason = "CONFLICT"


class ConcurrentModification(Conflict):
    """The job changed concurrently; read it again and retry."""

    reason = "CONCURRENT_MODIFICATION"


class IdempotencyKeyReused(Conflict):
    """The idempotency key was already used for a different job."""

    reason = "IDEMPOTENCY_KEY_REUSED"


class ScheduleNameTaken(Conflict):
    """A schedule of that name already exists."""

    reason = "SCHEDULE_ALREADY_EXISTS"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a schedule named {name!r} already exists")


class ExecutorNameTaken(Conflict):
    """An executor of that name is connected; a reconnect of it must carry its session token."""

    reason = "EXECUTOR_NAME_TAKEN"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"an executor named {name!r} is connected; names are unique among live executors "
            "(a reconnect of that executor sends Register.session_token)"
        )


class LeadershipLost(Conflict):
    """This replica is no longer the leader: another one was elected (fencing epoch changed)."""

    reason = "LEADERSHIP_LOST"


class Unavailable(JobschedError):
    """The service is temporarily unavailable."""

    reason = "UNAVAILABLE"


class DatabaseUnavailable(Unavailable):
    """The job store is unreachable."""

    reason = "DATABASE_UNAVAILABLE"
