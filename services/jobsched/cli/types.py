"""`jobsched types`: the defaults a job type gives its jobs (max attempts, timeout, retry
policy), between the job's own values and its queue's: set, clear, show and list them."""

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
    retry_policy_of,
)
from jobsched.cli.exits import EXIT_BAD_INPUT, EXIT_OK
from jobsched.cli.output import print_json, seconds_text, to_dict
from jobsched.client import JobschedClient, make_retry_policy
from jobsched.v1 import job_type_service_pb2

# What an unset setting shows: the job inherits it from its queue, then the built-in default.
INHERIT = "inherit"

# `types clear TYPE SETTING...`: the command-line names of the update mask paths.
CLEARABLE = {
    "max-attempts": "max_attempts",
    "timeout": "timeout",
    "retry": "retry_policy",
    "retry-initial-backoff": "retry_policy.initial_backoff",
    "retry-multiplier": "retry_policy.backoff_multiplier",
    "retry-max-backoff": "retry_policy.max_backoff",
    "retry-jitter": "retry_policy.jitter",
}


def clearable(value: str) -> str:
    """A setting `types clear` knows (argparse's choices refuse an empty nargs="*" list)."""
    if value not in CLEARABLE:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {value!r} (choose from {', '.join(CLEARABLE)})"
        )
    return value


def _settings(job_type: job_type_service_pb2.JobType, unset: str) -> list[tuple[str, str]]:
    """(label, value) of each setting; `unset` for one the type does not set."""
    policy = job_type.retry_policy

    def duration_text(present: bool, value: timedelta) -> str:
        return seconds_text(value) if present else unset

    def number_text(present: bool, value: float) -> str:
        return f"{value:g}" if present else unset

    return [
        (
            "max attempts",
            str(job_type.max_attempts) if job_type.HasField("max_attempts") else unset,
        ),
        ("timeout", duration_text(job_type.HasField("timeout"), job_type.timeout.ToTimedelta())),
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


def _print_type(job_type: job_type_service_pb2.JobType) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("type", job_type.name)
    for label, text in _settings(job_type, INHERIT):
        grid.add_row(label, text)
    Console().print(grid)


def _changes(args: argparse.Namespace) -> tuple[job_type_service_pb2.JobType, list[str]]:
    """`types set`: the settings given, and their mask paths."""
    changes = job_type_service_pb2.JobType(name=args.type)
    paths = []
    if args.max_attempts is not None:
        changes.max_attempts = args.max_attempts
        paths.append("max_attempts")
    if args.type_timeout is not None:
        changes.timeout.FromTimedelta(args.type_timeout)
        paths.append("timeout")
    policy = retry_policy_of(args)
    if policy:
        changes.retry_policy.CopyFrom(make_retry_policy(**policy))
        paths += [f"retry_policy.{name}" for name in policy]
    return changes, paths


async def _types(client: JobschedClient, args: argparse.Namespace) -> int:
    action = args.types_action
    if action == "ls":
        job_types = [t async for t in client.list_job_types()]
        if args.json:
            print_json([to_dict(t) for t in job_types])
            return EXIT_OK
        table = Table()
        table.add_column("type")
        for column in ("attempts", "timeout", "initial", "multiplier", "max backoff", "jitter"):
            table.add_column(column, justify="right")
        for t in job_types:
            table.add_row(t.name, *(text for _, text in _settings(t, "")))
        Console().print(table)
        return EXIT_OK
    if action == "show":
        job_type = await client.get_job_type(args.type)
    elif action == "clear":
        names = args.settings or ["max-attempts", "timeout", "retry"]
        job_type = await client.update_job_type(
            job_type_service_pb2.JobType(name=args.type), [CLEARABLE[n] for n in names]
        )
    else:  # set
        changes, paths = _changes(args)
        if not paths:
            print("nothing to change: give at least one option (see --help)", file=sys.stderr)
            return EXIT_BAD_INPUT
        job_type = await client.update_job_type(changes, paths)
    if args.json:
        print_json(to_dict(job_type))
    else:
        _print_type(job_type)
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Add `jobsched types` and its actions."""
    types = add_client_command(
        commands,
        "types",
        _types,
        "the defaults of a job type's jobs: max attempts, timeout, retry policy",
    )
    types.epilog = (
        "At submit, each setting is the job's own value, else its type's, else its queue's "
        "(jobsched queues set), else the built-in default; `jobsched status` shows where each "
        "came from. Changes apply to jobs submitted afterwards.\n\n" + (types.epilog or "")
    )
    actions = types.add_subparsers(dest="types_action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="every job type with settings, by name")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    show = actions.add_parser("show", help="a job type's settings (unset ones: inherit)")
    show.add_argument("type", help="job type")
    show.add_argument("--json", action="store_true", help="print the type as JSON")
    defaults = actions.add_parser(
        "set", help="defaults of the type's jobs submitted afterwards (other settings stay)"
    )
    defaults.add_argument("type", help="job type (any name; it need not have jobs yet)")
    defaults.add_argument("--max-attempts", type=int, help="attempts before DEAD, 1..100")
    defaults.add_argument(
        "--timeout",
        dest="type_timeout",
        type=duration_arg,
        metavar="D",
        help="execution timeout of each attempt, e.g. 5m",
    )
    add_retry_options(defaults, "defaults of the type's jobs")
    defaults.add_argument("--json", action="store_true", help="print the type as JSON")
    clear = actions.add_parser(
        "clear", help="clear settings: the type's jobs inherit them from their queue again"
    )
    clear.add_argument("type", help="job type")
    clear.add_argument(
        "settings",
        nargs="*",
        type=clearable,
        metavar="SETTING",
        help=f"what to clear, any of {', '.join(CLEARABLE)} (default: everything)",
    )
    clear.add_argument("--json", action="store_true", help="print the type as JSON")
