"""`jobsched audit ls`: the audit log (admin role), newest first, filtered by principal,
action, target and time."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from jobsched.cli.arguments import add_client_command, duration_arg, timestamp_arg
from jobsched.cli.exits import EXIT_OK
from jobsched.cli.output import print_json, time_text, to_dict
from jobsched.client import JobschedClient

DEFAULT_LIMIT = 100


def when_arg(value: str) -> datetime:
    """An ISO 8601 time, or a duration meaning that long ago ("1h", "7d")."""
    try:
        return datetime.now(UTC) - duration_arg(value)
    except argparse.ArgumentTypeError:
        pass
    try:
        return timestamp_arg(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither an ISO 8601 time nor a duration such as 1h or 7d"
        ) from None


def limit_arg(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of at least 0")
    return limit


async def _audit(client: JobschedClient, args: argparse.Namespace) -> int:
    events = []
    async for event in client.list_audit_events(
        principal=args.principal,
        action=args.action,
        target=args.target,
        since=args.since,
        until=args.until,
        page_size=min(args.limit, 1000) if args.limit else 0,
    ):
        events.append(event)
        if args.limit and len(events) >= args.limit:
            break
    if args.json:
        print_json([to_dict(e) for e in events])
        return EXIT_OK
    table = Table()
    for column in ("time", "principal", "tenant", "action", "target", "outcome", "peer"):
        table.add_column(column)
    for e in events:
        who = f"{e.principal} ({e.principal_name})" if e.principal_name else e.principal
        outcome = e.code if not e.reason else f"{e.code} {e.reason}"
        table.add_row(time_text(e, "time"), who, e.tenant, e.action, e.target, outcome, e.peer)
    Console().print(table)
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Add `jobsched audit` and its actions."""
    audit = add_client_command(
        commands,
        "audit",
        _audit,
        "the audit log: who changed what, and every refused credential or permission",
    )
    actions = audit.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="audit events, newest first (needs the admin role)")
    ls.add_argument(
        "--principal",
        default="",
        metavar="P",
        help='only this principal: an API key id (keys ls), "api_key:ID" or "anonymous"',
    )
    ls.add_argument("--action", default="", metavar="RPC", help="only this action, e.g. CancelJob")
    ls.add_argument(
        "--target", default="", metavar="T", help="only this target, e.g. a job id or a queue"
    )
    ls.add_argument(
        "--since",
        type=when_arg,
        metavar="WHEN",
        help="only events at or after WHEN: an ISO 8601 time or a duration ago (1h, 7d)",
    )
    ls.add_argument("--until", type=when_arg, metavar="WHEN", help="only events before WHEN")
    ls.add_argument(
        "--limit",
        type=limit_arg,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N events (default {DEFAULT_LIMIT}; 0: all)",
    )
    ls.add_argument("--json", action="store_true", help="print a JSON list")
