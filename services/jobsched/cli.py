"""The `jobsched` command: run the scheduler, submit jobs, inspect and control them.

    jobsched [--address HOST:PORT] [--tenant T] [--timeout S] COMMAND ...

    scheduler [ARGS...]  run a scheduler replica; ARGS go to `python -m scheduler`
    dev [ARGS...]        a scheduler and an executor for local development (`make run`)
    migrate [ARGS...]    apply the database migrations and exit
    executor [ARGS...]   run an executor (`python -m executor`; --scheduler ADDR, --capacity N)
    submit --type T      submit a job; prints its id (the job with --json); --after ID
                         (repeatable): run it once that job has succeeded
    status ID            show a job and its dependencies (--events: with its history)
    watch ID             a live progress bar and log lines until the job ends (submit --watch)
    logs ID              a job's log lines, by attempt (--attempt N: only that one)
    ls                   list active jobs (default) or finished ones (--history); --watch:
                         then one line per change of a matching job until Ctrl-C
    cancel ID            cancel a job
    retry ID             move a DEAD or CANCELLED job back to QUEUED
    retry --dead         retry the dead-letter queue (--cancelled: cancelled jobs; --queue,
                         --type, --limit N filter; prints how many were retried)
    delete ID            delete a job and its history
    schedules ACTION     cron schedules: create NAME --cron EXPR --type T [--tz ZONE ...],
                         ls, show NAME, pause NAME, resume NAME, delete NAME, trigger NAME

--address defaults to $JOBSCHED_ADDRESS, else 127.0.0.1:50051; --tenant to $JOBSCHED_TENANT.
--json prints protobuf JSON with the proto field names (bytes fields are base64).

Exit codes:
  0  success
  1  unexpected error
  2  bad input: invalid arguments, or INVALID_ARGUMENT from the scheduler
  3  not found (the job does not exist, or belongs to another tenant)
  4  failed precondition: the job's state does not allow it, or a concurrent change
  5  scheduler unavailable, or no answer within --timeout
  6  the watched job ended without succeeding (DEAD or CANCELLED)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from google.protobuf import json_format, message, timestamp_pb2
from rich.console import Console
from rich.table import Table

from jobsched.client import JobschedClient, make_retry_policy, parse_state
from jobsched.errors import (
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobschedError,
    NotFoundError,
    UnavailableError,
)
from jobsched.v1 import job_pb2, job_service_pb2, queue_service_pb2, schedule_service_pb2

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_PRECONDITION = 4
EXIT_UNAVAILABLE = 5
EXIT_JOB_FAILED = 6

# The --help epilog shows the same table as this module's docstring (absent under python -OO).
EXIT_CODES_HELP = "Exit codes:" + (__doc__ or "").partition("Exit codes:")[2]

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0
DEFAULT_LIMIT = 100
_RETRY_BATCH = 1000  # jobs per RetryJobs call (the server's default)
_MAX_PAGE_SIZE = 1000
_PRIORITY_NAMES = {"low": 25, "medium": 50, "high": 75}

_Handler = Callable[[JobschedClient, argparse.Namespace], Awaitable[int]]


# -- argument types: raising ArgumentTypeError makes argparse exit 2 with the usage -------------


def _priority(value: str) -> int:
    named = _PRIORITY_NAMES.get(value.lower())
    if named is not None:
        return named
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an integer or one of {', '.join(_PRIORITY_NAMES)}"
        ) from None


def _json_payload(value: str) -> str:
    try:
        json.loads(value)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    return value


def _label(value: str) -> tuple[str, str]:
    key, sep, label_value = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, label_value


def _timestamp_arg(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time") from None
    # A time typed without an offset means the user's local time, not UTC.
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


def _state_arg(value: str) -> job_pb2.JobState.ValueType:
    try:
        return parse_state(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a non-negative integer")
    return number


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration_arg(value: str) -> timedelta:
    """ "1.5" (seconds), "500ms", "30s", "5m", "2h", "1d"."""
    text = value.strip().lower()
    for unit in sorted(_DURATION_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            number, scale = text[: -len(unit)], _DURATION_UNITS[unit]
            break
    else:
        number, scale = text, 1.0
    try:
        seconds = float(number) * scale
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration like 30s, 5m, 2h, 1d or a number of seconds"
        )
    return timedelta(seconds=seconds)


def _retry_policy_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --retry-* options given, as make_retry_policy arguments (None when none is)."""
    given = {
        "initial_backoff": args.retry_initial_backoff,
        "backoff_multiplier": args.retry_multiplier,
        "max_backoff": args.retry_max_backoff,
        "jitter": args.retry_jitter,
    }
    given = {k: v for k, v in given.items() if v is not None}
    return given or None


def _add_retry_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group(f"retry policy ({what})")
    group.add_argument(
        "--retry-initial-backoff", type=_duration_arg, metavar="D", help="wait before retry 1"
    )
    group.add_argument("--retry-multiplier", type=float, metavar="X", help="growth per retry")
    group.add_argument("--retry-max-backoff", type=_duration_arg, metavar="D", help="longest wait")
    group.add_argument("--retry-jitter", type=float, metavar="F", help="spread, 0..1")


# -- output ------------------------------------------------------------------------------------


def _to_dict(msg: message.Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped output: 80 columns would wrap job ids; tables stay as narrow as their content.
        console = Console(highlight=False, width=240)
    return console


def _state_name(state: job_pb2.JobState.ValueType) -> str:
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def _state_label(job: job_pb2.Job) -> str:
    # The flag stays set once the job is cancelled; it only says something while it runs.
    pending = job.cancel_requested and job.state == job_pb2.JOB_STATE_RUNNING
    return _state_name(job.state) + (" (cancel requested)" if pending else "")


def _time(msg: message.Message, field: str) -> str:
    if not msg.HasField(field):
        return "-"
    ts: timestamp_pb2.Timestamp = getattr(msg, field)
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _bytes_preview(data: bytes, limit: int = 200) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"<{len(data)} bytes>"
    return text if len(text) <= limit else text[:limit] + "…"


def _print_job(console: Console, job: job_pb2.Job) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("state", _state_label(job)),
        ("queue", job.queue),
        ("type", job.type),
        ("priority", str(job.priority)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("run at", _time(job, "run_at")),
        ("created", _time(job, "create_time")),
        ("started", _time(job, "start_time")),
        ("finished", _time(job, "finish_time")),
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
        rows.append(("payload", _bytes_preview(job.payload)))
    if job.result:
        rows.append(("result", _bytes_preview(job.result)))
    for key, value in rows:
        grid.add_row(key, value)
    console.print(grid)


def _print_events(console: Console, events: Sequence[job_pb2.JobEvent]) -> None:
    table = Table(title="events", title_justify="left")
    for column in ("seq", "time", "from", "to", "attempt", "actor", "reason"):
        table.add_column(column, no_wrap=column != "reason")
    for event in events:
        table.add_row(
            str(event.sequence),
            _time(event, "create_time"),
            "-"
            if event.from_state == job_pb2.JOB_STATE_UNSPECIFIED
            else _state_name(event.from_state),
            _state_name(event.to_state),
            str(event.attempt),
            event.actor,
            event.reason,
        )
    console.print(table)


def _print_jobs(console: Console, jobs: Sequence[job_pb2.Job], *, history: bool) -> None:
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
            _state_label(job),
            str(job.priority),
            f"{job.attempt}/{job.max_attempts}",
            _time(job, "finish_time" if history else "create_time"),
        ]
        if history:
            row.append(job.last_error)
        table.add_row(*row)
    console.print(table)


# -- client commands ---------------------------------------------------------------------------


async def _submit(client: JobschedClient, args: argparse.Namespace) -> int:
    result = await client.submit_job(
        {
            "type": args.type,
            "queue": args.queue,
            "payload": args.payload,
            "priority": args.priority,
            "max_attempts": args.max_attempts,
            "run_at": args.run_at,
            "labels": dict(args.labels),
            "idempotency_key": args.idempotency_key,
            "timeout": args.timeout_job,
            "retry_policy": _retry_policy_of(args),
            "depends_on": args.after,
        }
    )
    if args.json:
        _print_json(_to_dict(result.job))
    else:
        print(result.job.id)
        if not result.created:
            print("note: idempotency key already used; this is the existing job", file=sys.stderr)
    if args.watch:
        return await _follow(client, result.job.id)
    return EXIT_OK


async def _watch(client: JobschedClient, args: argparse.Namespace) -> int:
    return await _follow(client, args.id)


async def _follow(client: JobschedClient, job_id: str) -> int:
    """A live progress bar (percent, step, ETA), with the log lines printed above it, until the
    job ends; exit 0 only if it succeeded."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
    from rich.text import Text

    final: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_UNSPECIFIED
    with Progress(
        TextColumn("{task.fields[state]:<10}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[step]} {task.fields[eta]}"),
        console=_console(),
    ) as bar:
        task = bar.add_task("job", total=100, state="", step="", eta="")
        async for item in client.watch(job_id):
            kind = item.WhichOneof("item")
            if kind == "snapshot":
                final = item.snapshot.state
                progress = item.snapshot.progress
            elif kind == "event":
                final = item.event.to_state
                progress = None
            elif kind == "progress":
                progress = item.progress
            elif kind == "log":
                # Text, not markup: a handler's line is printed exactly as it was logged.
                bar.console.print(Text(_log_text(item.log)))
                continue
            else:
                continue
            fields: dict[str, Any] = {"state": _state_name(final)}
            if progress is not None:
                eta = ""
                if progress.HasField("eta"):
                    eta = "ETA " + progress.eta.ToDatetime(tzinfo=UTC).strftime("%H:%M:%S")
                fields |= {"completed": progress.percent, "step": progress.step, "eta": eta}
            if final == job_pb2.JOB_STATE_SUCCEEDED:
                fields["completed"] = 100
            bar.update(task, **fields)
    print(f"job {job_id} {_state_name(final)}")
    return EXIT_OK if final == job_pb2.JOB_STATE_SUCCEEDED else EXIT_JOB_FAILED


def _log_text(line: job_service_pb2.LogLine) -> str:
    return f"attempt {line.attempt} | {line.line}"


async def _logs(client: JobschedClient, args: argparse.Namespace) -> int:
    lines = client.logs(args.id, args.attempt, page_size=_MAX_PAGE_SIZE)
    async with aclosing(lines) as stream:
        async for line in stream:
            if args.json:
                print(json.dumps(_to_dict(line), sort_keys=True, ensure_ascii=False))
            else:
                print(_log_text(line))
    return EXIT_OK


async def _status(client: JobschedClient, args: argparse.Namespace) -> int:
    response = await client.status(args.id, include_events=args.events)
    job, events = response.job, list(response.events)
    if args.json:
        if args.events:
            _print_json({"job": _to_dict(job), "events": [_to_dict(e) for e in events]})
        else:
            _print_json(_to_dict(job))
        return EXIT_OK
    console = _console()
    _print_job(console, job)
    if response.dependencies:
        _print_dependencies(console, job, response.dependencies)
    if args.events:
        _print_events(console, events)
    return EXIT_OK


def _print_dependencies(
    console: Console, job: job_pb2.Job, dependencies: Sequence[job_service_pb2.Dependency]
) -> None:
    title = f"depends on ({job.pending_dependencies} of {len(dependencies)} not succeeded yet)"
    table = Table(title=title, title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("state")
    for dependency in dependencies:
        table.add_row(dependency.id, _state_name(dependency.state))
    console.print(table)


async def _ls(client: JobschedClient, args: argparse.Namespace) -> int:
    if args.watch:
        return await _watch_changes(client, args)
    limit: int = args.limit
    page_size = min(limit, _MAX_PAGE_SIZE) if limit else _MAX_PAGE_SIZE
    jobs_iter = (
        client.history(queue=args.queue, type=args.type, states=args.states, page_size=page_size)
        if args.history
        else client.list_active(
            queue=args.queue, type=args.type, states=args.states, page_size=page_size
        )
    )
    jobs: list[job_pb2.Job] = []
    async with aclosing(jobs_iter) as stream:
        async for job in stream:
            jobs.append(job)
            if limit and len(jobs) >= limit:
                break
    if args.json:
        _print_json([_to_dict(job) for job in jobs])
    else:
        _print_jobs(_console(), jobs, history=args.history)
    return EXIT_OK


def _change_line(job: job_pb2.Job) -> str:
    parts = [
        _time(job, "update_time"),
        f"{_state_label(job):<10}",
        job.id,
        job.queue,
        job.type,
        f"attempt {job.attempt}/{job.max_attempts}",
    ]
    if job.state == job_pb2.JOB_STATE_RUNNING and job.progress.HasField("update_time"):
        parts.append(f"{job.progress.percent:g}%")
        parts.extend(p for p in (job.progress.step, job.progress.message) if p)
    if job.last_error and job.state != job_pb2.JOB_STATE_SUCCEEDED:
        parts.append(f"error: {job.last_error}")
    return " ".join(parts)


async def _watch_changes(client: JobschedClient, args: argparse.Namespace) -> int:
    """`ls --watch`: one line per change of a matching job (WatchJobs) until SIGINT or SIGTERM."""

    async def follow() -> None:
        stream = client.watch_jobs(queue=args.queue, type=args.type, states=args.states)
        async with aclosing(stream) as items:
            async for item in items:
                kind = item.WhichOneof("item")
                if kind == "subscribed":
                    print("watching for changes (Ctrl-C to stop)", file=sys.stderr, flush=True)
                elif kind == "changes_dropped":
                    print(
                        "jobsched: fell behind, some changes were not shown (run ls to re-list)",
                        file=sys.stderr,
                        flush=True,
                    )
                elif args.json:
                    print(json.dumps(_to_dict(item.job), sort_keys=True), flush=True)
                else:
                    print(_change_line(item.job), flush=True)

    task = asyncio.ensure_future(follow())
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not task.cancelled() or (current is not None and current.cancelling()):
            raise  # not our signal: let the cancellation through
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return EXIT_OK


async def _cancel(client: JobschedClient, args: argparse.Namespace) -> int:
    job = await client.cancel(args.id, reason=args.reason)
    if args.json:
        _print_json(_to_dict(job))
    elif job.state == job_pb2.JOB_STATE_CANCELLED:
        print(f"{job.id} cancelled")
    else:
        print(f"{job.id} cancel requested ({_state_name(job.state)}; the executor will stop it)")
    return EXIT_OK


async def _retry(client: JobschedClient, args: argparse.Namespace) -> int:
    if args.id is None:
        return await _retry_many(client, args)
    job = await client.retry(args.id)
    if args.json:
        _print_json(_to_dict(job))
    else:
        print(
            f"{job.id} {_state_name(job.state)} (attempt {job.attempt + 1} of {job.max_attempts})"
        )
    return EXIT_OK


_RETRY_BULK_OPTIONS = ("--dead", "--cancelled", "--queue", "--type", "--limit")


def _check_retry(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`retry` takes one job id or the bulk options, never both (argparse cannot say that)."""
    bulk = args.dead or args.cancelled or args.queue or args.type or args.limit is not None
    if args.id is not None and bulk:
        parser.error(
            f"a job ID and the bulk options ({', '.join(_RETRY_BULK_OPTIONS)}) exclude each other"
        )
    if args.id is None and not (args.dead or args.cancelled):
        parser.error("give a job ID, or --dead and/or --cancelled to retry many jobs")


async def _retry_many(client: JobschedClient, args: argparse.Namespace) -> int:
    """Bulk retry, oldest finished first, _RETRY_BATCH jobs per call, until none match or
    --limit jobs were retried."""
    states = [
        name for name, chosen in (("dead", args.dead), ("cancelled", args.cancelled)) if chosen
    ]
    limit: int = args.limit or 0
    retried, more = 0, True
    while more and (not limit or retried < limit):
        batch = min(_RETRY_BATCH, limit - retried) if limit else _RETRY_BATCH
        count, more = await client.retry_many(
            queue=args.queue, type=args.type, states=states, limit=batch
        )
        retried += count
        if count == 0:
            break
    if args.json:
        _print_json({"retried": retried, "more": more})
    else:
        print(f"retried {retried} job{'' if retried == 1 else 's'}")
        if more:
            print("more jobs match: run it again to retry them", file=sys.stderr)
    return EXIT_OK


async def _delete(client: JobschedClient, args: argparse.Namespace) -> int:
    await client.delete(args.id)
    print(f"{args.id} deleted")
    return EXIT_OK


async def _set_priority(client: JobschedClient, args: argparse.Namespace) -> int:
    job, changed = await client.update_priority(args.id, args.level)
    if args.json:
        _print_json({"job": _to_dict(job), "changed": changed})
    else:
        print(f"{job.id} priority {job.priority}" + ("" if changed else " (unchanged)"))
    return EXIT_OK


def _seconds_text(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _queue_rows(queue: queue_service_pb2.Queue) -> list[tuple[str, str]]:
    policy = queue.default_retry_policy
    rows = [
        ("name", queue.name),
        ("paused", "yes" if queue.paused else "no"),
        (
            "max concurrency",
            str(queue.max_concurrency) if queue.HasField("max_concurrency") else "no limit",
        ),
        (
            "default max attempts",
            str(queue.default_max_attempts) if queue.HasField("default_max_attempts") else "3",
        ),
        (
            "default timeout",
            _seconds_text(queue.default_timeout.ToTimedelta())
            if queue.HasField("default_timeout")
            else "none",
        ),
    ]

    def duration_text(present: bool, value: timedelta) -> str:
        return _seconds_text(value) if present else "global default"

    def number_text(present: bool, value: float) -> str:
        return f"{value:g}" if present else "global default"

    rows += [
        (
            "retry initial backoff",
            duration_text(policy.HasField("initial_backoff"), policy.initial_backoff.ToTimedelta()),
        ),
        (
            "retry multiplier",
            number_text(policy.HasField("backoff_multiplier"), policy.backoff_multiplier),
        ),
        (
            "retry max backoff",
            duration_text(policy.HasField("max_backoff"), policy.max_backoff.ToTimedelta()),
        ),
        ("retry jitter", number_text(policy.HasField("jitter"), policy.jitter)),
    ]
    return rows


async def _queues(client: JobschedClient, args: argparse.Namespace) -> int:
    action = args.queues_action
    if action == "ls":
        queues = await client.queues()
        if args.json:
            _print_json([_to_dict(q) for q in queues])
            return EXIT_OK
        table = Table()
        for column in ("queue", "paused", "limit", "waiting", "queued", "running", "oldest"):
            table.add_column(column, justify="left" if column == "queue" else "right")
        table.add_column("why waiting")
        for q in queues:
            counts = q.stats.jobs_by_state
            waiting = sum(counts.get(f"JOB_STATE_{s}", 0) for s in ("WAITING", "SCHEDULED"))
            table.add_row(
                q.name,
                "yes" if q.paused else "",
                str(q.max_concurrency) if q.HasField("max_concurrency") else "",
                str(waiting),
                str(counts.get("JOB_STATE_QUEUED", 0)),
                str(q.stats.running),
                _seconds_text(q.stats.oldest_waiting_age.ToTimedelta())
                if q.stats.HasField("oldest_waiting_age")
                else "",
                ", ".join(
                    f"{reason.removeprefix('WAITING_REASON_').lower()} {count}"
                    for reason, count in sorted(q.stats.waiting_by_reason.items())
                ),
            )
        Console().print(table)
        return EXIT_OK
    if action == "show":
        queue = await client.get_queue(args.name)
    elif action == "pause":
        queue = await client.pause_queue(args.name)
    elif action == "resume":
        queue = await client.resume_queue(args.name)
    elif action == "set-concurrency":
        limited = queue_service_pb2.Queue(name=args.name)
        if args.limit > 0:
            limited.max_concurrency = args.limit
        queue = await client.update_queue(limited, ["max_concurrency"])
    else:  # set
        changes = queue_service_pb2.Queue(name=args.name)
        paths = []
        if args.max_attempts is not None:
            changes.default_max_attempts = args.max_attempts
            paths.append("default_max_attempts")
        if args.timeout_default is not None:
            changes.default_timeout.FromTimedelta(args.timeout_default)
            paths.append("default_timeout")
        policy = _retry_policy_of(args)
        if policy:
            changes.default_retry_policy.CopyFrom(make_retry_policy(**policy))
            paths += [f"default_retry_policy.{name}" for name in policy]
        if not paths:
            print("nothing to change: give at least one option (see --help)", file=sys.stderr)
            return EXIT_BAD_INPUT
        queue = await client.update_queue(changes, paths)
    if args.json:
        _print_json(_to_dict(queue))
    else:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for label, text in _queue_rows(queue):
            grid.add_row(label, text)
        Console().print(grid)
    return EXIT_OK


# -- schedules ---------------------------------------------------------------------------------


def _ts_text(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _policy_name(value: int, enum: Any, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower().replace("_", "-")


def _schedule_rows(schedule: schedule_service_pb2.Schedule) -> list[tuple[str, str]]:
    template = schedule.job_template
    catchup = _policy_name(
        schedule.catchup_policy, schedule_service_pb2.CatchupPolicy, "CATCHUP_POLICY_"
    )
    if schedule.catchup_policy != schedule_service_pb2.CATCHUP_POLICY_NONE:
        catchup += f" (within {_seconds_text(schedule.catchup_window.ToTimedelta())})"
    next_fires = [_ts_text(ts) for ts in schedule.next_fire_times]
    rows = [
        ("id", schedule.id),
        ("name", schedule.name),
        ("cron", f"{schedule.cron}  ({schedule.time_zone})"),
        ("paused", "yes" if schedule.paused else "no"),
        ("job", f"type {template.type}, queue {template.queue or 'default'}"),
        (
            "overlap",
            _policy_name(
                schedule.overlap_policy, schedule_service_pb2.OverlapPolicy, "OVERLAP_POLICY_"
            ),
        ),
        ("catch-up", catchup),
        ("next fires", ", ".join(next_fires) if next_fires else "-"),
        ("last fire", _time(schedule, "last_fire_time")),
        ("last job", schedule.last_job_id or "-"),
        ("created", _time(schedule, "create_time")),
    ]
    if template.payload:
        rows.insert(5, ("payload", _bytes_preview(template.payload)))
    return rows


def _print_schedule(schedule: schedule_service_pb2.Schedule) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in _schedule_rows(schedule):
        grid.add_row(label, value)
    _console().print(grid)


async def _schedules(client: JobschedClient, args: argparse.Namespace) -> int:
    action = args.schedules_action
    if action == "ls":
        schedules = [s async for s in client.list_schedules(page_size=_MAX_PAGE_SIZE)]
        if args.json:
            _print_json([_to_dict(s) for s in schedules])
            return EXIT_OK
        table = Table()
        for column in ("name", "cron", "time zone", "type", "paused", "next fire", "last fire"):
            table.add_column(column, no_wrap=True)
        for s in schedules:
            table.add_row(
                s.name,
                s.cron,
                s.time_zone,
                s.job_template.type,
                "yes" if s.paused else "",
                _ts_text(s.next_fire_times[0]) if s.next_fire_times else "-",
                _time(s, "last_fire_time"),
            )
        _console().print(table)
        return EXIT_OK
    if action == "trigger":
        job, skipped = await client.trigger_schedule(args.name)
        if args.json:
            _print_json({"job": _to_dict(job) if job is not None else None, "skipped": skipped})
        elif job is None:
            print("skipped: the previous run is still active (overlap policy skip)")
        else:
            print(job.id)
        return EXIT_OK
    if action == "delete":
        await client.delete_schedule(args.name)
        print(f"{args.name} deleted")
        return EXIT_OK
    if action == "create":
        schedule = await client.create_schedule(
            args.name,
            args.cron,
            {"type": args.type, "queue": args.queue, "payload": args.payload},
            time_zone=args.tz,
            overlap=args.overlap,
            catchup=args.catchup,
            catchup_window=args.catchup_window,
        )
    elif action == "pause":
        schedule = await client.pause_schedule(args.name)
    elif action == "resume":
        schedule = await client.resume_schedule(args.name)
    else:  # show
        schedule = await client.get_schedule(args.name)
    if args.json:
        _print_json(_to_dict(schedule))
    else:
        _print_schedule(schedule)
    return EXIT_OK


async def _run_client_command(handler: _Handler, args: argparse.Namespace) -> int:
    async with JobschedClient(args.address, tenant=args.tenant, timeout=args.timeout) as client:
        return await handler(client, args)


def _report(err: JobschedError, address: str, out: TextIO) -> int:
    if isinstance(err, InvalidArgumentError):
        if err.field_violations:
            print("jobsched: invalid request:", file=out)
            for field, description in err.field_violations:
                print(f"  {field}: {description}", file=out)
        else:
            print(f"jobsched: invalid request: {err.message}", file=out)
        return EXIT_BAD_INPUT
    if isinstance(err, (UnavailableError, DeadlineExceededError)):
        print(f"jobsched: scheduler at {address} unavailable: {err.message}", file=out)
        return EXIT_UNAVAILABLE
    print(f"jobsched: {err.message}", file=out)
    if isinstance(err, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(err, (FailedPreconditionError, ConflictError)):
        return EXIT_PRECONDITION
    return EXIT_ERROR


# -- server commands ---------------------------------------------------------------------------


def _run_executor(argv: list[str]) -> int:
    from executor.__main__ import main as executor_main

    return executor_main(argv)


def _run_scheduler(argv: list[str]) -> int:
    # Imported here so that client commands neither load nor need the server's dependencies.
    from scheduler.__main__ import main as scheduler_main

    try:
        return scheduler_main(argv)
    except SystemExit as exit_:
        # The scheduler's argparse exits on --help and bad arguments; keep main()'s contract.
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobsched",
        description="Run the jobsched scheduler, submit jobs, inspect and control them.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--address",
        default=os.environ.get("JOBSCHED_ADDRESS") or DEFAULT_ADDRESS,
        help="scheduler address, HOST:PORT, or several separated by commas to fail over between "
        "replicas (env JOBSCHED_ADDRESS; default %(default)s)",
    )
    parser.add_argument(
        "--tenant",
        default=os.environ.get("JOBSCHED_TENANT") or None,
        help="tenant of every call (env JOBSCHED_TENANT; the server's default is 'default')",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="deadline of each call in seconds (default %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # The server commands hand everything after their name to the scheduler's own parser,
    # options included. argparse.REMAINDER refuses a leading "--option", so these subparsers
    # use a prefix character that never occurs: every argument is then positional.
    for name, service, fixed, text in (
        (
            "scheduler",
            "scheduler",
            [],
            "run a scheduler replica (arguments go to `python -m scheduler`)",
        ),
        ("dev", "scheduler", ["--dev"], "run a scheduler and an executor for local development"),
        ("migrate", "scheduler", ["--migrate-only"], "apply the database migrations and exit"),
        ("executor", "executor", [], "run an executor (arguments go to `python -m executor`)"),
    ):
        server = commands.add_parser(
            name, help=text, description=text, add_help=False, prefix_chars="+"
        )
        server.add_argument("scheduler_args", nargs="*", metavar="ARGS")
        server.set_defaults(scheduler_argv=fixed, service=service)

    def client_command(name: str, handler: _Handler, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=text,
            description=text,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    submit = client_command("submit", _submit, "submit a job and print its id")
    submit.add_argument("--type", required=True, help="job type (selects the handler)")
    submit.add_argument("--queue", default="", help="queue (default: 'default')")
    submit.add_argument("--payload", type=_json_payload, help="payload, a JSON document")
    submit.add_argument(
        "--priority", type=_priority, help="0..100 or low/medium/high (default medium = 50)"
    )
    submit.add_argument("--max-attempts", type=int, help="attempts before DEAD (default 3)")
    submit.add_argument(
        "--run-at",
        type=_timestamp_arg,
        help="earliest start, ISO 8601 (without an offset: local time)",
    )
    submit.add_argument(
        "--label",
        dest="labels",
        type=_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label (repeatable)",
    )
    submit.add_argument("--idempotency-key", default="", help="submit at most once per key")
    submit.add_argument(
        "--after",
        action="append",
        default=[],
        metavar="ID",
        help="run only after this job succeeded (repeatable); cancelled if it ends DEAD or "
        "CANCELLED",
    )
    submit.add_argument(
        "--job-timeout",
        dest="timeout_job",
        type=_duration_arg,
        metavar="D",
        help="execution timeout of each attempt, e.g. 30s or 5m (default: the queue's)",
    )
    _add_retry_options(submit, "unset options: the queue's defaults")
    submit.add_argument("--json", action="store_true", help="print the job as JSON")
    submit.add_argument(
        "--watch", action="store_true", help="then show live progress until the job ends"
    )
    watch = client_command("watch", _watch, "show a job's live progress until it ends")
    watch.add_argument("id", help="job id")

    logs = client_command("logs", _logs, "print a job's log lines, by attempt")
    logs.add_argument("id", help="job id")
    logs.add_argument(
        "--attempt",
        type=_positive_int,
        default=0,
        help="only the lines of this attempt (default 0: every attempt)",
    )
    logs.add_argument(
        "--json", action="store_true", help="one JSON object per line (attempt, line_number, ...)"
    )

    status = client_command("status", _status, "show a job")
    status.add_argument("id", help="job id")
    status.add_argument("--events", action="store_true", help="also show its history")
    status.add_argument(
        "--json",
        action="store_true",
        help="print the job as JSON ({job, events} with --events)",
    )

    ls = client_command("ls", _ls, "list active (default) or finished jobs")
    which = ls.add_mutually_exclusive_group()
    which.add_argument(
        "--active",
        action="store_true",
        help="WAITING, SCHEDULED, QUEUED and RUNNING jobs, oldest first (default)",
    )
    which.add_argument(
        "--history",
        action="store_true",
        help="SUCCEEDED, DEAD and CANCELLED jobs, last finished first",
    )
    which.add_argument(
        "--watch",
        action="store_true",
        help="instead of a list, one line per change of a matching job (any state unless "
        "--state is given; a job leaving those states is shown once) until Ctrl-C",
    )
    ls.add_argument("--queue", help="only this queue")
    ls.add_argument("--type", help="only this job type")
    ls.add_argument(
        "--state",
        dest="states",
        type=_state_arg,
        action="extend",
        nargs="+",
        default=[],
        metavar="STATE",
        help="only these states, e.g. queued or dead (repeatable)",
    )
    ls.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_LIMIT,
        help="at most this many jobs, 0 for all (default %(default)s)",
    )
    ls.add_argument("--json", action="store_true", help="print a JSON list")

    cancel = client_command("cancel", _cancel, "cancel a job")
    cancel.add_argument("id", help="job id")
    cancel.add_argument("--reason", default="", help="recorded in the job's history")
    cancel.add_argument("--json", action="store_true", help="print the job as JSON")

    retry = client_command(
        "retry",
        _retry,
        "move a DEAD or CANCELLED job back to QUEUED, or many at once (--dead, --cancelled)",
    )
    retry.add_argument("id", nargs="?", help="job id (or the bulk options below instead)")
    bulk = retry.add_argument_group(
        "bulk retry", "retry every matching job, oldest finished first, 1000 per call"
    )
    bulk.add_argument("--dead", action="store_true", help="DEAD jobs (the dead-letter queue)")
    bulk.add_argument("--cancelled", action="store_true", help="CANCELLED jobs")
    bulk.add_argument("--queue", help="only this queue")
    bulk.add_argument("--type", help="only this job type")
    bulk.add_argument(
        "--limit",
        type=_positive_int,
        help="at most this many jobs in all (default: every matching job)",
    )
    retry.add_argument(
        "--json",
        action="store_true",
        help="print the job as JSON (bulk: {retried, more})",
    )
    retry.set_defaults(check=lambda args: _check_retry(retry, args))

    delete = client_command("delete", _delete, "delete a job and its history")
    delete.add_argument("id", help="job id")

    priority = client_command(
        "priority", _set_priority, "change the priority of a job that has not started"
    )
    priority.add_argument("id", help="job id")
    priority.add_argument("level", type=_priority, help="0..100 or low/medium/high")
    priority.add_argument("--json", action="store_true", help="print {job, changed} as JSON")

    queues = client_command("queues", _queues, "list queues, pause or resume them, set limits")
    actions = queues.add_subparsers(dest="queues_action", required=True, metavar="ACTION")
    queues_ls = actions.add_parser(
        "ls", help="every queue with its counts, limit and why its jobs wait"
    )
    queues_ls.add_argument("--json", action="store_true", help="print a JSON list")
    for name, text in (
        ("show", "show a queue's settings"),
        ("pause", "stop dispatching a queue's jobs (it still accepts them)"),
        ("resume", "dispatch a paused queue's jobs again"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("name", help="queue name")
        action.add_argument("--json", action="store_true", help="print the queue as JSON")
    limit = actions.add_parser(
        "set-concurrency",
        help="at most N of the queue's jobs run at once, across all executors (0: no limit)",
    )
    limit.add_argument("name", help="queue name")
    limit.add_argument("limit", type=_positive_int, help="the limit; 0 removes it")
    limit.add_argument("--json", action="store_true", help="print the queue as JSON")
    defaults = actions.add_parser(
        "set", help="the defaults of jobs submitted to the queue afterwards"
    )
    defaults.add_argument("name", help="queue name")
    defaults.add_argument("--max-attempts", type=int, help="default attempts before DEAD")
    defaults.add_argument(
        "--timeout", dest="timeout_default", type=_duration_arg, help="default execution timeout"
    )
    _add_retry_options(defaults, "defaults of the queue's jobs")
    defaults.add_argument("--json", action="store_true", help="print the queue as JSON")

    schedules = client_command(
        "schedules", _schedules, "cron schedules: create, list, show, pause, resume, trigger"
    )
    schedule_actions = schedules.add_subparsers(
        dest="schedules_action", required=True, metavar="ACTION"
    )
    create = schedule_actions.add_parser(
        "create",
        help="submit a job at each fire time of a cron expression",
        description="Submit a job at each fire time of a five-field cron expression, e.g. "
        "'30 2 * * *', evaluated in --tz. On daylight-saving days a local time that does not "
        "exist fires at the end of the gap, one that occurs twice fires once, at its first "
        "occurrence.",
    )
    create.add_argument("name", help="schedule name, unique in the tenant")
    create.add_argument("--cron", required=True, metavar="EXPR", help="e.g. '*/15 9-17 * * 1-5'")
    create.add_argument("--tz", default="", metavar="ZONE", help="IANA time zone (default UTC)")
    create.add_argument("--type", required=True, help="job type of the submitted jobs")
    create.add_argument("--queue", default="", help="queue (default: 'default')")
    create.add_argument("--payload", type=_json_payload, help="payload, a JSON document")
    create.add_argument(
        "--overlap",
        choices=["allow", "skip", "cancel-previous"],
        default="allow",
        help="while the previous run is active: run anyway (default), skip this fire, or "
        "cancel the previous run",
    )
    create.add_argument(
        "--catchup",
        choices=["none", "latest", "all"],
        default="none",
        help="fires missed while no scheduler led: skip them (default), run the latest, or "
        "run them all (within --catchup-window)",
    )
    create.add_argument(
        "--catchup-window",
        type=_duration_arg,
        metavar="DURATION",
        help="how far back latest/all look, e.g. 6h (default 1d)",
    )
    create.add_argument("--json", action="store_true", help="print the schedule as JSON")
    schedules_ls = schedule_actions.add_parser("ls", help="every schedule, by name")
    schedules_ls.add_argument("--json", action="store_true", help="print a JSON list")
    for name, text in (
        ("show", "show a schedule and its next 5 fire times"),
        ("pause", "stop firing (fires missed while paused are not caught up)"),
        ("resume", "fire again from the next fire time"),
        ("delete", "delete a schedule (the jobs it submitted stay)"),
        ("trigger", "submit the schedule's job now (the overlap policy applies)"),
    ):
        action = schedule_actions.add_parser(name, help=text, description=text)
        action.add_argument("name", help="schedule name or id")
        if name != "delete":
            action.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the return value is the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if hasattr(args, "check"):
            args.check(args)
    except SystemExit as exit_:
        # argparse exits on --help (0) and bad input (2); return the code so callers and tests
        # see it like any other outcome.
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    if hasattr(args, "scheduler_argv"):
        argv = [*args.scheduler_argv, *args.scheduler_args]
        return _run_executor(argv) if args.service == "executor" else _run_scheduler(argv)

    try:
        return asyncio.run(_run_client_command(args.handler, args))
    except JobschedError as err:
        return _report(err, args.address, sys.stderr)
    except Exception as err:  # the documented exit code 1 rather than a traceback
        print(f"jobsched: unexpected error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
