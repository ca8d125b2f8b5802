"""The `jobsched` command: run the scheduler, submit jobs, inspect and control them.

    jobsched [--address HOST:PORT] [--tenant T] [--timeout S] COMMAND ...

    scheduler [ARGS...]  run a scheduler replica; ARGS go to `python -m scheduler`
    dev [ARGS...]        a scheduler and an executor for local development (`make run`)
    migrate [ARGS...]    apply the database migrations and exit
    executor [ARGS...]   run an executor (`python -m executor`; --scheduler ADDR, --capacity N)
    dashboard [ARGS...]  the web UI (`python -m dashboard`; --listen, --scheduler ADDR[,ADDR])
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
    types ACTION         job-type defaults: ls, show TYPE, set TYPE --timeout 5m ..., clear TYPE
    health               exit 0 when the scheduler answers SERVING (container health checks)
    cluster              the replicas, the leader and the connected executors
    keys ACTION          API keys: create --name N --role R --tenant T [--expires 30d], ls,
                         revoke ID, bootstrap (the first admin key, via the database)
    audit ls             the audit log (admin): --principal, --action, --target, --since,
                         --until, --limit N, --json
    config show          the effective configuration, each key with its source
    completion SHELL     a completion script for bash, zsh or tcsh

--address defaults to $JOBSCHED_ADDRESS, else 127.0.0.1:50051; --tenant to $JOBSCHED_TENANT;
--timeout to $JOBSCHED_TIMEOUT; --token (an API key) to $JOBSCHED_TOKEN; each also to the [client] table of the --config file (or
$JOBSCHED_CONFIG): flag > environment > file > default.
--json prints protobuf JSON with the proto field names (bytes fields are base64).

Exit codes: see jobsched.cli.exits (`jobsched --help` prints them).

One module per command group: jobs (submit ... priority; watching for the live view), queues,
types, schedules, health, cluster, configuration (config show), services (the server commands);
arguments, output and exits are what they share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from opentelemetry import context as otel_context
from opentelemetry import trace

from jobsched.cli import (
    artifacts,
    audit,
    cluster,
    completion,
    configuration,
    health,
    jobs,
    keys,
    queues,
    schedules,
    services,
    types,
)
from jobsched.cli.arguments import DEFAULT_TIMEOUT, Handler
from jobsched.cli.exits import EXIT_BAD_INPUT, EXIT_CODES_TEXT, EXIT_ERROR, report
from jobsched.client import DEFAULT_ADDRESS, JobschedClient
from jobsched.config import Program, Resolved, add_config_option
from jobsched.errors import JobschedError
from jobsched.tls import TLS_ENV, TLSConfigError, add_tls_options, tls_from_args
from jobsched.tokens import TOKEN_ENV, add_token_option
from jobsched.tracing import TRACEPARENT_ENV, Tracing, TracingSettings, context_of

__all__ = ["CLIENT", "build_parser", "main"]

# The client options' environment variables (the [client] table of a configuration file).
CLIENT_ENV = {
    "address": "JOBSCHED_ADDRESS",
    "tenant": "JOBSCHED_TENANT",
    "timeout": "JOBSCHED_TIMEOUT",
    **TLS_ENV,
    **TOKEN_ENV,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobsched",
        description="Run the jobsched scheduler, submit jobs, inspect and control them.",
        epilog=EXIT_CODES_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help="scheduler address, HOST:PORT, or several separated by commas to fail over between "
        "replicas (env JOBSCHED_ADDRESS; default %(default)s)",
    )
    parser.add_argument(
        "--tenant",
        help="tenant of every call (env JOBSCHED_TENANT; the server's default is 'default')",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="deadline of each call in seconds (env JOBSCHED_TIMEOUT; default %(default)s)",
    )
    add_tls_options(parser)
    add_token_option(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    services.add_commands(commands)
    jobs.add_commands(commands)
    queues.add_commands(commands)
    schedules.add_commands(commands)
    types.add_commands(commands)
    health.add_commands(commands)
    cluster.add_commands(commands)
    keys.add_commands(commands)
    audit.add_commands(commands)
    configuration.add_commands(commands)
    completion.add_commands(commands, build_parser)
    artifacts.add_commands(commands)
    return parser


CLIENT = Program("client", build_parser, CLIENT_ENV)


async def _run_client_command(
    handler: Handler, args: argparse.Namespace, tracing: Tracing | None = None
) -> int:
    # Tracing from the OTEL_* variables (jobsched/tracing.py): a span for the command, its
    # calls' client spans inside. TRACEPARENT (a command job's environment) makes it part of
    # that trace, and is sent on even with tracing off.
    token = otel_context.attach(context_of(os.environ.get(TRACEPARENT_ENV, "").strip() or None))
    try:
        async with JobschedClient(
            args.address,
            tenant=args.tenant,
            timeout=args.timeout,
            tls=tls_from_args(args),
            token=args.token,
            tracer_provider=tracing.provider if tracing is not None else None,
        ) as client:
            if tracing is None:
                return await handler(client, args)
            name = "jobsched " + getattr(handler, "__name__", "command").removeprefix("_")
            with tracing.tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT):
                return await handler(client, args)
    finally:
        otel_context.detach(token)
        if tracing is not None:
            tracing.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the return value is the process exit code."""
    try:
        resolved = CLIENT.resolve(argv)
        args = resolved.args
        if hasattr(args, "check"):
            args.check(args)
    except SystemExit as exit_:
        # argparse exits on --help (0) and bad input (2); return the code so callers and tests
        # see it like any other outcome.
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    return _dispatch(args, resolved)


def _dispatch(args: argparse.Namespace, resolved: Resolved) -> int:
    if hasattr(args, "scheduler_argv"):
        argv = [*args.scheduler_argv, *args.scheduler_args]
        if args.config is not None:  # `jobsched --config FILE scheduler`: the file is for both
            argv = ["--config", args.config, *argv]
        if args.service == "executor":
            return services.run_executor(argv)
        if args.service == "dashboard":
            return services.run_dashboard(argv)
        return services.run_scheduler(argv, args.command)
    if hasattr(args, "local"):  # a command that needs no scheduler (config show)
        code: int = args.local(args, resolved)
        return code

    try:
        tracing = TracingSettings.from_env("jobsched-cli").build()
    except (ValueError, RuntimeError) as err:  # a bad OTEL_* value, the SDK not installed
        print(f"jobsched: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_run_client_command(args.handler, args, tracing))
    except TLSConfigError as err:
        print(f"jobsched: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except JobschedError as err:
        return report(err, args.address, sys.stderr)
    except Exception as err:  # the documented exit code 1 rather than a traceback
        print(f"jobsched: unexpected error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_ERROR
