"""jobsched messages as the JSON the front end reads: states by name ("RUNNING"), times as ISO
8601 UTC strings, payloads and results decoded from JSON where they are JSON."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from jobsched.artifacts import Artifact
from jobsched.jobs import Job
from jobsched.v1 import job_pb2, queue_service_pb2, schedule_service_pb2

_PREFIX = "JOB_STATE_"


def state_name(value: int) -> str:
    return job_pb2.JobState.Name(value).removeprefix(_PREFIX)  # type: ignore[arg-type]


DEAD = job_pb2.JOB_STATE_DEAD


def time_of(value: datetime) -> str:
    """An aware datetime as ISO 8601 UTC."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _timestamp(message: Message, name: str) -> str | None:
    if not message.HasField(name):
        return None
    value: datetime = getattr(message, name).ToDatetime()
    return value.isoformat() + "Z"


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _value(data: Any) -> Any:
    """A decoded payload or result: JSON as it is, other bytes as base64 (marked)."""
    if isinstance(data, bytes):
        return {"base64": base64.b64encode(data).decode()}
    return data


_STATE_NAMES = {value: name.removeprefix(_PREFIX) for name, value in job_pb2.JobState.items()}


def _iso(ts: Any) -> str | None:
    """A set Timestamp as ISO 8601 UTC, straight from its fields (the list path's hot spot)."""
    if not ts.seconds and not ts.nanos:
        return None
    value = datetime.fromtimestamp(ts.seconds, UTC).replace(microsecond=ts.nanos // 1000)
    return value.isoformat().replace("+00:00", "Z")


def job_row(message: job_pb2.Job) -> dict[str, Any]:
    """A job as the jobs list shows it: no payload, result or progress details."""
    return {
        "id": message.id,
        "type": message.type,
        "queue": message.queue,
        "state": _STATE_NAMES[message.state],
        "attempt": message.attempt,
        "max_attempts": message.max_attempts,
        "priority": message.priority,
        "labels": dict(message.labels),
        "error": message.last_error,
        "executor": message.executor,
        "cancel_requested": message.cancel_requested,
        "created_at": _iso(message.create_time),
        "started_at": _iso(message.start_time),
        "finished_at": _iso(message.finish_time),
        "run_at": _iso(message.run_at),
        "progress": (
            {"percent": message.progress.percent, "step": message.progress.step}
            if message.HasField("progress") and message.progress.HasField("update_time")
            else None
        ),
    }


def job(message: job_pb2.Job, *, full: bool = True) -> dict[str, Any]:
    """A job; `full` adds payload and result (lists leave them out)."""
    value = Job.from_proto(message)
    out: dict[str, Any] = {
        "id": value.id,
        "type": value.type,
        "queue": value.queue,
        "state": str(value.state),
        "attempt": value.attempt,
        "max_attempts": value.max_attempts,
        "priority": value.priority,
        "labels": value.labels,
        "error": value.error,
        "executor": value.executor,
        "cancel_requested": value.cancel_requested,
        "depends_on": value.depends_on,
        "created_at": _time(value.created_at),
        "started_at": _time(value.started_at),
        "finished_at": _time(value.finished_at),
        "run_at": _time(value.run_at),
        "timeout": _seconds(value.timeout),
        "progress": None,
    }
    if value.progress is not None:
        out["progress"] = {
            "percent": value.progress.percent,
            "step": value.progress.step,
            "message": value.progress.message,
            "eta": _time(value.progress.eta),
        }
    if full:
        out["payload"] = _value(value.payload)
        out["result"] = _value(value.result)
    return out


def event(message: job_pb2.JobEvent) -> dict[str, Any]:
    return {
        "sequence": message.sequence,
        "from": state_name(message.from_state) if message.from_state else None,
        "to": state_name(message.to_state),
        "attempt": message.attempt,
        "executor": message.executor,
        "reason": message.reason,
        "actor": message.actor,
        "time": _timestamp(message, "create_time"),
    }


def attempts(events: list[job_pb2.JobEvent]) -> list[dict[str, Any]]:
    """One entry per attempt that ran: when it started and ended, on which executor, how it
    ended and with which error (the reason of the transition out of RUNNING)."""
    runs: dict[int, dict[str, Any]] = {}
    for item in events:
        if item.to_state == job_pb2.JOB_STATE_RUNNING:
            runs[item.attempt] = {
                "attempt": item.attempt,
                "executor": item.executor,
                "started_at": _timestamp(item, "create_time"),
                "finished_at": None,
                "outcome": None,
                "error": "",
            }
        elif item.from_state == job_pb2.JOB_STATE_RUNNING and item.attempt in runs:
            run = runs[item.attempt]
            run["finished_at"] = _timestamp(item, "create_time")
            run["outcome"] = state_name(item.to_state)
            if item.to_state != job_pb2.JOB_STATE_SUCCEEDED:
                run["error"] = item.reason
    return [runs[n] for n in sorted(runs)]


def queue(message: queue_service_pb2.Queue) -> dict[str, Any]:
    stats = message.stats
    return {
        "name": message.name,
        "paused": message.paused,
        "max_concurrency": (
            message.max_concurrency if message.HasField("max_concurrency") else None
        ),
        "default_max_attempts": (
            message.default_max_attempts if message.HasField("default_max_attempts") else None
        ),
        "jobs_by_state": {k.removeprefix(_PREFIX): v for k, v in stats.jobs_by_state.items()},
        "running": stats.running,
        "oldest_waiting_age": (
            stats.oldest_waiting_age.ToTimedelta().total_seconds()
            if stats.HasField("oldest_waiting_age")
            else None
        ),
        "waiting_by_reason": dict(stats.waiting_by_reason),
    }


def timestamp(message: Message, name: str) -> str | None:
    return _timestamp(message, name)


def schedule(message: schedule_service_pb2.Schedule) -> dict[str, Any]:
    template = message.job_template
    return {
        "id": message.id,
        "name": message.name,
        "cron": message.cron,
        "time_zone": message.time_zone,
        "paused": message.paused,
        "type": template.type,
        "queue": template.queue,
        "next_fire_times": [t.ToDatetime().isoformat() + "Z" for t in message.next_fire_times],
        "last_fire_time": _timestamp(message, "last_fire_time"),
        "last_job_id": message.last_job_id,
    }


def artifact(value: Artifact) -> dict[str, Any]:
    return {
        "name": value.name,
        "size_bytes": value.size_bytes,
        "sha256": value.sha256,
        "content_type": value.content_type,
        "attempt": value.attempt,
        "created_at": _time(value.created_at),
    }
