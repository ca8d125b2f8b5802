"""Translation between protobuf messages and domain values. No logic beyond the mapping."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from jobsched.v1 import job_pb2, job_service_pb2
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.jobs import Dependency, JobEventRecord, JobRecord, Progress
from scheduler.domain.log_lines import LogLine
from scheduler.domain.retry import RetryOverrides, RetryPolicy
from scheduler.domain.setting_sources import Source
from scheduler.domain.states import JobState
from scheduler.domain.validation import JobSpecInput

_TO_PROTO_STATE = {s: job_pb2.JobState.Value(f"JOB_STATE_{s.name}") for s in JobState}
_FROM_PROTO_STATE: dict[int, JobState] = {int(v): k for k, v in _TO_PROTO_STATE.items()}


def state_to_proto(state: JobState) -> job_pb2.JobState.ValueType:
    return _TO_PROTO_STATE[state]


def states_from_proto(values: Iterable[int], path: str) -> list[JobState]:
    """Job states of a filter. JOB_STATE_UNSPECIFIED is refused like an unknown number: it is
    what a client sends for a misspelled name (proto3 enums are open), and taking it as "any
    state" would silently widen the filter; an empty list is how to ask for any."""
    states: list[JobState] = []
    violations: list[FieldViolation] = []
    for i, value in enumerate(values):
        state = _FROM_PROTO_STATE.get(value)
        if state is None:
            what = "JOB_STATE_UNSPECIFIED" if value == job_pb2.JOB_STATE_UNSPECIFIED else value
            violations.append(
                FieldViolation(
                    f"{path}[{i}]", f"{what} is not a job state (leave the list empty for any)"
                )
            )
            continue
        states.append(state)
    if violations:
        raise InvalidArgument(violations)
    return states


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime | None) -> Timestamp | None:
    """As Timestamp.FromDatetime (a naive value is UTC), in a quarter of its time: every job in
    a response has five of them."""
    if value is None:
        return None
    delta = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


_NANOS = 1_000_000_000
# google.protobuf.Duration's own range: about 10,000 years either way.
_MAX_DURATION_SECONDS = 315_576_000_000


def from_timestamp(ts: Timestamp, path: str) -> datetime:
    """A client's Timestamp, checked as google.protobuf.Timestamp defines it (nanos in
    [0, 1e9), years 1 to 9999): protobuf's own conversion carries excess nanos over into
    seconds instead of refusing them."""
    if not 0 <= ts.nanos < _NANOS:
        raise InvalidArgument([FieldViolation(path, "nanos must be in [0, 999999999]")])
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            [FieldViolation(path, "is not a valid timestamp (years 1 to 9999, nanos 0..999999999)")]
        ) from None


def from_duration(d: Duration, path: str) -> timedelta:
    """A client's Duration, checked as google.protobuf.Duration defines it: |nanos| < 1e9 with
    the sign of seconds, |seconds| within about 10,000 years. (ToTimedelta took
    {seconds: 1, nanos: 2000000000} as 3 s.) The field's own bounds are the caller's."""
    if not -_NANOS < d.nanos < _NANOS:
        raise InvalidArgument([FieldViolation(path, "nanos must be in (-1e9, 1e9)")])
    if (d.seconds > 0 and d.nanos < 0) or (d.seconds < 0 and d.nanos > 0):
        raise InvalidArgument([FieldViolation(path, "seconds and nanos must have the same sign")])
    if abs(d.seconds) > _MAX_DURATION_SECONDS:
        raise InvalidArgument([FieldViolation(path, "is not a valid duration")])
    try:
        return d.ToTimedelta()
    except (ValueError, OverflowError):
        raise InvalidArgument([FieldViolation(path, "is not a valid duration")]) from None


def duration(value: timedelta | None) -> Duration | None:
    if value is None:
        return None
    if value < timedelta(0):  # seconds and nanos must share the sign: protobuf's own way
        d = Duration()
        d.FromTimedelta(value)
        return d
    return Duration(seconds=value.days * 86_400 + value.seconds, nanos=value.microseconds * 1000)


def spec_from_proto(spec: job_pb2.JobSpec, path: str) -> JobSpecInput:
    """`path` names the spec in field violations ("job", "jobs[3]")."""
    return JobSpecInput(
        queue=spec.queue,
        type=spec.type,
        payload=spec.payload,
        priority=spec.priority if spec.HasField("priority") else None,
        max_attempts=spec.max_attempts if spec.HasField("max_attempts") else None,
        run_at=from_timestamp(spec.run_at, f"{path}.run_at") if spec.HasField("run_at") else None,
        labels=dict(spec.labels),
        idempotency_key=spec.idempotency_key,
        timeout=from_duration(spec.timeout, f"{path}.timeout")
        if spec.HasField("timeout")
        else None,
        retry=retry_from_proto(spec.retry_policy, f"{path}.retry_policy")
        if spec.HasField("retry_policy")
        else RetryOverrides(),
        depends_on=tuple(spec.depends_on),
        ref=spec.ref,
        depends_on_refs=tuple(spec.depends_on_refs),
    )


def retry_from_proto(policy: job_pb2.RetryPolicy, path: str) -> RetryOverrides:
    """The fields set in a RetryPolicy message (unset ones are None)."""
    return RetryOverrides(
        initial=from_duration(policy.initial_backoff, f"{path}.initial_backoff")
        if policy.HasField("initial_backoff")
        else None,
        multiplier=policy.backoff_multiplier if policy.HasField("backoff_multiplier") else None,
        maximum=from_duration(policy.max_backoff, f"{path}.max_backoff")
        if policy.HasField("max_backoff")
        else None,
        jitter=policy.jitter if policy.HasField("jitter") else None,
    )


@functools.lru_cache(maxsize=1024)
def retry_to_proto(policy: RetryPolicy | RetryOverrides) -> job_pb2.RetryPolicy:
    """Cached: most jobs share a few policies. Callers copy it into their message (a message
    field assigned by the constructor or CopyFrom is a copy) and never change it."""
    return _retry_to_proto(policy)


def _retry_to_proto(policy: RetryPolicy | RetryOverrides) -> job_pb2.RetryPolicy:
    message = job_pb2.RetryPolicy(
        initial_backoff=duration(policy.initial),
        max_backoff=duration(policy.maximum),
    )
    if policy.multiplier is not None:
        message.backoff_multiplier = policy.multiplier
    if policy.jitter is not None:
        message.jitter = policy.jitter
    return message


def progress_to_proto(progress: Progress) -> job_pb2.Progress:
    return job_pb2.Progress(
        percent=progress.percent,
        step=progress.step,
        message=progress.message,
        eta=timestamp(progress.eta),
        update_time=timestamp(progress.updated_at),
    )


def job_to_proto(job: JobRecord) -> job_pb2.Job:
    return job_pb2.Job(
        id=job.id,
        queue=job.queue,
        type=job.type,
        payload=job.payload,
        priority=job.priority,
        state=state_to_proto(job.state),
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        run_at=timestamp(job.run_at),
        create_time=timestamp(job.created_at),
        start_time=timestamp(job.started_at),
        finish_time=timestamp(job.finished_at),
        progress=progress_to_proto(job.progress),
        last_error=job.last_error or "",
        result=job.result or b"",
        executor=job.executor or "",
        labels=job.labels,
        idempotency_key=job.idempotency_key or "",
        cancel_requested=job.cancel_requested,
        timeout=duration(job.timeout),
        update_time=timestamp(job.updated_at),
        retry_policy=retry_to_proto(job.retry_policy),
        depends_on=job.depends_on,
        pending_dependencies=job.pending_dependencies,
    )


_TO_PROTO_SOURCE = {s: job_pb2.SettingSource.Value(f"SETTING_SOURCE_{s.name}") for s in Source}


@functools.lru_cache(maxsize=256)
def _origins(
    sources: tuple[tuple[str, Source], ...],
) -> tuple[job_pb2.SettingOrigin, ...]:
    return tuple(
        job_pb2.SettingOrigin(setting=setting, source=_TO_PROTO_SOURCE[source])
        for setting, source in sources
    )


def add_setting_origins(message: job_pb2.Job, job: JobRecord) -> None:
    """Fill Job.setting_origins (GetJobStatus and SubmitJob only: six sub-messages per job cost
    about 2 us, which lists, batches and streams do not pay)."""
    message.setting_origins.extend(_origins(job.setting_sources))


def dependency_to_proto(dependency: Dependency) -> job_service_pb2.Dependency:
    return job_service_pb2.Dependency(id=dependency.job_id, state=state_to_proto(dependency.state))


def event_to_proto(event: JobEventRecord) -> job_pb2.JobEvent:
    return job_pb2.JobEvent(
        sequence=event.seq,
        from_state=state_to_proto(event.from_state)
        if event.from_state is not None
        else job_pb2.JOB_STATE_UNSPECIFIED,
        to_state=state_to_proto(event.to_state),
        attempt=event.attempt,
        executor=event.executor or "",
        reason=event.reason,
        actor=event.actor,
        create_time=timestamp(event.created_at),
    )


def log_line_to_proto(line: LogLine) -> job_service_pb2.LogLine:
    return job_service_pb2.LogLine(
        attempt=line.attempt,
        line=line.line,
        create_time=timestamp(line.created_at),
        line_number=line.line_number,
    )
