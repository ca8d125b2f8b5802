"""The server commands: `jobsched scheduler`, `dev`, `migrate`, `executor` and `dashboard` hand
their arguments to the service's own command line.

Neither service is imported from here: their commands come from the `jobsched.commands` entry
point group (pyproject.toml), so that the client package imports neither the scheduler nor the
executor (which imports the client), and an install without the `server` extra answers a
scheduler command with one line saying what to install instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from jobsched.cli.exits import EXIT_ERROR

SERVER_EXTRA_HINT = "pip install 'jobsched[server]'"
# The jobsched.commands entry points that need an extra (the executor's needs none), by extra.
SERVER_COMMANDS = frozenset({"scheduler", "keys-bootstrap"})
EXTRA_COMMANDS = {"dashboard": "dashboard"}


def run_executor(argv: list[str]) -> int:
    """`jobsched executor ARGS`: the executor's command, also through the entry point group
    (the executor sits above this package: it imports the client, not the other way round)."""
    command = server_command("executor", "executor")
    if isinstance(command, str):
        print(f"jobsched: {command}", file=sys.stderr)
        return EXIT_ERROR
    return exit_code(command, argv)


def server_command(name: str, typed: str) -> Callable[[list[str]], int] | str:
    """The entry point's function, or why it cannot be loaded (one line naming the command the
    user `typed`)."""
    extra_name = "server" if name in SERVER_COMMANDS else EXTRA_COMMANDS.get(name)
    hint = f"pip install 'jobsched[{extra_name}]'" if extra_name else "reinstall jobsched"
    points = metadata.entry_points(group="jobsched.commands", name=name)
    if not points:
        return f"jobsched {typed} is not installed: {hint}"
    [point] = list(points)
    try:
        command: Callable[[list[str]], int] = point.load()
    except ModuleNotFoundError as exc:
        extra = f"the {extra_name} extra" if extra_name else "a module that is missing"
        return f"jobsched {typed} needs {extra} (no module {exc.name!r}): {hint}"
    return command


def run_dashboard(argv: list[str]) -> int:
    """`jobsched dashboard ARGS`: the web UI (`python -m dashboard`), a client of the schedulers."""
    command = server_command("dashboard", "dashboard")
    if isinstance(command, str):
        print(f"jobsched: {command}", file=sys.stderr)
        return EXIT_ERROR
    return exit_code(command, argv)


def run_scheduler(argv: list[str], typed: str = "scheduler") -> int:
    """`jobsched scheduler`, `dev` or `migrate` (`typed`), with the scheduler's arguments."""
    command = server_command("scheduler", typed)
    if isinstance(command, str):
        print(f"jobsched: {command}", file=sys.stderr)
        return EXIT_ERROR
    return exit_code(command, argv)


def exit_code(command: Callable[[list[str]], int], argv: list[str]) -> int:
    try:
        return command(argv)
    except SystemExit as exit_:
        # The services' argparse exits on --help and bad arguments; keep main()'s contract.
        if exit_.code is None:
            return 0
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR


def add_commands(commands: Any) -> None:
    """Add the server commands to the `jobsched` subcommands."""
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
        (
            "dashboard",
            "dashboard",
            [],
            "run the web dashboard (arguments go to `python -m dashboard`)",
        ),
    ):
        server = commands.add_parser(
            name, help=text, description=text, add_help=False, prefix_chars="+"
        )
        server.add_argument("scheduler_args", nargs="*", metavar="ARGS")
        server.set_defaults(scheduler_argv=fixed, service=service)
