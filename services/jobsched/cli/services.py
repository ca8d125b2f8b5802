"""The server commands: `jobsched scheduler`, `dev`, `migrate` and `executor` hand their arguments
to the service's own command line."""

from __future__ import annotations

from typing import Any

from jobsched.cli.exits import EXIT_ERROR


def run_executor(argv: list[str]) -> int:
    from executor.__main__ import main as executor_main

    return executor_main(argv)


def run_scheduler(argv: list[str]) -> int:
    # Imported here so that client commands neither load nor need the server's dependencies.
    from scheduler.__main__ import main as scheduler_main

    try:
        return scheduler_main(argv)
    except SystemExit as exit_:
        # The scheduler's argparse exits on --help and bad arguments; keep main()'s contract.
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
    ):
        server = commands.add_parser(
            name, help=text, description=text, add_help=False, prefix_chars="+"
        )
        server.add_argument("scheduler_args", nargs="*", metavar="ARGS")
        server.set_defaults(scheduler_argv=fixed, service=service)
