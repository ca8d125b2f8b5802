"""The executor's options for command jobs (`add_command_options`) and the CommandSettings they
make (`command_settings`). Their environment variables are in executor/flags.py's ENV; the
configuration file's keys are the dests (allow_command, work_dir, ...)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from executor.command import (
    DEFAULT_ENV_ALLOW,
    DEFAULT_KILL_GRACE,
    DEFAULT_MAX_OUTPUT,
    CommandSettings,
)
from executor.processes import Limits
from jobsched.options import seconds, whole_number

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def byte_size(value: str) -> int:
    """A number of bytes, at least 1, with an optional binary suffix: 4096, 512K, 2G."""
    match = _SIZE.match(value)
    number = int(match.group(1)) * _UNITS[match.group(2).lower()] if match else 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size in bytes such as 4096 or 512M")
    return number


def env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an environment variable name")
    return value


def program_glob(value: str) -> str:
    if not value.startswith("/"):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a glob of absolute paths (it is matched against the resolved "
            "argv[0], such as /usr/bin/*)"
        )
    return value


def add_command_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "command jobs",
        "The built-in job type `command` runs a program (README, Command jobs). Secure by "
        "default: without --allow-command every command job fails without retry.",
    )
    group.add_argument(
        "--allow-command",
        action="append",
        type=program_glob,
        dest="allow_command",
        default=[],
        metavar="GLOB",
        help="run command jobs whose resolved argv[0] (an absolute path) matches GLOB "
        "(fnmatch; * also matches /), repeatable (env JOBSCHED_ALLOW_COMMAND, comma-separated). "
        "A shell runs only if a glob allows it, e.g. /bin/sh",
    )
    group.add_argument(
        "--work-dir",
        type=Path,
        dest="work_dir",
        metavar="DIR",
        help="parent of each attempt's working directory (env JOBSCHED_WORK_DIR; default the "
        "system's temporary directory)",
    )
    group.add_argument(
        "--keep-work-dirs",
        action="store_true",
        dest="keep_work_dirs",
        help="keep each attempt's working directory (env JOBSCHED_KEEP_WORK_DIRS)",
    )
    group.add_argument(
        "--env-allow",
        action="append",
        type=env_name,
        dest="env_allow",
        # None, not the list: argparse would append the flags to a list default.
        metavar="NAME",
        help="an environment variable of the executor that commands see, repeatable; the flags "
        f"replace the default {','.join(DEFAULT_ENV_ALLOW)} (env JOBSCHED_ENV_ALLOW, "
        "comma-separated)",
    )
    group.add_argument(
        "--max-output",
        type=byte_size,
        dest="max_output",
        default=DEFAULT_MAX_OUTPUT,
        metavar="BYTES",
        help="bytes of stdout and stderr logged per attempt; then one line says the output was "
        f"cut (env JOBSCHED_MAX_OUTPUT; default {DEFAULT_MAX_OUTPUT // (1 << 20)}M)",
    )
    group.add_argument(
        "--kill-grace",
        type=seconds,
        dest="kill_grace",
        default=DEFAULT_KILL_GRACE,
        metavar="SECONDS",
        help="seconds between SIGTERM and SIGKILL to a command's process group on cancel or "
        f"timeout (env JOBSCHED_KILL_GRACE; default {DEFAULT_KILL_GRACE:g})",
    )
    group.add_argument(
        "--limit-cpu",
        type=whole_number,
        dest="limit_cpu",
        metavar="SECONDS",
        help="CPU seconds per command (RLIMIT_CPU; env JOBSCHED_LIMIT_CPU; default none)",
    )
    group.add_argument(
        "--limit-memory",
        type=byte_size,
        dest="limit_memory",
        metavar="BYTES",
        help="address space per command process (RLIMIT_AS, e.g. 2G; env JOBSCHED_LIMIT_MEMORY; "
        "default none)",
    )
    group.add_argument(
        "--limit-files",
        type=whole_number,
        dest="limit_files",
        metavar="N",
        help="open files per command process (RLIMIT_NOFILE; env JOBSCHED_LIMIT_FILES; "
        "default none). A job's payload limits may only lower these",
    )


COMMAND_ENV = {
    "allow_command": "JOBSCHED_ALLOW_COMMAND",
    "work_dir": "JOBSCHED_WORK_DIR",
    "keep_work_dirs": "JOBSCHED_KEEP_WORK_DIRS",
    "env_allow": "JOBSCHED_ENV_ALLOW",
    "max_output": "JOBSCHED_MAX_OUTPUT",
    "kill_grace": "JOBSCHED_KILL_GRACE",
    "limit_cpu": "JOBSCHED_LIMIT_CPU",
    "limit_memory": "JOBSCHED_LIMIT_MEMORY",
    "limit_files": "JOBSCHED_LIMIT_FILES",
}


def command_settings(args: argparse.Namespace) -> CommandSettings:
    return CommandSettings(
        allow=tuple(args.allow_command),
        work_dir=args.work_dir,
        keep_work_dirs=args.keep_work_dirs,
        env_allow=DEFAULT_ENV_ALLOW
        if args.env_allow is None
        else tuple(dict.fromkeys(args.env_allow)),
        max_output=args.max_output,
        kill_grace=args.kill_grace,
        limits=Limits(cpu=args.limit_cpu, memory=args.limit_memory, files=args.limit_files),
    )
