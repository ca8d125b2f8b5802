"""How the CLI prints: protobuf JSON, rich tables of jobs and events, times and sizes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

from google.protobuf import json_format, message, timestamp_pb2
from rich.console import Console
from rich.table import Table

from jobsched.v1 import job_pb2


def to_dict(msg: message.Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def make_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped output: 80 columns would wrap job ids; tables stay as narrow as their content.
        console = Console(highlight=False, width=240)
    return console


def state_name(state: job_pb2.JobState.ValueType) -> str:
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def state_label(job: job_pb2.Job) -> str:
    # The flag stays set once the job is cancelled; it only says something while it runs.
    pending = job.cancel_requested and job.state == job_pb2.JOB_STATE_RUNNING
    return state_name(job.state) + (" (cancel requested)" if pending else "")


def time_text(msg: message.Message, field: str) -> str:
    if not msg.HasField(field):
        return "-"
    ts: timestamp_pb2.Timestamp = getattr(msg, field)
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def ts_text(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def seconds_text(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def bytes_preview(data: bytes, limit: int = 200) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"<{len(data)} bytes>"
    return text if len(text) <= limit else text[:limit] + "…"


def _source(job: job_pb2.Job, setting: str) -> str:
    """ " (type)": where the job's setting came from at submit (job, type, queue or default), or
    nothing when the scheduler did not say."""
    for origin in job.setting_origins:
        if origin.setting == setting and origin.source != job_pb2.SETTING_SOURCE_UNSPECIFIED:
            name = job_pb2.SettingSource.Name(origin.source).removeprefix("SETTING_SOURCE_")
            return f" ({name.lower()})"
    return ""


def _retry_text(job: job_pb2.Job) -> str:
    policy = job.retry_policy
    return ", ".join(
        (
            f"initial {seconds_text(policy.initial_backoff.ToTimedelta())}"
            + _source(job, "retry_policy.initial_backoff"),
            f"x{policy.backoff_multiplier:g}" + _source(job, "retry_policy.backoff_multiplier"),
            f"max {seconds_text(policy.max_backoff.ToTimedelta())}"
            + _source(job, "retry_policy.max_backoff"),
            f"jitter {policy.jitter:g}" + _source(job, "retry_policy.jitter"),
        )
    )


def print_job(console: Console, job: job_pb2.Job) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("state", state_label(job)),
        ("queue", job.queue),
        ("type", job.type),
        ("priority", str(job.priority)),
        ("attempt", f"{job.attempt} of {job.max_attempts}{_source(job, 'max_attempts')}"),
        (
            "timeout",
            (seconds_text(job.timeout.ToTimedelta()) if job.HasField("timeout") else "none")
            + _source(job, "timeout"),
        ),
        ("retry", _retry_text(job)),
        ("run at", time_text(job, "run_at")),
        ("created", time_text(job, "create_time")),
        ("started", time_text(job, "start_time")),
        ("finished", time_text(job, "finish_time")),
    ]
    if job.executor:
        rows.append(("executor", job.executor))
    progress = job.progress
    if progress.percent or progress.step or progress.message:
        rows.append(
            (
                "progress",
                " ".join(
                    p for p in (f"{progress.percent:g}%", progress.step, progress.message) if p
                ),
            )
        )
    if job.last_error:
        rows.append(("last error", job.last_error))
    if job.labels:
        rows.append(("labels", ", ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))))
    if job.idempotency_key:
        rows.append(("idempotency key", job.idempotency_key))
    if job.payload:
        rows.append(("payload", bytes_preview(job.payload)))
    if job.result:
        rows.append(("result", bytes_preview(job.result)))
    for key, value in rows:
        grid.add_row(key, value)
    console.print(grid)


def first_line(text: str) -> str:
    """The first line of a multi-line error (a traceback follows it), for one-line views."""
    head, _, rest = text.partition("\n")
    return f"{head} (more: jobsched status)" if rest.strip() else head


def print_events(console: Console, events: Sequence[job_pb2.JobEvent]) -> None:
    table = Table(title="events", title_justify="left")
    for column in ("seq", "time", "from", "to", "attempt", "actor", "reason"):
        table.add_column(column, no_wrap=column != "reason")
    for event in events:
        table.add_row(
            str(event.sequence),
            time_text(event, "create_time"),
            "-"
            if event.from_state == job_pb2.JOB_STATE_UNSPECIFIED
            else state_name(event.from_state),
            state_name(event.to_state),
            str(event.attempt),
            event.actor,
            event.reason,
        )
    console.print(table)


def print_jobs(console: Console, jobs: Sequence[job_pb2.Job], *, history: bool) -> None:
    table = Table()
    table.add_column("id", no_wrap=True)
    table.add_column("queue")
    table.add_column("type")
    table.add_column("state")
    table.add_column("priority", justify="right")
    table.add_column("attempt", justify="right")
    table.add_column("finished" if history else "created", no_wrap=True)
    if history:
        table.add_column("last error", overflow="ellipsis", max_width=60)
    for job in jobs:
        row = [
            job.id,
            job.queue,
            job.type,
            state_label(job),
            str(job.priority),
            f"{job.attempt}/{job.max_attempts}",
            time_text(job, "finish_time" if history else "create_time"),
        ]
        if history:
            row.append(first_line(job.last_error))
        table.add_row(*row)
    console.print(table)
