"""Domain errors of the scheduler. Servicers raise them; one interceptor maps them to gRPC codes.

    JobschedError                    root; anything unexpected maps to INTERNAL
    ├── InvalidArgument              bad input, with one FieldViolation per offending field
    ├── NotFound
    │   ├── JobNotFound
    │   ├── ScheduleNotFound
    │   ├── ArtifactNotFound
    │   └── ApiKeyNotFound
    ├── FailedPrecondition
    │   ├── InvalidTransition        the state machine forbids the change (with the reason)
    │   ├── HasWaitingDependents     a delete of a job that WAITING jobs still count on
    │   ├── AlreadyRegistered        a second Register on an executor stream
    │   └── AttemptNotRunning        an artifact upload for an attempt that is not running
    ├── Conflict
    │   ├── ConcurrentModification   a guarded UPDATE matched no row: the caller lost a race
    │   ├── IdempotencyKeyReused     same idempotency key, different job
    │   ├── ScheduleNameTaken        a schedule of that name exists (ALREADY_EXISTS)
    │   ├── ExecutorNameTaken        an executor of that name is alive (ALREADY_EXISTS)
    │   ├── ArtifactExists           this attempt stored an artifact of that name (ALREADY_EXISTS)
    │   └── LeadershipLost           a leader-only write by a replica whose epoch is over
    ├── Unavailable
    │   ├── DatabaseUnavailable      the store cannot be reached
    │   ├── ShuttingDown             the scheduler is stopping: call another replica
    │   └── ArtifactStoreMissing     an artifact kept in S3, and no --artifact-store here
    ├── Overloaded                   over the concurrency limits (RESOURCE_EXHAUSTED)
    │   ├── RateLimited              the caller is over its rate limit
    │   └── TooManyStreams           the caller holds as many streams as it may
    ├── QuotaExceeded                over a size limit (RESOURCE_EXHAUSTED)
    │   ├── ArtifactTooLarge
    │   └── JobArtifactsTooLarge
    ├── Unauthenticated              no usable credential (missing, malformed, unknown, revoked,
    │                                expired); `reason` says which
    └── PermissionDenied             a known principal lacks the permission or the tenant

Each class's docstring is its default message and `reason` is the ErrorInfo reason clients see:
one reason per kind of refusal, so that a client can branch on it. `metadata` is what the
ErrorInfo carries besides (the existing job of a reused idempotency key, the offending field and
the limit of a violation), so that clients need not parse messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.domain.echo import echo, shorten


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One offending field of a request, named as a path (`job.queue`, `jobs[3].priority`)."""

    field: str
    description: str
    # The bound the value breaks ("200", "[1, 10000]"), when the violation is of a bound; it
    # becomes ErrorInfo metadata `limit` of the first violation.
    limit: str = ""


class JobschedError(Exception):
    """Internal error."""

    reason = "INTERNAL"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.reason).strip()
        super().__init__(self.message)

    @property
    def metadata(self) -> dict[str, str]:
        """ErrorInfo metadata for the client (short values; the interceptor adds request_id)."""
        return {}


# An error about huge input must stay small: gRPC carries the message and the rich status in
# trailing metadata, which clients limit (8 KiB by default: past it the call fails as
# RESOURCE_EXHAUSTED "Stream removed"). Echoed values are shortened where they are quoted
# (scheduler/domain/echo.py); these bound the rest, and the ErrorInterceptor bounds the bytes.
MAX_VIOLATIONS = 100
MAX_VIOLATION_CHARS = 300  # field path or description
MAX_MESSAGE_CHARS = 1000


class InvalidArgument(JobschedError):
    """The request is invalid."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        # The first MAX_VIOLATIONS, each bounded; `omitted` more were left off, and
        # `violations` ends with one saying so (named after the omitted fields' common root).
        self.listed = [
            FieldViolation(
                shorten(v.field, MAX_VIOLATION_CHARS),
                shorten(v.description, MAX_VIOLATION_CHARS),
                shorten(v.limit, MAX_VIOLATION_CHARS),
            )
            for v in violations[:MAX_VIOLATIONS]
        ]
        self.omitted = len(violations) - len(self.listed)
        self.omitted_root = _common_root(violations[MAX_VIOLATIONS:])
        self.violations = self.listed_with_summary(len(self.listed))
        if message is None and violations:
            message = _summary(self.listed, len(violations))
        if message is not None:
            message = shorten(message, MAX_MESSAGE_CHARS)
        super().__init__(message)

    @property
    def metadata(self) -> dict[str, str]:
        """`field`: the first offending field; `limit`: its bound, if it broke one."""
        if not self.listed:
            return {}
        first = self.listed[0]
        return {"field": first.field, **({"limit": first.limit} if first.limit else {})}

    def listed_with_summary(self, count: int) -> list[FieldViolation]:
        """The first `count` listed violations, and one saying how many more there are."""
        kept = self.listed[:count]
        more = self.omitted + len(self.listed) - len(kept)
        if more:
            root = self.omitted_root if count == len(self.listed) else "request"
            kept.append(
                FieldViolation(root, f"and {more} more violations (the first {count} are listed)")
            )
        return kept


def _common_root(violations: list[FieldViolation]) -> str:
    roots = {v.field.split(".", 1)[0].split("[", 1)[0] for v in violations}
    return shorten(roots.pop(), MAX_VIOLATION_CHARS) if len(roots) == 1 else "request"


def _summary(listed: list[FieldViolation], total: int) -> str:
    """'field: description; ...' of as many violations as fit in MAX_MESSAGE_CHARS, then how
    many more there are."""
    parts: list[str] = []
    used = 0
    for v in listed:
        part = f"{v.field}: {v.description}"
        if parts and used + len(part) > MAX_MESSAGE_CHARS - 40:
            break
        parts.append(part)
        used += len(part) + 2
    if total > len(parts):
        parts.append(f"and {total - len(parts)} more")
    return "; ".join(parts)


class NotFound(JobschedError):
    """Not found."""

    reason = "NOT_FOUND"


class JobNotFound(NotFound):
    """No such job."""

    reason = "JOB_NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} not found")

    @property
    def metadata(self) -> dict[str, str]:
        return {"job_id": shorten(self.job_id, 100)}


class ScheduleNotFound(NotFound):
    """No such schedule."""

    reason = "SCHEDULE_NOT_FOUND"

    def __init__(self, schedule: str) -> None:
        self.schedule = schedule
        super().__init__(f"schedule {schedule} not found")


class ApiKeyNotFound(NotFound):
    """No such API key."""

    reason = "API_KEY_NOT_FOUND"

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"API key {key_id} not found")


class FailedPrecondition(JobschedError):
    """The operation is not allowed in the current state."""

    reason = "FAILED_PRECONDITION"


class InvalidTransition(FailedPrecondition):
    """The job's state does not allow this operation."""

    reason = "INVALID_TRANSITION"


class HasWaitingDependents(FailedPrecondition):
    """WAITING jobs still count on this job: cancel it instead, or delete them first."""

    reason = "JOB_HAS_DEPENDENTS"


class ArtifactNotFound(NotFound):
    """No such artifact."""

    reason = "ARTIFACT_NOT_FOUND"

    def __init__(self, job_id: str, name: str) -> None:
        super().__init__(f"job {job_id} has no artifact named {echo(name)}")


class AttemptNotRunning(FailedPrecondition):
    """The attempt is not the job's running attempt on this executor."""

    reason = "ATTEMPT_NOT_RUNNING"


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

    def __init__(self, message: str | None = None, *, job_id: str = "", key: str = "") -> None:
        self.job_id = job_id  # the job that holds the key
        self.key = key
        super().__init__(message)

    @property
    def metadata(self) -> dict[str, str]:
        found = {"job_id": self.job_id, "idempotency_key": shorten(self.key, 200)}
        return {k: v for k, v in found.items() if v}


class ScheduleNameTaken(Conflict):
    """A schedule of that name already exists."""

    reason = "SCHEDULE_ALREADY_EXISTS"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a schedule named {echo(name)} already exists")


class ExecutorNameTaken(Conflict):
    """An executor of that name is connected; a reconnect of it must carry its session token."""

    reason = "EXECUTOR_NAME_TAKEN"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"an executor named {echo(name)} is connected; names are unique among live executors "
            "(a reconnect of that executor sends Register.session_token)"
        )

    @property
    def metadata(self) -> dict[str, str]:
        return {"executor": shorten(self.name, 200)}


class ArtifactExists(Conflict):
    """This attempt already stored an artifact of that name."""

    reason = "ARTIFACT_ALREADY_EXISTS"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"this attempt already stored an artifact named {echo(name)} (names are unique per "
            "job; a later attempt replaces an earlier one's)"
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


class ShuttingDown(Unavailable):
    """The scheduler is shutting down; call again (another replica takes over)."""

    reason = "SHUTTING_DOWN"


class ArtifactStoreMissing(Unavailable):
    """This artifact is stored in S3, and this scheduler has no --artifact-store."""

    reason = "ARTIFACT_STORE_MISSING"


class Overloaded(JobschedError):
    """The scheduler is serving as many calls as it allows; retry after a short delay."""

    reason = "OVERLOADED"

    def __init__(self, message: str | None = None, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class RateLimited(Overloaded):
    """Too many calls from this caller; retry after the delay given."""

    reason = "RATE_LIMITED"


class TooManyStreams(Overloaded):
    """This caller holds as many streams open as it may; close one or retry later."""

    reason = "TOO_MANY_STREAMS"


class Unauthenticated(JobschedError):
    """A valid credential is required: send `authorization: Bearer <key>`."""

    reason = "UNAUTHENTICATED"

    def __init__(
        self, reason: str, message: str | None = None, *, principal: str = "", name: str = ""
    ) -> None:
        # CREDENTIAL_MISSING, CREDENTIAL_MALFORMED, CREDENTIAL_UNKNOWN, CREDENTIAL_REVOKED,
        # CREDENTIAL_EXPIRED: what the client can act on, nothing about other keys.
        self.reason = reason
        # Whose credential it was, when known (a revoked or expired key): for the audit log,
        # never told to the client.
        self.principal = principal
        self.principal_name = name
        super().__init__(message)


class PermissionDenied(JobschedError):
    """The credential does not allow this call."""

    reason = "PERMISSION_DENIED"

    def __init__(self, reason: str, message: str | None = None) -> None:
        # PERMISSION_MISSING (the role lacks it) or TENANT_NOT_ALLOWED.
        self.reason = reason
        super().__init__(message)


class QuotaExceeded(JobschedError):
    """Over a size limit."""

    reason = "QUOTA_EXCEEDED"

    def __init__(self, message: str | None = None, *, limit: int | None = None) -> None:
        self.limit = limit  # the limit, in bytes
        super().__init__(message)

    @property
    def metadata(self) -> dict[str, str]:
        return {} if self.limit is None else {"limit": str(self.limit)}


class ArtifactTooLarge(QuotaExceeded):
    """The artifact is over the scheduler's per-artifact limit."""

    reason = "ARTIFACT_TOO_LARGE"


class JobArtifactsTooLarge(QuotaExceeded):
    """The job's artifacts would be over the scheduler's per-job limit."""

    reason = "JOB_ARTIFACTS_TOO_LARGE"
