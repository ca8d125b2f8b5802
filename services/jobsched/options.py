"""Argument types and options that the scheduler's and the executor's command lines share
(scheduler/flags.py, executor/flags.py, executor/command_options.py). A type raises
ArgumentTypeError, which argparse and the configuration loader (jobsched/config.py) report as
one line naming the option or the key."""

from __future__ import annotations

import argparse
import math

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def whole_number(value: str) -> int:
    """A whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def non_negative(value: str) -> float:
    """A number of at least 0 (not nan)."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of at least 0")
    return number


def seconds(value: str) -> float:
    """A finite number of seconds, 0 or more."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (number >= 0 and math.isfinite(number)):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0 or more)")
    return number


def add_log_level_option(parser: argparse.ArgumentParser) -> None:
    """--log-level, case-insensitive (env JOBSCHED_LOG_LEVEL, given in the program's ENV)."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="env JOBSCHED_LOG_LEVEL (default INFO)",
    )
