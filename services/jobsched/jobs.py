"""Jobs as Python objects rather than protobuf messages: the state as a `JobState` (a str enum,
"SUCCEEDED"), payloads and results decoded from JSON, times as aware datetimes (UTC). The synchronous
client (jobsched.sync_client) returns these; `Job.from_proto` converts any `jobsched.v1.Job`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jobsched.v1 import job_pb2

_PREFIX = "JOB_STATE_"


class JobState(enum.StrEnum):
    SCHEDULED = "SCHEDULED"
    WAITING = "WAITING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @classmethod
    def from_proto(cls, value: int) -> JobState:
        return cls(job_pb2.JobState.Name(value).removeprefix(_PREFIX))  # type: ignore[arg-type]


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})


def decode(data: bytes) -> Any:
    """JSON bytes decoded; other bytes as they are; empty as None."""
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    value: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    return value


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float
    step: str = ""
    message: str = ""
    eta: datetime | None = None


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    type: str
    queue: str
    state: JobState
    attempt: int
    max_attempts: int
    priority: int
    payload: Any
    result: Any
    error: str
    labels: dict[str, str]
    progress: Progress | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    run_at: datetime | None
    timeout: timedelta | None
    depends_on: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    executor: str = ""

    @property
    def done(self) -> bool:
        """Whether the job has ended (SUCCEEDED, DEAD or CANCELLED)."""
        return self.state.terminal

    @classmethod
    def from_proto(cls, job: job_pb2.Job) -> Job:
        progress = None
        if job.HasField("progress") and job.progress.HasField("update_time"):
            progress = Progress(
                job.progress.percent,
                job.progress.step,
                job.progress.message,
                _time(job.progress, "eta"),
            )
        return cls(
            id=job.id,
            type=job.type,
            queue=job.queue,
            state=JobState.from_proto(job.state),
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            priority=job.priority,
            payload=decode(job.payload),
            result=decode(job.result),
            error=job.last_error,
            labels=dict(job.labels),
            progress=progress,
            created_at=_time(job, "create_time"),
            started_at=_time(job, "start_time"),
            finished_at=_time(job, "finish_time"),
            run_at=_time(job, "run_at"),
            timeout=job.timeout.ToTimedelta() if job.HasField("timeout") else None,
            depends_on=list(job.depends_on),
            cancel_requested=job.cancel_requested,
            executor=job.executor,
        )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One item of a watch: `kind` is "snapshot", "transition", "progress" or "log"; `job` is
    set on snapshots, `state` and `reason` on transitions (the state entered, and why),
    `progress` on progress, and `line` (with `attempt`) on log lines."""

    kind: str
    sequence: int
    job: Job | None = None
    state: JobState | None = None
    reason: str = ""
    progress: Progress | None = None
    line: str = ""
    attempt: int = 0


def watch_event(item: Any) -> WatchEvent:
    """A WatchJobResponse as a WatchEvent."""
    kind = item.WhichOneof("item")
    if kind == "snapshot":
        return WatchEvent("snapshot", item.sequence, job=Job.from_proto(item.snapshot))
    if kind == "event":
        return WatchEvent(
            "transition",
            item.sequence,
            state=JobState.from_proto(item.event.to_state),
            reason=item.event.reason,
        )
    if kind == "progress":
        p = item.progress
        return WatchEvent(
            "progress", item.sequence, progress=Progress(p.percent, p.step, p.message)
        )
    return WatchEvent("log", item.sequence, line=item.log.line, attempt=item.log.attempt)


class JobFailedError(Exception):
    """A job waited for ended DEAD or CANCELLED; `job` is how it ended, `error` its last error
    (for a handler's exception: its message, with the traceback where the executor sent one)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.error = job.error
        super().__init__(f"job {job.id} ({job.type}) ended {job.state}: {job.error or 'no error'}")
