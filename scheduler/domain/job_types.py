"""Job-type settings: the defaults a job type gives its jobs, between the job's own values and
its queue's. Pure.

Precedence at submit, for each setting on its own (max_attempts, timeout and every retry policy
field): the job's value > its type's > its queue's > the built-in default. The store resolves it
in the INSERT (scheduler/store/jobs.py) and records where each value came from
(scheduler/domain/setting_sources.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from scheduler.domain.echo import echo
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.retry import RetryOverrides
from scheduler.domain.validation import MAX_ATTEMPTS_LIMIT, MAX_TIMEOUT, check_name


@dataclass(frozen=True, slots=True)
class JobTypeSettings:
    """None means "not set": the job inherits from its queue, then the built-in default."""

    name: str
    max_attempts: int | None = None
    timeout: timedelta | None = None
    retry: RetryOverrides = field(default_factory=RetryOverrides)
    updated_at: datetime | None = None

    @property
    def empty(self) -> bool:
        """No setting at all: the type behaves as if never configured (and is not listed)."""
        return self.max_attempts is None and self.timeout is None and self.retry == RetryOverrides()


# update_mask paths, as in the proto, and the RetryOverrides attribute each retry path changes.
RETRY_FIELDS = {
    "initial_backoff": "initial",
    "backoff_multiplier": "multiplier",
    "max_backoff": "maximum",
    "jitter": "jitter",
}
MASK_PATHS = (
    "max_attempts",
    "timeout",
    "retry_policy",
    *(f"retry_policy.{name}" for name in RETRY_FIELDS),
)


def check_type_name(value: str, path: str) -> str:
    """The normalised name; required, and validated as SubmitJob validates JobSpec.type."""
    violations: list[FieldViolation] = []
    name = check_name(value, path, violations) if value else ""
    if not value:
        violations.append(FieldViolation(path, "is required"))
    if violations:
        raise InvalidArgument(violations)
    return name


def apply_update(
    current: JobTypeSettings, given: JobTypeSettings, paths: list[str]
) -> JobTypeSettings:
    """`current` with the fields named by `paths` taken from `given` (a field unset in `given`
    is cleared: it inherits again). Raises InvalidArgument for an unknown path or a value out of
    range, naming the field (`job_type.timeout`, ...)."""
    violations = [
        FieldViolation(
            f"update_mask.paths[{i}]", f"{echo(path)} is not one of {', '.join(MASK_PATHS)}"
        )
        for i, path in enumerate(paths)
        if path not in MASK_PATHS
    ]
    if violations:
        raise InvalidArgument(violations)
    updated = current
    retry = current.retry
    for path in paths:
        if path == "max_attempts":
            updated = replace(updated, max_attempts=given.max_attempts)
        elif path == "timeout":
            updated = replace(updated, timeout=given.timeout)
        elif path == "retry_policy":
            retry = given.retry
        else:
            attribute = RETRY_FIELDS[path.removeprefix("retry_policy.")]
            retry = replace(retry, **{attribute: getattr(given.retry, attribute)})
    updated = replace(updated, retry=retry)
    check_settings(updated)
    return updated


def check_settings(settings: JobTypeSettings) -> None:
    violations = []
    attempts = settings.max_attempts
    if attempts is not None and not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
        violations.append(
            FieldViolation("job_type.max_attempts", f"must be in [1, {MAX_ATTEMPTS_LIMIT}]")
        )
    timeout = settings.timeout
    if timeout is not None and not timedelta(0) < timeout <= MAX_TIMEOUT:
        violations.append(
            FieldViolation(
                "job_type.timeout", f"must be positive and at most {MAX_TIMEOUT.days} days"
            )
        )
    for name, description in settings.retry.problems():
        violations.append(FieldViolation(f"job_type.retry_policy.{name}", description))
    if violations:
        raise InvalidArgument(violations)
