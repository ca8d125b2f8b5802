"""Argument types and option groups the command groups share. A type that raises
ArgumentTypeError makes argparse exit 2 with the usage."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from jobsched.cli.exits import EXIT_CODES_TEXT
from jobsched.client import JobschedClient, parse_state
from jobsched.v1 import job_pb2

DEFAULT_TIMEOUT = 30.0

DEFAULT_LIMIT = 100

MAX_PAGE_SIZE = 1000

PRIORITY_NAMES = {"low": 25, "medium": 50, "high": 75}

Handler = Callable[[JobschedClient, argparse.Namespace], Awaitable[int]]


def priority(value: str) -> int:
    named = PRIORITY_NAMES.get(value.lower())
    if named is not None:
        return named
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an integer or one of {', '.join(PRIORITY_NAMES)}"
        ) from None


def json_payload(value: str) -> str:
    try:
        json.loads(value)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    return value


def label(value: str) -> tuple[str, str]:
    key, sep, label_value = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, label_value


def timestamp_arg(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time") from None
    # A time typed without an offset means the user's local time, not UTC.
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


def state_arg(value: str) -> job_pb2.JobState.ValueType:
    try:
        return parse_state(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a non-negative integer")
    return number


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_arg(value: str) -> timedelta:
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
        if not 0 <= seconds < math.inf:  # also nan
            raise ValueError
        return timedelta(seconds=seconds)
    except (ValueError, OverflowError):  # timedelta overflows past 999,999,999 days
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration like 30s, 5m, 2h, 1d or a number of seconds"
        ) from None


def retry_policy_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --retry-* options given, as make_retry_policy arguments (None when none is)."""
    given = {
        "initial_backoff": args.retry_initial_backoff,
        "backoff_multiplier": args.retry_multiplier,
        "max_backoff": args.retry_max_backoff,
        "jitter": args.retry_jitter,
    }
    given = {k: v for k, v in given.items() if v is not None}
    return given or None


def add_retry_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group(f"retry policy ({what})")
    group.add_argument(
        "--retry-initial-backoff", type=duration_arg, metavar="D", help="wait before retry 1"
    )
    group.add_argument("--retry-multiplier", type=float, metavar="X", help="growth per retry")
    group.add_argument("--retry-max-backoff", type=duration_arg, metavar="D", help="longest wait")
    group.add_argument("--retry-jitter", type=float, metavar="F", help="spread, 0..1")


def add_client_command(
    commands: Any, name: str, handler: Handler, text: str
) -> argparse.ArgumentParser:
    """A subcommand that talks to a scheduler through a JobschedClient (see jobsched.cli.main)."""
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=text,
        description=text,
        epilog=EXIT_CODES_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.set_defaults(handler=handler)
    return sub
