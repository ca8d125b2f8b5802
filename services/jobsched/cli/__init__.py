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
    queues ACTION        ls, show NAME, pause NAME, resume NAME, set-concurrency NAME N, set NAME
    health               exit 0 when the scheduler answers SERVING (container health checks)

--address defaults to $JOBSCHED_ADDRESS, else 127.0.0.1:50051; --tenant to $JOBSCHED_TENANT.
--json prints protobuf JSON with the proto field names (bytes fields are base64).

Exit codes: see jobsched.cli.exits (`jobsched --help` prints them).

One module per command group: jobs (submit ... priority), queues, schedules, health, services
(the server commands); arguments, output and exits are what they share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from jobsched.cli import health, jobs, queues, schedules, services
from jobsched.cli.arguments import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, Handler
from jobsched.cli.exits import EXIT_BAD_INPUT, EXIT_CODES_TEXT, EXIT_ERROR, report
from jobsched.client import JobschedClient
from jobsched.errors import JobschedError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobsched",
        description="Run the jobsched scheduler, submit jobs, inspect and control them.",
        epilog=EXIT_CODES_TEXT,
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
    services.add_commands(commands)
    jobs.add_commands(commands)
    queues.add_commands(commands)
    schedules.add_commands(commands)
    health.add_commands(commands)
    return parser


async def _run_client_command(handler: Handler, args: argparse.Namespace) -> int:
    async with JobschedClient(args.address, tenant=args.tenant, timeout=args.timeout) as client:
        return await handler(client, args)


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
        return (
            services.run_executor(argv)
            if args.service == "executor"
            else services.run_scheduler(argv, args.command)
        )

    try:
        return asyncio.run(_run_client_command(args.handler, args))
    except JobschedError as err:
        return report(err, args.address, sys.stderr)
    except Exception as err:  # the documented exit code 1 rather than a traceback
        print(f"jobsched: unexpected error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_ERROR
