"""Validation and normalisation of client input. Pure: `now` is passed in, nothing is read.

Rules (documented in the proto and README):
- queue and type names are lower-cased, then must match NAME_PATTERN; an empty queue is "default";
- payload at most MAX_PAYLOAD_BYTES; priority in [PRIORITY_MIN, PRIORITY_MAX], default 50;
- max_attempts in [1, MAX_ATTEMPTS_LIMIT]; unset means the type's default, then the queue's,
  else DEFAULT_MAX_ATTEMPTS (resolved by the store at submit);
- run_at at most MAX_SCHEDULE_AHEAD in the future; a past run_at means now;
- at most MAX_LABELS labels, keys matching NAME_PATTERN, values at most MAX_LABEL_VALUE chars;
- idempotency key at most MAX_IDEMPOTENCY_KEY chars of printable text;
- no text a client sends may hold NUL (U+0000), which PostgreSQL's text and jsonb cannot store
  (`check_text`); values quoted in violations are shortened (scheduler/domain/echo.py);
- timeout, if given, in (0, MAX_TIMEOUT]; unset means the type's default, then the queue's;
- retry policy fields within the bounds of scheduler/domain/retry.py;
- dependencies (depends_on ids, ref, depends_on_refs): see scheduler/domain/dependencies.py;
- a job of type `command` has its payload checked field by field
  (scheduler/domain/command_payload.py: `job.payload.argv`, ...).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from scheduler.domain.command_payload import COMMAND_TYPE, check_command_payload
from scheduler.domain.dependencies import (
    MAX_BATCH_DEPENDENCIES,
    check_dependency_lists,
    check_ref,
    count_edges,
    resolve_refs,
)
from scheduler.domain.echo import echo
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.jobs import NewJob
from scheduler.domain.retry import RetryOverrides
from scheduler.domain.states import JobState

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
DEFAULT_QUEUE = "default"
MAX_PAYLOAD_BYTES = 1024 * 1024
PRIORITY_MIN, PRIORITY_MAX, DEFAULT_PRIORITY = 0, 100, 50
MAX_ATTEMPTS_LIMIT, DEFAULT_MAX_ATTEMPTS = 100, 3
MAX_SCHEDULE_AHEAD = timedelta(days=365)
MAX_LABELS, MAX_LABEL_VALUE = 32, 256
MAX_IDEMPOTENCY_KEY = 200
MAX_TIMEOUT = timedelta(days=7)
MAX_BATCH = 5000
MAX_REASON = 1000


@dataclass(frozen=True, slots=True)
class JobSpecInput:
    """A job as a client sent it, before validation. None means "not given"."""

    queue: str = ""
    type: str = ""
    payload: bytes = b""
    priority: int | None = None
    max_attempts: int | None = None
    run_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    timeout: timedelta | None = None
    retry: RetryOverrides = field(default_factory=RetryOverrides)
    depends_on: tuple[str, ...] = ()  # ids of stored jobs
    ref: str = ""  # a name for depends_on_refs of other jobs of the same batch
    depends_on_refs: tuple[str, ...] = ()


def check_text(value: str, path: str, violations: list[FieldViolation]) -> None:
    """Refuse text PostgreSQL cannot store: NUL (U+0000), in text and in jsonb alike. (Strings
    decoded from protobuf are valid UTF-8, so NUL is the only such character.)"""
    if "\x00" in value:
        violations.append(FieldViolation(path, "must not contain NUL (U+0000)"))


def normalise_name(value: str) -> str:
    return value.lower()


def check_name(value: str, path: str, violations: list[FieldViolation]) -> str:
    name = normalise_name(value)
    if not NAME_PATTERN.fullmatch(name):
        violations.append(
            FieldViolation(
                path, f"{echo(value)} must match {NAME_PATTERN.pattern} (case-insensitive)"
            )
        )
    return name


def _check_spec(
    spec: JobSpecInput, now: datetime, path: str, violations: list[FieldViolation]
) -> NewJob:
    queue = check_name(spec.queue, f"{path}.queue", violations) if spec.queue else DEFAULT_QUEUE
    if not spec.type:
        violations.append(FieldViolation(f"{path}.type", "is required"))
        job_type = ""
    else:
        job_type = check_name(spec.type, f"{path}.type", violations)
    if len(spec.payload) > MAX_PAYLOAD_BYTES:
        violations.append(
            FieldViolation(
                f"{path}.payload",
                f"is {len(spec.payload)} bytes; at most {MAX_PAYLOAD_BYTES} are allowed",
                limit=str(MAX_PAYLOAD_BYTES),
            )
        )
    elif job_type == COMMAND_TYPE:
        check_command_payload(spec.payload, f"{path}.payload", violations)
    priority = DEFAULT_PRIORITY if spec.priority is None else spec.priority
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        violations.append(
            FieldViolation(
                f"{path}.priority",
                f"must be in [{PRIORITY_MIN}, {PRIORITY_MAX}]",
                limit=f"[{PRIORITY_MIN}, {PRIORITY_MAX}]",
            )
        )
    max_attempts = spec.max_attempts
    if max_attempts is not None and not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        violations.append(
            FieldViolation(
                f"{path}.max_attempts",
                f"must be in [1, {MAX_ATTEMPTS_LIMIT}]",
                limit=f"[1, {MAX_ATTEMPTS_LIMIT}]",
            )
        )
    run_at = spec.run_at
    if run_at is not None and run_at.tzinfo is None:
        run_at = run_at.replace(tzinfo=UTC)  # timestamps without a zone are UTC
    run_at = now if run_at is None or run_at <= now else run_at
    if run_at - now > MAX_SCHEDULE_AHEAD:
        violations.append(
            FieldViolation(f"{path}.run_at", f"is more than {MAX_SCHEDULE_AHEAD.days} days ahead")
        )
    if len(spec.labels) > MAX_LABELS:
        violations.append(
            FieldViolation(f"{path}.labels", f"at most {MAX_LABELS} labels", limit=str(MAX_LABELS))
        )
    for key, value in spec.labels.items():
        label = f"{path}.labels[{echo(key)}]"
        if not NAME_PATTERN.fullmatch(key):
            violations.append(FieldViolation(label, f"key must match {NAME_PATTERN.pattern}"))
        if len(value) > MAX_LABEL_VALUE:
            violations.append(
                FieldViolation(
                    label,
                    f"value is longer than {MAX_LABEL_VALUE} characters",
                    limit=str(MAX_LABEL_VALUE),
                )
            )
        else:
            check_text(value, label, violations)
    key = spec.idempotency_key
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        violations.append(
            FieldViolation(
                f"{path}.idempotency_key",
                f"must be at most {MAX_IDEMPOTENCY_KEY} printable characters",
                limit=str(MAX_IDEMPOTENCY_KEY),
            )
        )
    if spec.timeout is not None and not timedelta(0) < spec.timeout <= MAX_TIMEOUT:
        violations.append(
            FieldViolation(
                f"{path}.timeout", f"must be positive and at most {MAX_TIMEOUT.days} days"
            )
        )
    for name, description in spec.retry.problems():
        violations.append(FieldViolation(f"{path}.retry_policy.{name}", description))
    depends_on: list[str] = []
    for k, value in enumerate(spec.depends_on):
        try:
            depends_on.append(validate_job_id(value, f"{path}.depends_on[{k}]"))
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    check_ref(spec.ref, path, violations)
    check_dependency_lists(depends_on, spec.depends_on_refs, path, violations)
    return NewJob(
        queue=queue,
        type=job_type,
        payload=spec.payload,
        priority=priority,
        max_attempts=max_attempts,
        run_at=run_at,
        state=JobState.SCHEDULED if run_at > now else JobState.QUEUED,
        labels=dict(spec.labels),
        idempotency_key=key or None,
        timeout=spec.timeout,
        retry=spec.retry,
        depends_on=tuple(depends_on),
    )


def validate_job(spec: JobSpecInput, now: datetime, path: str = "job") -> NewJob:
    """Validate one job; raise InvalidArgument naming every offending field."""
    violations: list[FieldViolation] = []
    job = _check_spec(spec, now, path, violations)
    if violations:
        raise InvalidArgument(violations)
    if spec.depends_on_refs:  # a batch of one: a ref can only name the job itself
        [refs] = resolve_refs([spec.ref], [spec.depends_on_refs], [path])
        job = replace(job, depends_on_refs=refs)
    return job


def validate_batch(specs: Sequence[JobSpecInput], now: datetime) -> list[NewJob]:
    """Validate a batch: all jobs are valid, or InvalidArgument names every offending field."""
    violations: list[FieldViolation] = []
    if not specs:
        violations.append(FieldViolation("jobs", "at least one job is required"))
    if len(specs) > MAX_BATCH:
        violations.append(
            FieldViolation("jobs", f"at most {MAX_BATCH} jobs per batch", limit=str(MAX_BATCH))
        )
        raise InvalidArgument(violations)
    jobs = [_check_spec(s, now, f"jobs[{i}]", violations) for i, s in enumerate(specs)]
    seen: dict[str, int] = {}
    for i, job in enumerate(jobs):
        if job.idempotency_key is None:
            continue
        if job.idempotency_key in seen:
            violations.append(
                FieldViolation(
                    f"jobs[{i}].idempotency_key",
                    f"repeats the key of jobs[{seen[job.idempotency_key]}]",
                )
            )
        seen.setdefault(job.idempotency_key, i)
    if violations:
        raise InvalidArgument(violations)
    if any(s.ref or s.depends_on_refs for s in specs):
        positions = resolve_refs(
            [s.ref for s in specs],
            [s.depends_on_refs for s in specs],
            [f"jobs[{i}]" for i in range(len(specs))],
        )
        jobs = [
            replace(j, depends_on_refs=p) if p else j for j, p in zip(jobs, positions, strict=True)
        ]
    if count_edges(jobs) > MAX_BATCH_DEPENDENCIES:
        raise InvalidArgument(
            [FieldViolation("jobs", f"at most {MAX_BATCH_DEPENDENCIES} dependencies per batch")]
        )
    return jobs


_UUID_PATTERN = re.compile(
    r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I
)


def validate_job_id(value: str, path: str = "id") -> str:
    """Job ids are UUIDs; return the canonical text form."""
    # uuid.UUID alone also takes "0x" prefixes, signs, underscores and whitespace.
    if not isinstance(value, str) or not _UUID_PATTERN.fullmatch(value):
        raise InvalidArgument([FieldViolation(path, f"{echo(value)} is not a job id (a UUID)")])
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(
            [FieldViolation(path, f"{echo(value)} is not a job id (a UUID)")]
        ) from None


def validate_reason(value: str, path: str = "reason") -> str:
    violations: list[FieldViolation] = []
    if len(value) > MAX_REASON:
        violations.append(FieldViolation(path, f"at most {MAX_REASON} characters"))
    check_text(value, path, violations)
    if violations:
        raise InvalidArgument(violations)
    return value


def check_states(
    states: Iterable[JobState], allowed: frozenset[JobState], path: str, what: str
) -> tuple[JobState, ...]:
    chosen = tuple(sorted(set(states)))
    bad = [s for s in chosen if s not in allowed]
    if bad:
        raise InvalidArgument(
            [FieldViolation(path, f"{', '.join(s.name for s in bad)} is not {what}")]
        )
    return chosen or tuple(sorted(allowed))
