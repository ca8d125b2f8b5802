"""Queue settings: the defaults a queue gives the jobs submitted to it. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from scheduler.domain.echo import echo
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.retry import RetryOverrides
from scheduler.domain.validation import MAX_ATTEMPTS_LIMIT, MAX_TIMEOUT


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """None means "not set": the global default applies."""

    name: str
    default_max_attempts: int | None = None
    default_timeout: timedelta | None = None
    retry: RetryOverrides = field(default_factory=RetryOverrides)
    updated_at: datetime | None = None
    paused: bool = False
    max_concurrency: int | None = None  # None: no limit
    # How long its finished jobs are kept: None the scheduler's default, zero forever.
    retention: timedelta | None = None


# update_mask paths, as in the proto, and what they change.
_RETRY_FIELDS = {
    "initial_backoff": "initial",
    "backoff_multiplier": "multiplier",
    "max_backoff": "maximum",
    "jitter": "jitter",
}
MAX_CONCURRENCY_LIMIT = 100_000
# A retention is subtracted from now in the sweep: far beyond PostgreSQL's earliest timestamp
# (4713 BC) would fail the sweep of every queue.
MAX_RETENTION = timedelta(days=36_500)
RETENTION_RULE = f"must be zero (keep forever) or from 1 microsecond to {MAX_RETENTION.days} days"
MASK_PATHS = (
    "max_concurrency",
    "retention",
    "default_max_attempts",
    "default_timeout",
    "default_retry_policy",
    *(f"default_retry_policy.{name}" for name in _RETRY_FIELDS),
)


def apply_update(current: QueueSettings, given: QueueSettings, paths: list[str]) -> QueueSettings:
    """`current` with the fields named by `paths` taken from `given` (a cleared field goes back to
    None). Raises InvalidArgument for an unknown path or a value out of range."""
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
        if path == "max_concurrency":
            updated = replace(updated, max_concurrency=given.max_concurrency)
        elif path == "default_max_attempts":
            updated = replace(updated, default_max_attempts=given.default_max_attempts)
        elif path == "default_timeout":
            updated = replace(updated, default_timeout=given.default_timeout)
        elif path == "retention":
            updated = replace(updated, retention=given.retention)
        elif path == "default_retry_policy":
            retry = given.retry
        else:
            attribute = _RETRY_FIELDS[path.removeprefix("default_retry_policy.")]
            retry = replace(retry, **{attribute: getattr(given.retry, attribute)})
    updated = replace(updated, retry=retry)
    check_settings(updated)
    return updated


def check_settings(settings: QueueSettings) -> None:
    violations = []
    limit = settings.max_concurrency
    if limit is not None and not 1 <= limit <= MAX_CONCURRENCY_LIMIT:
        violations.append(
            FieldViolation("queue.max_concurrency", f"must be in [1, {MAX_CONCURRENCY_LIMIT}]")
        )
    attempts = settings.default_max_attempts
    if attempts is not None and not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
        violations.append(
            FieldViolation("queue.default_max_attempts", f"must be in [1, {MAX_ATTEMPTS_LIMIT}]")
        )
    timeout = settings.default_timeout
    if timeout is not None and not timedelta(0) < timeout <= MAX_TIMEOUT:
        violations.append(
            FieldViolation(
                "queue.default_timeout", f"must be positive and at most {MAX_TIMEOUT.days} days"
            )
        )
    retention = settings.retention
    if retention is not None and not timedelta(0) <= retention <= MAX_RETENTION:
        violations.append(FieldViolation("queue.retention", RETENTION_RULE))
    for name, description in settings.retry.problems():
        violations.append(FieldViolation(f"queue.default_retry_policy.{name}", description))
    if violations:
        raise InvalidArgument(violations)
