"""Plain data the scheduler passes between its layers: what to store and what was stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler.domain.retry import DEFAULT_RETRY_POLICY, RetryOverrides, RetryPolicy
from scheduler.domain.setting_sources import Source
from scheduler.domain.states import JobState


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated, normalised job ready to be inserted."""

    queue: str
    type: str
    payload: bytes
    priority: int
    max_attempts: int | None  # None: the type's default, the queue's, else DEFAULT_MAX_ATTEMPTS
    run_at: datetime
    state: JobState
    labels: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    timeout: timedelta | None = None  # None: the type's default, the queue's, else none
    retry: RetryOverrides = field(default_factory=RetryOverrides)
    # Dependencies (domain/dependencies.py): ids of stored jobs, and positions of jobs of the
    # same batch; pending_dependencies is set at submit, once their states are known.
    depends_on: tuple[str, ...] = ()
    depends_on_refs: tuple[int, ...] = ()
    pending_dependencies: int = 0
    # The W3C traceparent of the submit, kept for the attempts' spans (jobsched/tracing.py).
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float = 0.0
    step: str = ""
    message: str = ""
    eta: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A stored job. List queries leave `payload` and `result` empty (projected columns)."""

    id: str
    tenant: str
    queue: str
    type: str
    priority: int
    state: JobState
    attempt: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    last_error: str | None
    executor: str | None
    labels: dict[str, str]
    idempotency_key: str | None
    cancel_requested: bool
    timeout: timedelta | None
    event_seq: int
    payload: bytes = b""
    result: bytes | None = None
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY
    pending_dependencies: int = 0  # dependencies that have not succeeded yet
    # Ids of the jobs it depends on: filled by submits and GetJobStatus, empty in lists.
    depends_on: tuple[str, ...] = ()
    # Where max_attempts, timeout and each retry field came from at submit (setting, source),
    # in setting_sources.SETTINGS order; empty for jobs stored before that was recorded.
    setting_sources: tuple[tuple[str, Source], ...] = ()
    # The W3C traceparent of the submit; None when there was none.
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class JobEventRecord:
    """One row of a job's append-only history."""

    job_id: str
    seq: int
    from_state: JobState | None
    to_state: JobState
    attempt: int
    executor: str | None
    reason: str
    actor: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Dependency:
    """A job another job depends on, and its current state."""

    job_id: str
    state: JobState


@dataclass(frozen=True, slots=True)
class Submitted:
    """The outcome of a submit: the job, and whether it was created by this call."""

    job: JobRecord
    created: bool


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """The latest progress an executor reported for one running attempt."""

    job_id: str
    attempt: int
    progress: Progress
