"""`jobsched queues`: list queues with their counts and waiting reasons, show, pause and resume
them, set their concurrency limit, their jobs' defaults and how long their finished jobs are
kept."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from jobsched.cli.arguments import (
    add_client_command,
    add_retry_options,
    duration_arg,
    positive_int,
    retry_policy_of,
)
from jobsched.cli.exits import EXIT_BAD_INPUT, EXIT_OK
from jobsched.cli.output import print_json, seconds_text, to_dict
from jobsched.client import JobschedClient, make_retry_policy
from jobsched.v1 import queue_service_pb2

# `--retention default`: back to the scheduler's default (the field cleared).
CLEAR_RETENTION = "default"


def retention_arg(value: str) -> timedelta | str:
    """A duration ("7d", "12h"), "0" or "forever" (keep forever), or "default"."""
    text = value.strip().lower()
    if text == CLEAR_RETENTION:
        return CLEAR_RETENTION
    if text == "forever":
        return timedelta(0)
    try:
        return duration_arg(value)
    except (argparse.ArgumentTypeError, ValueError, OverflowError):  # "nan", "inf"
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a retention like 7d, 12h, 0 or forever (keep forever) or default"
        ) from None


def retention_text(queue: queue_service_pb2.Queue, default: str) -> str:
    if not queue.HasField("retention"):
        return default
    value = queue.retention.ToTimedelta()
    return "forever" if value == timedelta(0) else seconds_text(value)


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
            seconds_text(queue.default_timeout.ToTimedelta())
            if queue.HasField("default_timeout")
            else "none",
        ),
        ("retention", retention_text(queue, "global default")),
    ]

    def duration_text(present: bool, value: timedelta) -> str:
        return seconds_text(value) if present else "global default"

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
            print_json([to_dict(q) for q in queues])
            return EXIT_OK
        table = Table()
        table.add_column("queue")
        for column in ("paused", "limit", "retention", "waiting", "queued", "running", "oldest"):
            table.add_column(column, justify="right")
        table.add_column("why waiting")
        for q in queues:
            counts = q.stats.jobs_by_state
            waiting = sum(counts.get(f"JOB_STATE_{s}", 0) for s in ("WAITING", "SCHEDULED"))
            table.add_row(
                q.name,
                "yes" if q.paused else "",
                str(q.max_concurrency) if q.HasField("max_concurrency") else "",
                retention_text(q, ""),
                str(waiting),
                str(counts.get("JOB_STATE_QUEUED", 0)),
                str(q.stats.running),
                seconds_text(q.stats.oldest_waiting_age.ToTimedelta())
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
        policy = retry_policy_of(args)
        if policy:
            changes.default_retry_policy.CopyFrom(make_retry_policy(**policy))
            paths += [f"default_retry_policy.{name}" for name in policy]
        if args.retention is not None:
            if isinstance(args.retention, timedelta):
                changes.retention.FromTimedelta(args.retention)
            paths.append("retention")  # unset with the path: back to the default
        if not paths:
            print("nothing to change: give at least one option (see --help)", file=sys.stderr)
            return EXIT_BAD_INPUT
        queue = await client.update_queue(changes, paths)
    if args.json:
        print_json(to_dict(queue))
    else:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for label, text in _queue_rows(queue):
            grid.add_row(label, text)
        Console().print(grid)
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Add `jobsched queues` and its actions."""
    queues = add_client_command(
        commands, "queues", _queues, "list queues, pause or resume them, set limits"
    )
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
    limit.add_argument("limit", type=positive_int, help="the limit; 0 removes it")
    limit.add_argument("--json", action="store_true", help="print the queue as JSON")
    defaults = actions.add_parser(
        "set",
        help="the defaults of jobs submitted to the queue afterwards, and its retention",
    )
    defaults.add_argument("name", help="queue name")
    defaults.add_argument("--max-attempts", type=int, help="default attempts before DEAD")
    defaults.add_argument(
        "--timeout", dest="timeout_default", type=duration_arg, help="default execution timeout"
    )
    add_retry_options(defaults, "defaults of the queue's jobs")
    defaults.add_argument(
        "--retention",
        type=retention_arg,
        metavar="DURATION",
        help="keep the queue's finished jobs this long, e.g. 7d (0 or forever: keep them; "
        "default: the scheduler's default, 30 days unless configured otherwise)",
    )
    defaults.add_argument("--json", action="store_true", help="print the queue as JSON")
